//! PTP messages from the network: parsing any datagram never panics, and a
//! message that parses is written back and parses to the same message (the
//! parser accepts nothing the writer cannot reproduce).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ptp_proto::parse(data) else {
        return;
    };
    for tlv in message.tlvs.typed() {
        let _ = tlv;
    }
    let mut buf = vec![0u8; message.encoded_len()];
    let n = message
        .write(&mut buf)
        .expect("a parsed message can be written back");
    let again = ptp_proto::parse(&buf[..n]).expect("a written message parses");
    assert_eq!(again.header.message_type, message.header.message_type);
    assert_eq!(again.body, message.body);
    assert_eq!(again.tlvs.as_bytes(), message.tlvs.as_bytes());
    assert_eq!(
        again.header.source_port_identity,
        message.header.source_port_identity
    );
    assert_eq!(again.header.sequence_id, message.header.sequence_id);
});
