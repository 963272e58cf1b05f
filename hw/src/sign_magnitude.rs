//! Sign-magnitude 32-bit registers.
//!
//! Several Time Card registers hold signed values as bit 31 = negative,
//! bits 30:0 = magnitude, *not* two's complement: the clock's
//! `OFFSET_NS`, `DRIFT_NS`, `STATUS_OFFSET` and `STATUS_DRIFT`, and the
//! TOD blocks' `ADJ_SEC`.

/// Sign bit.
pub const SIGN: u32 = 1 << 31;
/// Largest representable magnitude.
pub const MAX_MAGNITUDE: u32 = 0x7FFF_FFFF;

/// Encodes `value`, saturating the magnitude at [`MAX_MAGNITUDE`].
///
/// Zero encodes as `0` (never as "negative zero").
#[must_use]
pub fn encode(value: i64) -> u32 {
    let mag =
        u32::try_from(value.unsigned_abs().min(u64::from(MAX_MAGNITUDE))).unwrap_or(MAX_MAGNITUDE);
    if value < 0 { SIGN | mag } else { mag }
}

/// Decodes a register value. `0x8000_0000` ("negative zero") decodes as 0.
#[must_use]
pub fn decode(reg: u32) -> i64 {
    let mag = i64::from(reg & MAX_MAGNITUDE);
    if reg & SIGN != 0 { -mag } else { mag }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(encode(0), 0);
        assert_eq!(encode(5), 5);
        assert_eq!(encode(-5), 0x8000_0005);
        assert_eq!(encode(-1_000_000_000), 0x8000_0000 | 1_000_000_000);
        assert_eq!(encode(i64::MAX), 0x7FFF_FFFF);
        assert_eq!(encode(i64::MIN), 0xFFFF_FFFF);
        assert_eq!(decode(0x8000_0000), 0);
        assert_eq!(decode(0xFFFF_FFFF), -0x7FFF_FFFF);
        assert_eq!(decode(0x8000_0005), -5);
    }

    proptest! {
        #[test]
        fn round_trip_in_range(v in -0x7FFF_FFFFi64..=0x7FFF_FFFF) {
            prop_assert_eq!(decode(encode(v)), v);
        }

        #[test]
        fn saturates_beyond(v in 0x8000_0000i64..=i64::MAX, neg: bool) {
            let v = if neg { -v } else { v };
            let r = encode(v);
            prop_assert_eq!(r & MAX_MAGNITUDE, MAX_MAGNITUDE);
            prop_assert_eq!(r & SIGN != 0, neg);
            prop_assert_eq!(decode(r), if neg { -0x7FFF_FFFF } else { 0x7FFF_FFFF });
        }

        #[test]
        fn decode_encode_canonical(r: u32) {
            let back = encode(decode(r));
            prop_assert!(back == r || r == SIGN && back == 0);
        }
    }
}
