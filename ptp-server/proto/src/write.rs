//! Allocation-free serialisation: [`MessageWriter`] (message + appended TLVs)
//! and the builders a ptp4u-style server or an SPTP client/load generator
//! needs.
//!
//! Builders return a [`Message`] with ptp4u's defaults (flags, controlField,
//! logMessageInterval, minorVersionPTP 1, domain 0). Adjust the public
//! fields (e.g. `msg.header.domain_number`) before calling
//! [`Message::write`].

use crate::header::{Header, offset};
use crate::message::{
    AnnounceBody, Body, DelayReqBody, DelayRespBody, FollowUpBody, Message, SignalingBody, SyncBody,
};
use crate::tlv::{MAX_TLVS, Tlvs, TypedTlv};
use crate::types::{Flags, MessageType, PortIdentity, TimeInterval, Timestamp};

/// Why a message could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output buffer is too small.
    #[error("buffer too small: need {need} octets, have {have}")]
    BufferTooSmall {
        /// Octets required.
        need: usize,
        /// Octets available.
        have: usize,
    },
    /// A field cannot be encoded (e.g. a timestamp with `nanoseconds >= 1e9`
    /// or `seconds >= 2^48`, a 4-bit field above 15, a header/body type
    /// mismatch, a message over 65535 octets, more than 64 TLVs).
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

/// Writes a message into a caller-provided buffer and appends TLVs after it;
/// [`MessageWriter::finish`] fixes `messageLength`.
///
/// ```
/// use ptp_proto::*;
/// let me = PortIdentity::new(ClockIdentity::from_mac([2, 0, 0, 0, 0, 1]), 1);
/// let req = RequestUnicastTransmission {
///     message_type: MessageType::Sync,
///     log_inter_message_period: 0,
///     duration_s: 300,
/// };
/// let mut buf = [0u8; 128];
/// let mut w = MessageWriter::new(&mut buf, &Message::signaling(me, 7, PortIdentity::ALL_ONES))?;
/// w.push_tlv(&req.grant(true).into())?;
/// let n = w.finish();
/// assert_eq!(n, SIGNALING_MIN_LEN + 12);
/// assert_eq!(parse(&buf[..n])?.tlvs.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    tlv_count: usize,
}

impl<'b> MessageWriter<'b> {
    /// Writes `message` (header, body and its own TLVs) to the start of `buf`.
    pub fn new(buf: &'b mut [u8], message: &Message<'_>) -> Result<Self, WriteError> {
        let len = message.write(buf)?;
        Ok(Self {
            buf,
            len,
            tlv_count: message.tlvs.len(),
        })
    }

    fn reserve(&self, tlv_len: usize) -> Result<(), WriteError> {
        if self.tlv_count >= MAX_TLVS {
            return Err(WriteError::InvalidField("tlv_count"));
        }
        if self.len + tlv_len > usize::from(u16::MAX) {
            return Err(WriteError::InvalidField("message_length"));
        }
        Ok(())
    }

    /// Appends a typed TLV.
    pub fn push_tlv(&mut self, tlv: &TypedTlv<'_>) -> Result<&mut Self, WriteError> {
        self.reserve(tlv.encoded_len())?;
        let n = tlv.write(&mut self.buf[self.len..])?;
        self.len += n;
        self.tlv_count += 1;
        Ok(self)
    }

    /// Appends a raw TLV (`tlv_type`, `value`).
    pub fn push_raw_tlv(&mut self, tlv_type: u16, value: &[u8]) -> Result<&mut Self, WriteError> {
        let tlv = crate::tlv::Tlv { tlv_type, value };
        self.push_tlv(&TypedTlv::Other(tlv))
    }

    /// Octets written so far.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Always false: a writer holds at least a header.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Writes the final `messageLength` and returns the message length.
    pub fn finish(self) -> usize {
        // `reserve` keeps len <= u16::MAX and `new` wrote >= 34 octets.
        let field = u16::try_from(self.len).unwrap_or(u16::MAX);
        self.buf[offset::MESSAGE_LENGTH..offset::MESSAGE_LENGTH + 2]
            .copy_from_slice(&field.to_be_bytes());
        self.len
    }
}

