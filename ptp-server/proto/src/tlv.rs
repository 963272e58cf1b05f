//! TLVs (IEEE 1588-2019 §14): the zero-copy TLV area, its iterator, and typed
//! views of the TLVs a unicast server needs.
//!
//! Every TLV is `tlvType: u16`, `lengthField: u16`, then `lengthField` octets
//! of value. 1588 says the length is even; this crate accepts any length
//! (ptp4u's CSPTP proof-of-concept TLV has length 1) as long as the value is
//! inside the message.

use crate::message::ParseError;
use crate::types::MessageType;
use crate::write::WriteError;

/// Size of a TLV's type + length prefix.
pub const TLV_HEADER_LEN: usize = 4;

/// Maximum number of TLVs accepted in one message; more is
/// [`ParseError::TooManyTlvs`]. Bounds the work per packet.
pub const MAX_TLVS: usize = 64;

/// `tlvType` values (§14.1.1, Table 52) this crate knows by name.
pub mod tlv_type {
    /// MANAGEMENT.
    pub const MANAGEMENT: u16 = 0x0001;
    /// MANAGEMENT_ERROR_STATUS.
    pub const MANAGEMENT_ERROR_STATUS: u16 = 0x0002;
    /// ORGANIZATION_EXTENSION.
    pub const ORGANIZATION_EXTENSION: u16 = 0x0003;
    /// REQUEST_UNICAST_TRANSMISSION.
    pub const REQUEST_UNICAST_TRANSMISSION: u16 = 0x0004;
    /// GRANT_UNICAST_TRANSMISSION.
    pub const GRANT_UNICAST_TRANSMISSION: u16 = 0x0005;
    /// CANCEL_UNICAST_TRANSMISSION.
    pub const CANCEL_UNICAST_TRANSMISSION: u16 = 0x0006;
    /// ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION.
    pub const ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION: u16 = 0x0007;
    /// PATH_TRACE.
    pub const PATH_TRACE: u16 = 0x0008;
    /// ALTERNATE_TIME_OFFSET_INDICATOR.
    pub const ALTERNATE_TIME_OFFSET_INDICATOR: u16 = 0x0009;
    /// PAD.
    pub const PAD: u16 = 0x8008;
}

/// One raw TLV, borrowing its value from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tlv<'a> {
    /// tlvType.
    pub tlv_type: u16,
    /// The value octets (`lengthField` of them).
    pub value: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Encoded size: 4 + value length.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        TLV_HEADER_LEN + self.value.len()
    }

    /// Decodes the value of known TLV types; unknown types become
    /// [`TypedTlv::Other`]. A known type with a too-short value is
    /// [`ParseError::TlvTooShort`]; extra trailing value octets are ignored.
    pub fn typed(&self) -> Result<TypedTlv<'a>, ParseError> {
        let v = self.value;
        let need = |n: usize| -> Result<(), ParseError> {
            if v.len() < n {
                Err(ParseError::TlvTooShort {
                    tlv_type: self.tlv_type,
                    need: n,
                    got: v.len(),
                })
            } else {
                Ok(())
            }
        };
        let msg_type = |octet: u8| {
            let n = octet >> 4;
            MessageType::from_nibble(n).ok_or(ParseError::UnknownMessageType(n))
        };
        Ok(match self.tlv_type {
            tlv_type::REQUEST_UNICAST_TRANSMISSION => {
                need(6)?;
                TypedTlv::Request(RequestUnicastTransmission {
                    message_type: msg_type(v[0])?,
                    log_inter_message_period: i8::from_be_bytes([v[1]]),
                    duration_s: u32::from_be_bytes([v[2], v[3], v[4], v[5]]),
                })
            }
            tlv_type::GRANT_UNICAST_TRANSMISSION => {
                need(8)?;
                TypedTlv::Grant(GrantUnicastTransmission {
                    message_type: msg_type(v[0])?,
                    log_inter_message_period: i8::from_be_bytes([v[1]]),
                    duration_s: u32::from_be_bytes([v[2], v[3], v[4], v[5]]),
                    renewal_invited: v[7] & 0x01 != 0,
                })
            }
            tlv_type::CANCEL_UNICAST_TRANSMISSION => {
                need(2)?;
                TypedTlv::Cancel(CancelUnicastTransmission {
                    message_type: msg_type(v[0])?,
                    maintain_request: v[0] & 0x01 != 0,
                    maintain_grant: v[0] & 0x02 != 0,
                })
            }
            tlv_type::ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION => {
                need(2)?;
                TypedTlv::AckCancel(AcknowledgeCancelUnicastTransmission {
                    message_type: msg_type(v[0])?,
                    maintain_request: v[0] & 0x01 != 0,
                    maintain_grant: v[0] & 0x02 != 0,
                })
            }
            tlv_type::MANAGEMENT => {
                need(2)?;
                TypedTlv::Management(ManagementTlv {
                    management_id: u16::from_be_bytes([v[0], v[1]]),
                    data: &v[2..],
                })
            }
            tlv_type::MANAGEMENT_ERROR_STATUS => {
                need(8)?;
                TypedTlv::ManagementErrorStatus(ManagementErrorStatus {
                    management_error_id: u16::from_be_bytes([v[0], v[1]]),
                    management_id: u16::from_be_bytes([v[2], v[3]]),
                    display_data: &v[8..],
                })
            }
            _ => TypedTlv::Other(*self),
        })
    }

    /// Writes this TLV to the start of `buf`; returns the octets written.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        write_tlv(buf, self.tlv_type, self.value.len(), |out| {
            out.copy_from_slice(self.value);
        })
    }
}

