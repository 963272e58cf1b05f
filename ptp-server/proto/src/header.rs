//! The 34-octet common message header (IEEE 1588-2019 §13.3).
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | majorSdoId (high nibble) · messageType (low nibble) |
//! | 1 | 1 | minorVersionPTP (high nibble) · versionPTP (low nibble, = 2) |
//! | 2 | 2 | messageLength |
//! | 4 | 1 | domainNumber |
//! | 5 | 1 | minorSdoId |
//! | 6 | 2 | flagField |
//! | 8 | 8 | correctionField (scaled ns) |
//! | 16 | 4 | messageTypeSpecific |
//! | 20 | 10 | sourcePortIdentity |
//! | 30 | 2 | sequenceId |
//! | 32 | 1 | controlField |
//! | 33 | 1 | logMessageInterval |

use crate::message::ParseError;
use crate::types::{Flags, MessageType, PortIdentity, TimeInterval};
use crate::write::WriteError;

/// Length of the common header in octets.
pub const HEADER_LEN: usize = 34;

/// `logMessageInterval` value meaning "not applicable" (0x7F), used in Sync,
/// Delay_Resp and signaling by ptp4u and ptp4l.
pub const LOG_INTERVAL_UNSPECIFIED: i8 = 0x7F;

/// The only `versionPTP` this crate speaks.
pub const VERSION_PTP: u8 = 2;

/// `minorVersionPTP` the builders emit: 1 (PTPv2.1, IEEE 1588-2019), as
/// ptp4u does. ptp4l 3.x sends 0; any value is accepted on parse.
pub const DEFAULT_MINOR_VERSION_PTP: u8 = 1;

/// Byte offsets of header fields, for in-place patching.
pub(crate) mod offset {
    pub const MESSAGE_LENGTH: usize = 2;
    pub const DOMAIN_NUMBER: usize = 4;
    pub const FLAGS: usize = 6;
    pub const CORRECTION: usize = 8;
    pub const SOURCE_PORT_IDENTITY: usize = 20;
    pub const SEQUENCE_ID: usize = 30;
    pub const LOG_MESSAGE_INTERVAL: usize = 33;
}

/// `controlField` values (§13.3.2.13, Table 42; deprecated in 1588-2019 but
/// still filled in by ptp4l and ptp4u).
pub mod control_field {
    /// Sync.
    pub const SYNC: u8 = 0;
    /// Delay_Req.
    pub const DELAY_REQ: u8 = 1;
    /// Follow_Up.
    pub const FOLLOW_UP: u8 = 2;
    /// Delay_Resp.
    pub const DELAY_RESP: u8 = 3;
    /// Management.
    pub const MANAGEMENT: u8 = 4;
    /// All other messages (Announce, Signaling, Pdelay_*).
    pub const OTHER: u8 = 5;

    /// The value 1588 prescribes for a message type.
    #[must_use]
    pub const fn for_type(t: crate::MessageType) -> u8 {
        match t {
            crate::MessageType::Sync => SYNC,
            crate::MessageType::DelayReq => DELAY_REQ,
            crate::MessageType::FollowUp => FOLLOW_UP,
            crate::MessageType::DelayResp => DELAY_RESP,
            crate::MessageType::Management => MANAGEMENT,
            _ => OTHER,
        }
    }
}

/// The common PTP header. `versionPTP` is implicit (always 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// majorSdoId (formerly transportSpecific), 4 bits.
    pub major_sdo_id: u8,
    /// messageType.
    pub message_type: MessageType,
    /// minorVersionPTP, 4 bits (0 for 1588-2008 senders, 1 for 1588-2019).
    pub minor_version_ptp: u8,
    /// messageLength as read. [`crate::Message::write`] ignores it and
    /// writes the real length.
    pub message_length: u16,
    /// domainNumber.
    pub domain_number: u8,
    /// minorSdoId.
    pub minor_sdo_id: u8,
    /// flagField.
    pub flags: Flags,
    /// correctionField.
    pub correction: TimeInterval,
    /// messageTypeSpecific (reserved in most messages).
    pub message_type_specific: u32,
    /// sourcePortIdentity.
    pub source_port_identity: PortIdentity,
    /// sequenceId.
    pub sequence_id: u16,
    /// controlField.
    pub control_field: u8,
    /// logMessageInterval.
    pub log_message_interval: i8,
}

impl Header {
    /// A header with 1588/ptp4u defaults for `message_type`: minor version 1,
    /// domain 0, no flags, zero correction, the prescribed control field,
    /// `logMessageInterval` 0x7F and `messageLength` = the type's fixed length.
    #[must_use]
    pub const fn new(message_type: MessageType, source_port_identity: PortIdentity) -> Self {
        Self {
            major_sdo_id: 0,
            message_type,
            minor_version_ptp: DEFAULT_MINOR_VERSION_PTP,
            // min_len() <= 64, so this never truncates.
            message_length: message_type.min_len() as u16,
            domain_number: 0,
            minor_sdo_id: 0,
            flags: Flags::empty(),
            correction: TimeInterval::ZERO,
            message_type_specific: 0,
            source_port_identity,
            sequence_id: 0,
            control_field: control_field::for_type(message_type),
            log_message_interval: LOG_INTERVAL_UNSPECIFIED,
        }
    }

