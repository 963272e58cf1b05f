//! Whole messages: fixed bodies per type, the zero-copy [`Message`], and
//! [`parse`].

use crate::header::{HEADER_LEN, Header};
use crate::tlv::Tlvs;
use crate::types::{ClockIdentity, ClockQuality, MessageType, PortIdentity, TimeSource, Timestamp};
use crate::write::WriteError;

/// Sync length (header + originTimestamp).
pub const SYNC_LEN: usize = 44;
/// Delay_Req length (header + originTimestamp).
pub const DELAY_REQ_LEN: usize = 44;
/// Follow_Up length (header + preciseOriginTimestamp).
pub const FOLLOW_UP_LEN: usize = 44;
/// Delay_Resp length (header + receiveTimestamp + requestingPortIdentity).
pub const DELAY_RESP_LEN: usize = 54;
/// Announce length without TLVs.
pub const ANNOUNCE_LEN: usize = 64;
/// Signaling length without TLVs (header + targetPortIdentity).
pub const SIGNALING_MIN_LEN: usize = 44;
/// Management length without TLVs.
pub const MANAGEMENT_MIN_LEN: usize = 48;
/// Pdelay_Req / Pdelay_Resp / Pdelay_Resp_Follow_Up length without TLVs.
pub const PDELAY_LEN: usize = 54;

/// Body offsets used by [`crate::patch`].
pub(crate) mod offset {
    /// The first body field: origin/precise/receive timestamp.
    pub const BODY_TIMESTAMP: usize = 34;
    /// Delay_Resp / Pdelay_Resp(_Follow_Up) requestingPortIdentity.
    pub const REQUESTING_PORT_IDENTITY: usize = 44;
    /// Announce currentUtcOffset.
    pub const CURRENT_UTC_OFFSET: usize = 44;
    /// Announce grandmasterClockQuality.
    pub const GRANDMASTER_CLOCK_QUALITY: usize = 48;
}

/// Why a datagram is not a well-formed PTPv2 message. Parsing never panics;
/// every malformed input maps to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer (or `messageLength`) is shorter than the fixed part needs.
    #[error("message too short: need {need} octets, got {got}")]
    TooShort {
        /// Octets required.
        need: usize,
        /// Octets available.
        got: usize,
    },
    /// `versionPTP` is not 2.
    #[error("unsupported versionPTP {0}")]
    BadVersion(u8),
    /// `messageLength` is larger than the received datagram.
    #[error("messageLength {field} exceeds the {buf}-octet datagram")]
    BadLength {
        /// The `messageLength` field.
        field: u16,
        /// The buffer length.
        buf: usize,
    },
    /// Reserved message type nibble (header, or a unicast TLV's messageType).
    #[error("unknown message type {0:#x}")]
    UnknownMessageType(u8),
    /// A TLV header or value runs past `messageLength`; `offset` is where that
    /// TLV starts (from the start of the message).
    #[error("TLV at offset {offset} overruns the message")]
    TlvOverrun {
        /// Offset of the offending TLV.
        offset: usize,
    },
    /// More than [`crate::MAX_TLVS`] TLVs.
    #[error("more than {} TLVs", crate::tlv::MAX_TLVS)]
    TooManyTlvs,
    /// A body timestamp has `nanoseconds >= 1e9`.
    #[error("timestamp nanoseconds out of range")]
    BadTimestamp,
    /// A known TLV's value is shorter than its fixed layout.
    #[error("TLV {tlv_type:#06x} value too short: need {need} octets, got {got}")]
    TlvTooShort {
        /// tlvType.
        tlv_type: u16,
        /// Octets required.
        need: usize,
        /// `lengthField`.
        got: usize,
    },
}

/// Sync body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SyncBody {
    /// originTimestamp (zero for two-step; T4 of the request in SPTP).
    pub origin_timestamp: Timestamp,
}

/// Delay_Req body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DelayReqBody {
    /// originTimestamp.
    pub origin_timestamp: Timestamp,
}

