//! What a push edge reads from outside: connection tokens from devices
//! (any string, then any signed string so the fields behind the signature
//! are reached too) and frames. Nothing panics; a token that verifies
//! re-issues to one carrying the same claims; a frame that decodes encodes
//! to text that decodes to the same frame.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use push::frame::Frame;
use push::token::TokenKey;
use sha2::Sha256;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = TokenKey::from_hex(KEY_HEX).expect("a valid key");
    let now = 1_764_000_000;
    let _ = key.verify(text, now);
    // The same text signed as the issuer would: HMAC-SHA256 over the text.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&(0u8..32).collect::<Vec<_>>())
        .expect("HMAC takes any key");
    mac.update(text.as_bytes());
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Ok(claims) = key.verify(&format!("{text}.{tag}"), now) {
        let again = key.issue(&claims).expect("verified claims can be issued");
        assert_eq!(key.verify(&again, now), Ok(claims));
    }

    if let Ok(frame) = Frame::decode(text) {
        let encoded = frame.encode();
        let back = Frame::decode(encoded.as_str()).expect("an encoded frame decodes");
        assert_eq!(back, frame);
    }
});