/// Writes `tlvType`, `lengthField` and then lets `fill` write the value.
fn write_tlv(
    buf: &mut [u8],
    tlv_type: u16,
    value_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, WriteError> {
    let len_field = u16::try_from(value_len).map_err(|_| WriteError::InvalidField("tlv_length"))?;
    let need = TLV_HEADER_LEN + value_len;
    let have = buf.len();
    let Some(out) = buf.get_mut(..need) else {
        return Err(WriteError::BufferTooSmall { need, have });
    };
    out[..2].copy_from_slice(&tlv_type.to_be_bytes());
    out[2..4].copy_from_slice(&len_field.to_be_bytes());
    fill(&mut out[4..]);
    Ok(need)
}

/// The validated TLV area of a message (everything after the fixed body up to
/// `messageLength`). Construction checks the whole chain, so iteration cannot
/// fail and always terminates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tlvs<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Tlvs<'a> {
    /// No TLVs.
    pub const EMPTY: Tlvs<'static> = Tlvs {
        bytes: &[],
        count: 0,
    };

    /// Validates an encoded TLV chain (offsets in errors are relative to
    /// `bytes`). It must be exactly a sequence of whole TLVs, at most
    /// [`MAX_TLVS`] of them.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_at(bytes, 0)
    }

    /// As [`Tlvs::new`], reporting offsets as `base + position`.
    pub(crate) fn parse_at(bytes: &'a [u8], base: usize) -> Result<Self, ParseError> {
        let mut pos = 0;
        let mut count = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let Some(head) = rest.first_chunk::<TLV_HEADER_LEN>() else {
                return Err(ParseError::TlvOverrun { offset: base + pos });
            };
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            if TLV_HEADER_LEN + len > rest.len() {
                return Err(ParseError::TlvOverrun { offset: base + pos });
            }
            count += 1;
            if count > MAX_TLVS {
                return Err(ParseError::TooManyTlvs);
            }
            pos += TLV_HEADER_LEN + len;
        }
        Ok(Self { bytes, count })
    }

    /// The encoded TLV area, borrowed from the packet.
    #[must_use]
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of TLVs.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.count
    }

    /// True if there are no TLVs.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates the raw TLVs.
    #[must_use]
    pub const fn iter(&self) -> TlvIter<'a> {
        TlvIter { rest: self.bytes }
    }

    /// Iterates the TLVs decoded with [`Tlv::typed`].
    pub fn typed(&self) -> impl Iterator<Item = Result<TypedTlv<'a>, ParseError>> + 'a {
        self.iter().map(|t| t.typed())
    }
}