/// Follow_Up body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FollowUpBody {
    /// preciseOriginTimestamp (TX time of the Sync).
    pub precise_origin_timestamp: Timestamp,
}

/// Delay_Resp body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DelayRespBody {
    /// receiveTimestamp (RX time of the Delay_Req, t4).
    pub receive_timestamp: Timestamp,
    /// requestingPortIdentity (the Delay_Req's sourcePortIdentity).
    pub requesting_port_identity: PortIdentity,
}

/// Announce body (30 octets). The reserved octet after currentUtcOffset is
/// written as zero and ignored on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AnnounceBody {
    /// originTimestamp.
    pub origin_timestamp: Timestamp,
    /// currentUtcOffset (TAI - UTC, seconds).
    pub current_utc_offset: i16,
    /// grandmasterPriority1.
    pub grandmaster_priority1: u8,
    /// grandmasterClockQuality.
    pub grandmaster_clock_quality: ClockQuality,
    /// grandmasterPriority2.
    pub grandmaster_priority2: u8,
    /// grandmasterIdentity.
    pub grandmaster_identity: ClockIdentity,
    /// stepsRemoved.
    pub steps_removed: u16,
    /// timeSource.
    pub time_source: TimeSource,
}

/// Signaling body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SignalingBody {
    /// targetPortIdentity ([`PortIdentity::ALL_ONES`] = any port).
    pub target_port_identity: PortIdentity,
}

/// `actionField` values of management messages (§15.4.1.6, Table 57).
pub mod management_action {
    /// GET.
    pub const GET: u8 = 0;
    /// SET.
    pub const SET: u8 = 1;
    /// RESPONSE.
    pub const RESPONSE: u8 = 2;
    /// COMMAND.
    pub const COMMAND: u8 = 3;
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u8 = 4;
}

/// Management body (14 octets). Reserved bits are written as zero and
/// ignored on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ManagementBody {
    /// targetPortIdentity.
    pub target_port_identity: PortIdentity,
    /// startingBoundaryHops.
    pub starting_boundary_hops: u8,
    /// boundaryHops.
    pub boundary_hops: u8,
    /// actionField (low 4 bits), see [`management_action`].
    pub action: u8,
}

/// Undecoded 20-octet body of the peer-delay messages, kept verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpaqueBody(pub [u8; 20]);

