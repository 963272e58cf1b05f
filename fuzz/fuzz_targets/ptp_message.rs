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
    let written = write(&message);
    let again = ptp_proto::parse(&written).expect("a written message parses");
    assert_eq!(again.header.message_type, message.header.message_type);
    assert_eq!(again.body, message.body);
    assert_eq!(again.tlvs.as_bytes(), message.tlvs.as_bytes());
    // Every header field survives (messageLength is the writer's to set)...
    let mut header = message.header;
    header.message_length = again.header.message_length;
    assert_eq!(again.header, header);
    // ...and a second round trip changes no byte.
    assert_eq!(write(&again), written);
});

fn write(message: &ptp_proto::Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; message.encoded_len()];
    let n = message
        .write(&mut buf)
        .expect("a parsed message can be written back");
    buf.truncate(n);
    buf
}