impl<'a> IntoIterator for Tlvs<'a> {
    type Item = Tlv<'a>;
    type IntoIter = TlvIter<'a>;
    fn into_iter(self) -> TlvIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Tlvs<'a> {
    type Item = Tlv<'a>;
    type IntoIter = TlvIter<'a>;
    fn into_iter(self) -> TlvIter<'a> {
        self.iter()
    }
}

/// Iterator over a validated TLV area (see [`Tlvs`]).
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        // The area was validated; the `?`s only make a bug end iteration
        // instead of panicking.
        let head = self.rest.first_chunk::<TLV_HEADER_LEN>()?;
        let tlv_type = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = self.rest.get(TLV_HEADER_LEN..TLV_HEADER_LEN + len)?;
        self.rest = &self.rest[TLV_HEADER_LEN + len..];
        Some(Tlv { tlv_type, value })
    }
}

impl core::iter::FusedIterator for TlvIter<'_> {}

/// REQUEST_UNICAST_TRANSMISSION (0x0004, value 6 octets, §16.1.4.1):
/// messageType (high nibble) · reserved, logInterMessagePeriod, durationField.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestUnicastTransmission {
    /// The message type the client wants to receive.
    pub message_type: MessageType,
    /// log2 of the requested interval in seconds.
    pub log_inter_message_period: i8,
    /// Requested grant duration in seconds.
    pub duration_s: u32,
}

impl RequestUnicastTransmission {
    /// Value length in octets.
    pub const VALUE_LEN: usize = 6;

    /// The grant that echoes this request (type, period, duration).
    #[must_use]
    pub const fn grant(&self, renewal_invited: bool) -> GrantUnicastTransmission {
        GrantUnicastTransmission {
            message_type: self.message_type,
            log_inter_message_period: self.log_inter_message_period,
            duration_s: self.duration_s,
            renewal_invited,
        }
    }

    /// A refusal: the echoing grant with `durationField` 0 (how 1588 and
    /// ptp4u deny a request).
    #[must_use]
    pub const fn deny(&self) -> GrantUnicastTransmission {
        GrantUnicastTransmission {
            message_type: self.message_type,
            log_inter_message_period: self.log_inter_message_period,
            duration_s: 0,
            renewal_invited: false,
        }
    }
}

/// GRANT_UNICAST_TRANSMISSION (0x0005, value 8 octets, §16.1.4.2): as the
/// request, then a reserved octet and a flags octet whose bit 0 is R
/// (renewal invited). `duration_s == 0` means the request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantUnicastTransmission {
    /// Granted message type.
    pub message_type: MessageType,
    /// log2 of the granted interval in seconds.
    pub log_inter_message_period: i8,
    /// Granted duration in seconds; 0 = denied.
    pub duration_s: u32,
    /// The R flag: the grantor invites renewal.
    pub renewal_invited: bool,
}

impl GrantUnicastTransmission {
    /// Value length in octets.
    pub const VALUE_LEN: usize = 8;
}

/// CANCEL_UNICAST_TRANSMISSION (0x0006, value 2 octets, §16.1.4.3):
/// messageType (high nibble) · flags (bit 0 maintainRequest, bit 1
/// maintainGrant), reserved octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelUnicastTransmission {
    /// Message type whose grant is cancelled.
    pub message_type: MessageType,
    /// Flag bit 0 (maintainRequest).
    pub maintain_request: bool,
    /// Flag bit 1 (maintainGrant).
    pub maintain_grant: bool,
}

impl CancelUnicastTransmission {
    /// Value length in octets.
    pub const VALUE_LEN: usize = 2;

    /// A plain cancel (no maintain flags), as ptp4u sends.
    #[must_use]
    pub const fn new(message_type: MessageType) -> Self {
        Self {
            message_type,
            maintain_request: false,
            maintain_grant: false,
        }
    }
}

/// ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION (0x0007, value 2 octets,
/// §16.1.4.4); same layout as the cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcknowledgeCancelUnicastTransmission {
    /// Message type whose cancel is acknowledged.
    pub message_type: MessageType,
    /// Flag bit 0 (maintainRequest).
    pub maintain_request: bool,
    /// Flag bit 1 (maintainGrant).
    pub maintain_grant: bool,
}