/// The fixed body that follows the header, by message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// Sync.
    Sync(SyncBody),
    /// Delay_Req.
    DelayReq(DelayReqBody),
    /// Pdelay_Req (opaque).
    PDelayReq(OpaqueBody),
    /// Pdelay_Resp (opaque).
    PDelayResp(OpaqueBody),
    /// Follow_Up.
    FollowUp(FollowUpBody),
    /// Delay_Resp.
    DelayResp(DelayRespBody),
    /// Pdelay_Resp_Follow_Up (opaque).
    PDelayRespFollowUp(OpaqueBody),
    /// Announce.
    Announce(AnnounceBody),
    /// Signaling.
    Signaling(SignalingBody),
    /// Management.
    Management(ManagementBody),
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl Body {
    /// The message type this body belongs to.
    #[must_use]
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::Sync(_) => MessageType::Sync,
            Self::DelayReq(_) => MessageType::DelayReq,
            Self::PDelayReq(_) => MessageType::PDelayReq,
            Self::PDelayResp(_) => MessageType::PDelayResp,
            Self::FollowUp(_) => MessageType::FollowUp,
            Self::DelayResp(_) => MessageType::DelayResp,
            Self::PDelayRespFollowUp(_) => MessageType::PDelayRespFollowUp,
            Self::Announce(_) => MessageType::Announce,
            Self::Signaling(_) => MessageType::Signaling,
            Self::Management(_) => MessageType::Management,
        }
    }

    /// Encoded length of the body.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.message_type().body_len()
    }

    /// Always false: every body has fixed fields (present for API symmetry).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Decodes a body of type `t`; `b` must be exactly `t.body_len()` octets.
    fn parse(t: MessageType, b: &[u8]) -> Result<Self, ParseError> {
        debug_assert_eq!(b.len(), t.body_len());
        Ok(match t {
            MessageType::Sync => Self::Sync(SyncBody {
                origin_timestamp: Timestamp::read(&arr(b, 0))?,
            }),
            MessageType::DelayReq => Self::DelayReq(DelayReqBody {
                origin_timestamp: Timestamp::read(&arr(b, 0))?,
            }),
            MessageType::FollowUp => Self::FollowUp(FollowUpBody {
                precise_origin_timestamp: Timestamp::read(&arr(b, 0))?,
            }),
            MessageType::DelayResp => Self::DelayResp(DelayRespBody {
                receive_timestamp: Timestamp::read(&arr(b, 0))?,
                requesting_port_identity: PortIdentity::read(&arr(b, 10)),
            }),
            MessageType::PDelayReq => Self::PDelayReq(OpaqueBody(arr(b, 0))),
            MessageType::PDelayResp => Self::PDelayResp(OpaqueBody(arr(b, 0))),
            MessageType::PDelayRespFollowUp => Self::PDelayRespFollowUp(OpaqueBody(arr(b, 0))),
            MessageType::Announce => Self::Announce(AnnounceBody {
                origin_timestamp: Timestamp::read(&arr(b, 0))?,
                current_utc_offset: i16::from_be_bytes(arr(b, 10)),
                // b[12] reserved
                grandmaster_priority1: b[13],
                grandmaster_clock_quality: ClockQuality::read(&arr(b, 14)),
                grandmaster_priority2: b[18],
                grandmaster_identity: ClockIdentity(arr(b, 19)),
                steps_removed: u16::from_be_bytes(arr(b, 27)),
                time_source: TimeSource(b[29]),
            }),
            MessageType::Signaling => Self::Signaling(SignalingBody {
                target_port_identity: PortIdentity::read(&arr(b, 0)),
            }),
            MessageType::Management => Self::Management(ManagementBody {
                target_port_identity: PortIdentity::read(&arr(b, 0)),
                starting_boundary_hops: b[10],
                boundary_hops: b[11],
                action: b[12] & 0x0F,
                // b[13] reserved
            }),
        })
    }

    /// Checks every field is encodable.
    fn validate(&self) -> Result<(), WriteError> {
        let ts = match self {
            Self::Sync(s) => Some(s.origin_timestamp),
            Self::DelayReq(d) => Some(d.origin_timestamp),
            Self::FollowUp(f) => Some(f.precise_origin_timestamp),
            Self::DelayResp(d) => Some(d.receive_timestamp),
            Self::Announce(a) => Some(a.origin_timestamp),
            Self::Management(m) if m.action > 0x0F => {
                return Err(WriteError::InvalidField("action"));
            }
            _ => None,
        };
        match ts {
            Some(t) if !t.is_valid() => Err(WriteError::InvalidField("timestamp")),
            _ => Ok(()),
        }
    }

    /// Writes a validated body; `b` must be exactly `self.len()` octets.
    fn write_unchecked(&self, b: &mut [u8]) -> Result<(), WriteError> {
        debug_assert_eq!(b.len(), self.len());
        let mut ts = [0u8; 10];
        let mut pi = [0u8; 10];
        match self {
            Self::Sync(SyncBody {
                origin_timestamp: t,
            })
            | Self::DelayReq(DelayReqBody {
                origin_timestamp: t,
            })
            | Self::FollowUp(FollowUpBody {
                precise_origin_timestamp: t,
            }) => {
                t.write(&mut ts)?;
                b.copy_from_slice(&ts);
            }
            Self::DelayResp(d) => {
                d.receive_timestamp.write(&mut ts)?;
                d.requesting_port_identity.write(&mut pi);
                b[..10].copy_from_slice(&ts);
                b[10..].copy_from_slice(&pi);
            }
            Self::PDelayReq(o) | Self::PDelayResp(o) | Self::PDelayRespFollowUp(o) => {
                b.copy_from_slice(&o.0);
            }
            Self::Announce(a) => {
                a.origin_timestamp.write(&mut ts)?;
                b[..10].copy_from_slice(&ts);
                b[10..12].copy_from_slice(&a.current_utc_offset.to_be_bytes());
                b[12] = 0;
                b[13] = a.grandmaster_priority1;
                let mut q = [0u8; 4];
                a.grandmaster_clock_quality.write(&mut q);
                b[14..18].copy_from_slice(&q);
                b[18] = a.grandmaster_priority2;
                b[19..27].copy_from_slice(&a.grandmaster_identity.0);
                b[27..29].copy_from_slice(&a.steps_removed.to_be_bytes());
                b[29] = a.time_source.0;
            }
            Self::Signaling(s) => {
                s.target_port_identity.write(&mut pi);
                b.copy_from_slice(&pi);
            }
            Self::Management(m) => {
                m.target_port_identity.write(&mut pi);
                b[..10].copy_from_slice(&pi);
                b[10] = m.starting_boundary_hops;
                b[11] = m.boundary_hops;
                b[12] = m.action & 0x0F;
                b[13] = 0;
            }
        }
        Ok(())
    }
}