    /// The 12-bit sdoId (majorSdoId << 8 | minorSdoId).
    #[must_use]
    pub const fn sdo_id(&self) -> u16 {
        ((self.major_sdo_id as u16 & 0x0F) << 8) | self.minor_sdo_id as u16
    }

    /// True for an SPTP request as ptp4u recognises it: a Delay_Req whose
    /// flagField is exactly `UNICAST | PROFILE_SPECIFIC_1`.
    #[must_use]
    pub const fn is_sptp_request(&self) -> bool {
        matches!(self.message_type, MessageType::DelayReq) && self.flags.0 == Flags::SPTP_REQUEST.0
    }

    /// Parses the first 34 octets of `buf`. Checks the buffer length, the
    /// version and the message type, but not `messageLength` (see
    /// [`crate::parse`] for the whole message).
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let Some(b) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(ParseError::TooShort {
                need: HEADER_LEN,
                got: buf.len(),
            });
        };
        let version = b[1] & 0x0F;
        if version != VERSION_PTP {
            return Err(ParseError::BadVersion(version));
        }
        let nibble = b[0] & 0x0F;
        let message_type =
            MessageType::from_nibble(nibble).ok_or(ParseError::UnknownMessageType(nibble))?;
        let mut spi = [0u8; 10];
        spi.copy_from_slice(&b[20..30]);
        let mut corr = [0u8; 8];
        corr.copy_from_slice(&b[8..16]);
        Ok(Self {
            major_sdo_id: b[0] >> 4,
            message_type,
            minor_version_ptp: b[1] >> 4,
            message_length: u16::from_be_bytes([b[2], b[3]]),
            domain_number: b[4],
            minor_sdo_id: b[5],
            flags: Flags(u16::from_be_bytes([b[6], b[7]])),
            correction: TimeInterval(i64::from_be_bytes(corr)),
            message_type_specific: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
            source_port_identity: PortIdentity::read(&spi),
            sequence_id: u16::from_be_bytes([b[30], b[31]]),
            control_field: b[32],
            log_message_interval: i8::from_be_bytes([b[33]]),
        })
    }

    /// Checks the 4-bit fields.
    pub(crate) fn validate(&self) -> Result<(), WriteError> {
        if self.major_sdo_id > 0x0F {
            return Err(WriteError::InvalidField("major_sdo_id"));
        }
        if self.minor_version_ptp > 0x0F {
            return Err(WriteError::InvalidField("minor_version_ptp"));
        }
        Ok(())
    }

    /// Writes the 34 header octets (including `message_length` exactly as
    /// set) to the start of `buf`. Returns 34.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        self.validate()?;
        let have = buf.len();
        let Some(b) = buf.first_chunk_mut::<HEADER_LEN>() else {
            return Err(WriteError::BufferTooSmall {
                need: HEADER_LEN,
                have,
            });
        };
        self.write_unchecked(b);
        Ok(HEADER_LEN)
    }

    /// Writes a validated header.
    pub(crate) fn write_unchecked(&self, b: &mut [u8; HEADER_LEN]) {
        b[0] = (self.major_sdo_id << 4) | self.message_type.to_nibble();
        b[1] = (self.minor_version_ptp << 4) | VERSION_PTP;
        b[2..4].copy_from_slice(&self.message_length.to_be_bytes());
        b[4] = self.domain_number;
        b[5] = self.minor_sdo_id;
        b[6..8].copy_from_slice(&self.flags.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.correction.0.to_be_bytes());
        b[16..20].copy_from_slice(&self.message_type_specific.to_be_bytes());
        let mut spi = [0u8; 10];
        self.source_port_identity.write(&mut spi);
        b[20..30].copy_from_slice(&spi);
        b[30..32].copy_from_slice(&self.sequence_id.to_be_bytes());
        b[32] = self.control_field;
        b[33] = self.log_message_interval.to_be_bytes()[0];
    }
}

/// Cheap first look at a datagram: the message type, after checking length
/// (>= 34) and version. Use it to dispatch before a full [`crate::parse`].
pub fn probe_message_type(buf: &[u8]) -> Result<MessageType, ParseError> {
    if buf.len() < HEADER_LEN {
        return Err(ParseError::TooShort {
            need: HEADER_LEN,
            got: buf.len(),
        });
    }
    let version = buf[1] & 0x0F;
    if version != VERSION_PTP {
        return Err(ParseError::BadVersion(version));
    }
    let nibble = buf[0] & 0x0F;
    MessageType::from_nibble(nibble).ok_or(ParseError::UnknownMessageType(nibble))
}