impl AcknowledgeCancelUnicastTransmission {
    /// Value length in octets.
    pub const VALUE_LEN: usize = 2;

    /// A plain acknowledgement of a cancel for `message_type`.
    #[must_use]
    pub const fn new(message_type: MessageType) -> Self {
        Self {
            message_type,
            maintain_request: false,
            maintain_grant: false,
        }
    }
}

/// MANAGEMENT TLV (0x0001, §15.5.2): managementId then opaque data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManagementTlv<'a> {
    /// managementId.
    pub management_id: u16,
    /// dataField, undecoded.
    pub data: &'a [u8],
}

/// MANAGEMENT_ERROR_STATUS TLV (0x0002, §15.5.4): managementErrorId,
/// managementId, 4 reserved octets, displayData (PTPText, undecoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManagementErrorStatus<'a> {
    /// managementErrorId.
    pub management_error_id: u16,
    /// managementId the error refers to.
    pub management_id: u16,
    /// displayData, undecoded.
    pub display_data: &'a [u8],
}

/// A TLV decoded by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypedTlv<'a> {
    /// REQUEST_UNICAST_TRANSMISSION.
    Request(RequestUnicastTransmission),
    /// GRANT_UNICAST_TRANSMISSION.
    Grant(GrantUnicastTransmission),
    /// CANCEL_UNICAST_TRANSMISSION.
    Cancel(CancelUnicastTransmission),
    /// ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION.
    AckCancel(AcknowledgeCancelUnicastTransmission),
    /// MANAGEMENT.
    Management(ManagementTlv<'a>),
    /// MANAGEMENT_ERROR_STATUS.
    ManagementErrorStatus(ManagementErrorStatus<'a>),
    /// Any other type, undecoded.
    Other(Tlv<'a>),
}

impl TypedTlv<'_> {
    /// The `tlvType` this TLV is written with.
    #[must_use]
    pub const fn tlv_type(&self) -> u16 {
        match self {
            Self::Request(_) => tlv_type::REQUEST_UNICAST_TRANSMISSION,
            Self::Grant(_) => tlv_type::GRANT_UNICAST_TRANSMISSION,
            Self::Cancel(_) => tlv_type::CANCEL_UNICAST_TRANSMISSION,
            Self::AckCancel(_) => tlv_type::ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION,
            Self::Management(_) => tlv_type::MANAGEMENT,
            Self::ManagementErrorStatus(_) => tlv_type::MANAGEMENT_ERROR_STATUS,
            Self::Other(t) => t.tlv_type,
        }
    }

    /// Length of the value when written.
    #[must_use]
    pub const fn value_len(&self) -> usize {
        match self {
            Self::Request(_) => RequestUnicastTransmission::VALUE_LEN,
            Self::Grant(_) => GrantUnicastTransmission::VALUE_LEN,
            Self::Cancel(_) | Self::AckCancel(_) => 2,
            Self::Management(m) => 2 + m.data.len(),
            Self::ManagementErrorStatus(e) => 8 + e.display_data.len(),
            Self::Other(t) => t.value.len(),
        }
    }

    /// Encoded size: 4 + value length.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        TLV_HEADER_LEN + self.value_len()
    }

    /// Writes the TLV to the start of `buf` (reserved bits zero); returns the
    /// octets written.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let ty = self.tlv_type();
        let len = self.value_len();
        match self {
            Self::Request(r) => write_tlv(buf, ty, len, |v| {
                v[0] = r.message_type.to_nibble() << 4;
                v[1] = r.log_inter_message_period.to_be_bytes()[0];
                v[2..6].copy_from_slice(&r.duration_s.to_be_bytes());
            }),
            Self::Grant(g) => write_tlv(buf, ty, len, |v| {
                v[0] = g.message_type.to_nibble() << 4;
                v[1] = g.log_inter_message_period.to_be_bytes()[0];
                v[2..6].copy_from_slice(&g.duration_s.to_be_bytes());
                v[6] = 0;
                v[7] = u8::from(g.renewal_invited);
            }),
            Self::Cancel(CancelUnicastTransmission {
                message_type,
                maintain_request,
                maintain_grant,
            })
            | Self::AckCancel(AcknowledgeCancelUnicastTransmission {
                message_type,
                maintain_request,
                maintain_grant,
            }) => write_tlv(buf, ty, len, |v| {
                v[0] = (message_type.to_nibble() << 4)
                    | u8::from(*maintain_request)
                    | (u8::from(*maintain_grant) << 1);
                v[1] = 0;
            }),
            Self::Management(m) => write_tlv(buf, ty, len, |v| {
                v[..2].copy_from_slice(&m.management_id.to_be_bytes());
                v[2..].copy_from_slice(m.data);
            }),
            Self::ManagementErrorStatus(e) => write_tlv(buf, ty, len, |v| {
                v[..2].copy_from_slice(&e.management_error_id.to_be_bytes());
                v[2..4].copy_from_slice(&e.management_id.to_be_bytes());
                v[4..8].fill(0);
                v[8..].copy_from_slice(e.display_data);
            }),
            Self::Other(t) => t.write(buf),
        }
    }
}