/// A parsed PTP message borrowing its TLVs from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message<'a> {
    /// Common header.
    pub header: Header,
    /// Fixed body; its type must match `header.message_type` when writing.
    pub body: Body,
    /// TLV area after the body (validated, zero-copy).
    pub tlvs: Tlvs<'a>,
}

/// Parses one PTP message from a UDP payload (see [`Message::parse`]).
pub fn parse(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    Message::parse(buf)
}

impl<'a> Message<'a> {
    /// Parses one PTP message from a UDP payload.
    ///
    /// Checks, in order: at least 34 octets, `versionPTP == 2`, a known
    /// message type, `messageLength <= buf.len()`, `messageLength` covers the
    /// fixed body, body timestamps valid, and the TLV area up to
    /// `messageLength` is a whole chain of at most [`crate::MAX_TLVS`] TLVs.
    /// Octets after `messageLength` are ignored (UDP padding).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let header = Header::parse(buf)?;
        let field = header.message_length;
        let len = usize::from(field);
        if len > buf.len() {
            return Err(ParseError::BadLength {
                field,
                buf: buf.len(),
            });
        }
        let min = header.message_type.min_len();
        if len < min {
            return Err(ParseError::TooShort {
                need: min,
                got: len,
            });
        }
        let body = Body::parse(header.message_type, &buf[HEADER_LEN..min])?;
        let tlvs = Tlvs::parse_at(&buf[min..len], min)?;
        Ok(Self { header, body, tlvs })
    }

    /// The message type (from the header).
    #[must_use]
    pub const fn message_type(&self) -> MessageType {
        self.header.message_type
    }

    /// Encoded length: header + body + TLV area.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len() + self.tlvs.as_bytes().len()
    }

    /// Writes the message to the start of `buf` and returns its length.
    ///
    /// `header.message_length` is ignored: the real length is written.
    /// Reserved fields are written as zero. Nothing is written on error.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        if self.header.message_type != self.body.message_type() {
            return Err(WriteError::InvalidField("message_type"));
        }
        self.header.validate()?;
        self.body.validate()?;
        let need = self.encoded_len();
        let message_length =
            u16::try_from(need).map_err(|_| WriteError::InvalidField("message_length"))?;
        let have = buf.len();
        let Some(out) = buf.get_mut(..need) else {
            return Err(WriteError::BufferTooSmall { need, have });
        };
        // need >= HEADER_LEN, so the split always succeeds.
        let Some((head, rest)) = out.split_first_chunk_mut::<HEADER_LEN>() else {
            return Err(WriteError::BufferTooSmall { need, have });
        };
        let mut header = self.header;
        header.message_length = message_length;
        header.write_unchecked(head);
        let (body, tlvs) = rest.split_at_mut(self.body.len());
        self.body.write_unchecked(body)?;
        tlvs.copy_from_slice(self.tlvs.as_bytes());
        Ok(need)
    }
}
