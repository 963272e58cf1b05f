//! Shared helpers: hex, golden packets, canonical form.
#![allow(dead_code)]

use ptp_proto::{MessageType, ParseError, parse};

/// Decodes hex, ignoring whitespace.
pub fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(s.len() % 2, 0, "odd hex length");
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// REQUEST_UNICAST_TRANSMISSION (Announce) from ptp4l 3.1.1 (recipes.md §4).
pub const PTP4L_REQUEST: &str = "0c02003600000400000000000000000000000000f633acfffece5498\
                                  00010000057fffffffffffffffffffff00040006b00100000e10";

/// SPTP Delay_Req with ptp4u's CSPTP proof-of-concept TLV (type 0x0042,
/// length 1 — odd on purpose) and two padding octets after messageLength.
pub const SPTP_DELAY_REQ: &str = "01120031 0000 2400 0000000000000000 00000000 \
                                  b8cef6fffe449490 0001 8acf 00 7f \
                                  00000000000000000000 \
                                  0042 0001 cf \
                                  0000";

/// A grant for the ptp4l request, as our builders produce it.
pub const GRANT: &str = "0c120038 0000 0400 0000000000000000 00000000 \
                         020000fffeaabbcc 0001 0000 05 7f \
                         f633acfffece5498 0001 \
                         0005 0008 b0 01 00000e10 00 01";

/// Two-step unicast Sync, sequence 92.
pub const SYNC: &str = "0012002c 0000 0600 0000000000000000 00000000 \
                        020000fffeaabbcc 0001 005c 00 7f \
                        00000000000000000000";

/// Follow_Up, sequence 92, t1 = 1795627303.000000123, log interval 0.
pub const FOLLOW_UP: &str = "0812002c 0000 0400 0000000000000000 00000000 \
                             020000fffeaabbcc 0001 005c 02 00 \
                             00006b071927 0000007b";

/// Delay_Resp to SPTP_DELAY_REQ with t4 = 1795627303.5.
pub const DELAY_RESP: &str = "09120036 0000 0400 0000000000000000 00000000 \
                              020000fffeaabbcc 0001 8acf 03 7f \
                              00006b071927 1dcd6500 \
                              b8cef6fffe449490 0001";

/// ptp4u-style Announce: utc offset 37, class 6, accuracy 0x21, variance 0x59E0,
/// priorities 128, GNSS, log interval 1, sequence 1.
pub const ANNOUNCE: &str = "0b120040 0000 0408 0000000000000000 00000000 \
                            020000fffeaabbcc 0001 0001 05 01 \
                            00000000000000000000 0025 00 80 06 21 59e0 80 \
                            020000fffeaabbcc 0000 20";

/// Management GET of DEFAULT_DATA_SET (pmc style), with a MANAGEMENT TLV.
pub const MANAGEMENT: &str = "0d120036 0000 0000 0000000000000000 00000000 \
                              020000fffeaabbcc 0001 0003 04 7f \
                              ffffffffffffffff ffff 01 01 00 00 \
                              0001 0002 2000";

/// Pdelay_Req (opaque body).
pub const PDELAY_REQ: &str = "02120036 0000 0000 0000000000000000 00000000 \
                              020000fffeaabbcc 0001 0007 05 00 \
                              00006b071927 00000001 00000000000000000000";

/// Signaling with four TLVs: request, cancel (maintain flags), ack-cancel,
/// and an unknown TLV.
pub const SIGNALING_MULTI: &str = "0c12004a 0000 0400 0000000000000000 00000000 \
                                   020000fffeaabbcc 0001 0009 05 7f \
                                   ffffffffffffffff ffff \
                                   0004 0006 00 fc 0000003c \
                                   0006 0002 93 00 \
                                   0007 0002 b0 00 \
                                   8008 0004 deadbeef";

/// All golden packets.
pub fn golden() -> Vec<Vec<u8>> {
    [
        PTP4L_REQUEST,
        SPTP_DELAY_REQ,
        GRANT,
        SYNC,
        FOLLOW_UP,
        DELAY_RESP,
        ANNOUNCE,
        MANAGEMENT,
        PDELAY_REQ,
        SIGNALING_MULTI,
    ]
    .iter()
    .map(|s| hex(s))
    .collect()
}

/// The first `messageLength` octets of a packet that parsed, with reserved
/// fields zeroed — what writing the parsed message must reproduce.
pub fn canonical(buf: &[u8]) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let mut out = buf[..len].to_vec();
    match MessageType::from_nibble(out[0] & 0x0F) {
        Some(MessageType::Announce) => out[46] = 0,
        Some(MessageType::Management) => {
            out[46] &= 0x0F;
            out[47] = 0;
        }
        _ => {}
    }
    out
}

/// Checks every invariant of a buffer that parsed; returns the error of
/// `parse` otherwise. Never panics on a buffer that fails to parse.
pub fn check(buf: &[u8]) -> Result<(), ParseError> {
    let m = parse(buf)?;
    // TLV iteration is consistent with validation.
    let mut n = 0;
    let mut bytes = 0;
    for t in m.tlvs.iter() {
        n += 1;
        bytes += t.encoded_len();
        // Typed decoding may fail but must not panic.
        let _ = t.typed();
    }
    assert_eq!(n, m.tlvs.len());
    assert!(n <= ptp_proto::MAX_TLVS);
    assert_eq!(bytes, m.tlvs.as_bytes().len());
    // write(parse(b)) == canonical(b), and parse is idempotent on it.
    let mut out = vec![0u8; m.encoded_len()];
    let w = m.write(&mut out).expect("a parsed message is writable");
    assert_eq!(w, out.len());
    assert_eq!(out, canonical(buf));
    let again = parse(&out).expect("rewritten message parses");
    assert_eq!(again, m);
    Ok(())
}
