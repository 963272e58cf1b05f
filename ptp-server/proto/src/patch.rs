//! In-place edits of pre-built packets, for the hot path.
//!
//! ptp4u keeps one encoded template per subscription and only rewrites a few
//! fields before each send. These functions do exactly that on an encoded
//! message (`buf` = the message, e.g. the output of [`crate::Message::write`]
//! sliced to its length). Each checks that `buf` is long enough — and, for
//! body fields, that the message type has that field — and returns an error
//! instead of panicking. Nothing else is validated or re-encoded.

use crate::header::{HEADER_LEN, offset};
use crate::message::offset as body;
use crate::types::{ClockQuality, Flags, MessageType, PortIdentity, TimeInterval, Timestamp};
use crate::write::WriteError;

/// Returns `buf[at..at + N]` as an array, or `BufferTooSmall`.
fn field<const N: usize>(buf: &mut [u8], at: usize) -> Result<&mut [u8; N], WriteError> {
    let have = buf.len();
    buf.get_mut(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(WriteError::BufferTooSmall { need: at + N, have })
}

/// Checks the header's message type nibble is one of `allowed`.
fn require_type(buf: &[u8], allowed: &[MessageType]) -> Result<(), WriteError> {
    let have = buf.len();
    if have < HEADER_LEN {
        return Err(WriteError::BufferTooSmall {
            need: HEADER_LEN,
            have,
        });
    }
    match MessageType::from_nibble(buf[0] & 0x0F) {
        Some(t) if allowed.contains(&t) => Ok(()),
        _ => Err(WriteError::InvalidField("message_type")),
    }
}

/// Sets `sequenceId` (offset 30).
pub fn set_sequence_id(buf: &mut [u8], sequence_id: u16) -> Result<(), WriteError> {
    *field::<2>(buf, offset::SEQUENCE_ID)? = sequence_id.to_be_bytes();
    Ok(())
}

/// Sets `correctionField` (offset 8).
pub fn set_correction(buf: &mut [u8], correction: TimeInterval) -> Result<(), WriteError> {
    *field::<8>(buf, offset::CORRECTION)? = correction.0.to_be_bytes();
    Ok(())
}

/// Sets `logMessageInterval` (offset 33).
pub fn set_log_message_interval(buf: &mut [u8], log_interval: i8) -> Result<(), WriteError> {
    *field::<1>(buf, offset::LOG_MESSAGE_INTERVAL)? = log_interval.to_be_bytes();
    Ok(())
}

/// Sets `flagField` (offset 6).
pub fn set_flags(buf: &mut [u8], flags: Flags) -> Result<(), WriteError> {
    *field::<2>(buf, offset::FLAGS)? = flags.0.to_be_bytes();
    Ok(())
}

/// Sets `domainNumber` (offset 4).
pub fn set_domain(buf: &mut [u8], domain: u8) -> Result<(), WriteError> {
    *field::<1>(buf, offset::DOMAIN_NUMBER)? = [domain];
    Ok(())
}

/// Sets `sourcePortIdentity` (offset 20).
pub fn set_source_port_identity(buf: &mut [u8], port: PortIdentity) -> Result<(), WriteError> {
    port.write(field::<10>(buf, offset::SOURCE_PORT_IDENTITY)?);
    Ok(())
}

/// Sets the body timestamp at offset 34: originTimestamp (Sync, Delay_Req,
/// Announce, Pdelay_Req), preciseOriginTimestamp (Follow_Up),
/// receiveTimestamp (Delay_Resp), requestReceipt/responseOrigin timestamp
/// (Pdelay_Resp / Pdelay_Resp_Follow_Up). Rejects invalid timestamps and
/// Signaling/Management messages.
pub fn set_origin_timestamp(buf: &mut [u8], ts: Timestamp) -> Result<(), WriteError> {
    require_type(
        buf,
        &[
            MessageType::Sync,
            MessageType::DelayReq,
            MessageType::PDelayReq,
            MessageType::PDelayResp,
            MessageType::FollowUp,
            MessageType::DelayResp,
            MessageType::PDelayRespFollowUp,
            MessageType::Announce,
        ],
    )?;
    let out = field::<10>(buf, body::BODY_TIMESTAMP)?;
    let mut tmp = [0u8; 10];
    ts.write(&mut tmp)?;
    *out = tmp;
    Ok(())
}

/// Sets `requestingPortIdentity` (offset 44) of a Delay_Resp, Pdelay_Resp or
/// Pdelay_Resp_Follow_Up.
pub fn set_requesting_port_identity(buf: &mut [u8], port: PortIdentity) -> Result<(), WriteError> {
    require_type(
        buf,
        &[
            MessageType::DelayResp,
            MessageType::PDelayResp,
            MessageType::PDelayRespFollowUp,
        ],
    )?;
    port.write(field::<10>(buf, body::REQUESTING_PORT_IDENTITY)?);
    Ok(())
}

/// Sets an Announce's `currentUtcOffset` (offset 44).
pub fn set_current_utc_offset(buf: &mut [u8], utc_offset_s: i16) -> Result<(), WriteError> {
    require_type(buf, &[MessageType::Announce])?;
    *field::<2>(buf, body::CURRENT_UTC_OFFSET)? = utc_offset_s.to_be_bytes();
    Ok(())
}

/// Sets an Announce's `grandmasterClockQuality` (offset 48), e.g. after c4u
/// changed clockClass/clockAccuracy.
pub fn set_grandmaster_clock_quality(buf: &mut [u8], q: ClockQuality) -> Result<(), WriteError> {
    require_type(buf, &[MessageType::Announce])?;
    q.write(field::<4>(buf, body::GRANDMASTER_CLOCK_QUALITY)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnnounceBody, Body, ClockIdentity, Message, parse};

    fn me() -> PortIdentity {
        PortIdentity::new(ClockIdentity::from_mac([1, 2, 3, 4, 5, 6]), 1)
    }

    #[test]
    fn patches_match_rebuild() {
        let mut buf = [0u8; 64];
        let n = Message::sync(me(), 1, Timestamp::ZERO)
            .write(&mut buf)
            .unwrap();
        let pkt = &mut buf[..n];
        let ts = Timestamp::new(1_700_000_000, 5).unwrap();
        set_sequence_id(pkt, 0xBEEF).unwrap();
        set_correction(pkt, TimeInterval::from_nanos(-7)).unwrap();
        set_origin_timestamp(pkt, ts).unwrap();
        set_log_message_interval(pkt, -3).unwrap();
        set_flags(pkt, Flags::UNICAST).unwrap();
        set_domain(pkt, 24).unwrap();
        let other = PortIdentity::new(ClockIdentity([9; 8]), 2);
        set_source_port_identity(pkt, other).unwrap();

        let mut want = Message::sync(other, 0xBEEF, ts);
        want.header.correction = TimeInterval::from_nanos(-7);
        want.header.log_message_interval = -3;
        want.header.flags = Flags::UNICAST;
        want.header.domain_number = 24;
        assert_eq!(parse(pkt).unwrap(), want);
    }

    #[test]
    fn body_patches_check_type_and_length() {
        let mut buf = [0u8; 64];
        let n = Message::sync(me(), 1, Timestamp::ZERO)
            .write(&mut buf)
            .unwrap();
        assert_eq!(
            set_requesting_port_identity(&mut buf[..n], me()),
            Err(WriteError::InvalidField("message_type"))
        );
        assert_eq!(
            set_origin_timestamp(&mut buf[..40], Timestamp::ZERO),
            Err(WriteError::BufferTooSmall { need: 44, have: 40 })
        );
        assert_eq!(
            set_origin_timestamp(
                &mut buf[..n],
                Timestamp {
                    seconds: 0,
                    nanoseconds: 1_000_000_000
                }
            ),
            Err(WriteError::InvalidField("timestamp"))
        );
        assert_eq!(
            set_sequence_id(&mut buf[..31], 1),
            Err(WriteError::BufferTooSmall { need: 32, have: 31 })
        );
        assert_eq!(
            set_current_utc_offset(&mut [], 37),
            Err(WriteError::BufferTooSmall { need: 34, have: 0 })
        );

        let n = Message::announce(me(), 0, 0, AnnounceBody::default())
            .write(&mut buf)
            .unwrap();
        let q = ClockQuality {
            clock_class: 7,
            clock_accuracy: 0x23,
            offset_scaled_log_variance: 0x59E0,
        };
        set_current_utc_offset(&mut buf[..n], 37).unwrap();
        set_grandmaster_clock_quality(&mut buf[..n], q).unwrap();
        let Body::Announce(a) = parse(&buf[..n]).unwrap().body else {
            panic!("not an announce")
        };
        assert_eq!(a.current_utc_offset, 37);
        assert_eq!(a.grandmaster_clock_quality, q);
    }
}