/// Writes `message` followed by `tlvs`; returns the total length.
pub fn write_with_tlvs(
    buf: &mut [u8],
    message: &Message<'_>,
    tlvs: &[TypedTlv<'_>],
) -> Result<usize, WriteError> {
    let mut w = MessageWriter::new(buf, message)?;
    for t in tlvs {
        w.push_tlv(t)?;
    }
    Ok(w.finish())
}

const fn header(t: MessageType, source: PortIdentity, sequence_id: u16, flags: Flags) -> Header {
    let mut h = Header::new(t, source);
    h.sequence_id = sequence_id;
    h.flags = flags;
    h
}

impl Message<'static> {
    /// Two-step unicast Sync as ptp4u sends it: flags `UNICAST | TWO_STEP`,
    /// controlField 0, logMessageInterval 0x7F. Pass [`Timestamp::ZERO`] for
    /// two-step, or T4 of the request for an SPTP reply.
    #[must_use]
    pub const fn sync(source: PortIdentity, sequence_id: u16, origin_timestamp: Timestamp) -> Self {
        Self {
            header: header(
                MessageType::Sync,
                source,
                sequence_id,
                Flags(Flags::UNICAST.0 | Flags::TWO_STEP.0),
            ),
            body: Body::Sync(SyncBody { origin_timestamp }),
            tlvs: Tlvs::EMPTY,
        }
    }

    /// Unicast Follow_Up: flags `UNICAST`, controlField 2,
    /// logMessageInterval = the granted Sync period.
    #[must_use]
    pub const fn follow_up(
        source: PortIdentity,
        sequence_id: u16,
        precise_origin_timestamp: Timestamp,
        log_message_interval: i8,
    ) -> Self {
        let mut h = header(MessageType::FollowUp, source, sequence_id, Flags::UNICAST);
        h.log_message_interval = log_message_interval;
        Self {
            header: h,
            body: Body::FollowUp(FollowUpBody {
                precise_origin_timestamp,
            }),
            tlvs: Tlvs::EMPTY,
        }
    }

    /// Unicast Delay_Req (for clients and load generators): flags `UNICAST`,
    /// controlField 1, logMessageInterval 0x7F.
    #[must_use]
    pub const fn delay_req(
        source: PortIdentity,
        sequence_id: u16,
        origin_timestamp: Timestamp,
    ) -> Self {
        Self {
            header: header(MessageType::DelayReq, source, sequence_id, Flags::UNICAST),
            body: Body::DelayReq(DelayReqBody { origin_timestamp }),
            tlvs: Tlvs::EMPTY,
        }
    }

    /// SPTP request: a Delay_Req with flags exactly
    /// `UNICAST | PROFILE_SPECIFIC_1`.
    #[must_use]
    pub const fn sptp_delay_req(source: PortIdentity, sequence_id: u16) -> Self {
        let mut m = Self::delay_req(source, sequence_id, Timestamp::ZERO);
        m.header.flags = Flags::SPTP_REQUEST;
        m
    }

    /// Delay_Resp answering `request` (a Delay_Req header), as ptp4u does:
    /// sequenceId, correctionField, domainNumber and sdoId copied from the
    /// request, requestingPortIdentity = its source, flags `UNICAST`,
    /// controlField 3, logMessageInterval 0x7F.
    #[must_use]
    pub const fn delay_resp(
        source: PortIdentity,
        request: &Header,
        receive_timestamp: Timestamp,
    ) -> Self {
        let mut h = header(
            MessageType::DelayResp,
            source,
            request.sequence_id,
            Flags::UNICAST,
        );
        h.correction = request.correction;
        h.domain_number = request.domain_number;
        h.major_sdo_id = request.major_sdo_id;
        h.minor_sdo_id = request.minor_sdo_id;
        Self {
            header: h,
            body: Body::DelayResp(DelayRespBody {
                receive_timestamp,
                requesting_port_identity: request.source_port_identity,
            }),
            tlvs: Tlvs::EMPTY,
        }
    }

    /// Unicast Announce: flags `UNICAST | PTP_TIMESCALE`, controlField 5,
    /// logMessageInterval = the granted Announce period. Add
    /// `CURRENT_UTC_OFFSET_VALID` etc. to `header.flags` as needed.
    #[must_use]
    pub const fn announce(
        source: PortIdentity,
        sequence_id: u16,
        log_message_interval: i8,
        body: AnnounceBody,
    ) -> Self {
        let mut h = header(
            MessageType::Announce,
            source,
            sequence_id,
            Flags(Flags::UNICAST.0 | Flags::PTP_TIMESCALE.0),
        );
        h.log_message_interval = log_message_interval;
        Self {
            header: h,
            body: Body::Announce(body),
            tlvs: Tlvs::EMPTY,
        }
    }

    /// Unicast Signaling without TLVs: flags `UNICAST`, controlField 5,
    /// logMessageInterval 0x7F. Append grant/cancel TLVs with
    /// [`MessageWriter`] or [`write_with_tlvs`].
    #[must_use]
    pub const fn signaling(source: PortIdentity, sequence_id: u16, target: PortIdentity) -> Self {
        Self {
            header: header(MessageType::Signaling, source, sequence_id, Flags::UNICAST),
            body: Body::Signaling(SignalingBody {
                target_port_identity: target,
            }),
            tlvs: Tlvs::EMPTY,
        }
    }

    /// Signaling reply to `request` (e.g. a grant): like ptp4u, copies
    /// sequenceId, domainNumber and sdoId from the request and targets the
    /// request's sourcePortIdentity. The correction stays zero.
    #[must_use]
    pub const fn signaling_reply(source: PortIdentity, request: &Header) -> Self {
        let mut m = Self::signaling(source, request.sequence_id, request.source_port_identity);
        m.header.domain_number = request.domain_number;
        m.header.major_sdo_id = request.major_sdo_id;
        m.header.minor_sdo_id = request.minor_sdo_id;
        m.header.correction = TimeInterval::ZERO;
        m
    }
}