impl From<RequestUnicastTransmission> for TypedTlv<'_> {
    fn from(v: RequestUnicastTransmission) -> Self {
        Self::Request(v)
    }
}

impl From<GrantUnicastTransmission> for TypedTlv<'_> {
    fn from(v: GrantUnicastTransmission) -> Self {
        Self::Grant(v)
    }
}

impl From<CancelUnicastTransmission> for TypedTlv<'_> {
    fn from(v: CancelUnicastTransmission) -> Self {
        Self::Cancel(v)
    }
}

impl From<AcknowledgeCancelUnicastTransmission> for TypedTlv<'_> {
    fn from(v: AcknowledgeCancelUnicastTransmission) -> Self {
        Self::AckCancel(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_validation() {
        assert_eq!(Tlvs::new(&[]).unwrap().len(), 0);
        // One TLV, value 2 bytes.
        let one = [0x00, 0x06, 0x00, 0x02, 0xB0, 0x00];
        let t = Tlvs::new(&one).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.iter().next().unwrap().typed().unwrap(),
            TypedTlv::Cancel(CancelUnicastTransmission::new(MessageType::Announce))
        );
        // Leftover bytes shorter than a TLV header.
        assert_eq!(
            Tlvs::parse_at(&[0, 6, 0, 0, 0xAA], 44),
            Err(ParseError::TlvOverrun { offset: 48 })
        );
        // Length beyond the area.
        assert_eq!(
            Tlvs::new(&[0, 6, 0, 3, 0, 0]),
            Err(ParseError::TlvOverrun { offset: 0 })
        );
        // 64 empty TLVs are fine, 65 are not.
        let many = [0u8; 4 * 65];
        assert_eq!(Tlvs::new(&many[..4 * 64]).unwrap().len(), 64);
        assert_eq!(Tlvs::new(&many), Err(ParseError::TooManyTlvs));
    }

    #[test]
    fn typed_too_short() {
        let t = Tlv {
            tlv_type: tlv_type::GRANT_UNICAST_TRANSMISSION,
            value: &[0xB0, 0, 0, 0, 0, 0],
        };
        assert_eq!(
            t.typed(),
            Err(ParseError::TlvTooShort {
                tlv_type: 5,
                need: 8,
                got: 6
            })
        );
        let t = Tlv {
            tlv_type: tlv_type::REQUEST_UNICAST_TRANSMISSION,
            value: &[0x40, 0, 0, 0, 0, 0],
        };
        assert_eq!(t.typed(), Err(ParseError::UnknownMessageType(4)));
    }

    #[test]
    fn write_too_small() {
        let g = TypedTlv::Grant(GrantUnicastTransmission {
            message_type: MessageType::Sync,
            log_inter_message_period: -4,
            duration_s: 60,
            renewal_invited: true,
        });
        let mut buf = [0u8; 11];
        assert_eq!(
            g.write(&mut buf),
            Err(WriteError::BufferTooSmall { need: 12, have: 11 })
        );
        let mut buf = [0u8; 12];
        assert_eq!(g.write(&mut buf), Ok(12));
        assert_eq!(buf, [0, 5, 0, 8, 0x00, 0xFC, 0, 0, 0, 60, 0, 1]);
    }
}
