//! Firmware images (files an operator hands to `timecard-fw`): any bytes are
//! inspected and verified without panicking, a header that parses encodes
//! back to the same 16 bytes, the three CRC-16 implementations agree, and
//! any payload packed into an image verifies and reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timecard_hw::firmware::{self, HEADER_LEN, ImageHeader};
use timecard_hw::pci::PciId;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = ImageHeader::parse(data) {
        assert_eq!(&header.to_bytes()[..], &data[..HEADER_LEN]);
    }
    let _ = firmware::verify(data, None);
    let _ = firmware::payload(data);

    let crc = firmware::crc16(data);
    assert_eq!(crc, firmware::crc16_bitwise(data));
    assert_eq!(crc, firmware::crc16_bytewise(data));
    assert_eq!(crc, firmware::crc16_slice8(data));

    let id = PciId::new(0x1d9b, 0x0400);
    let image = firmware::pack(data, id, 3).expect("a fuzz input fits the size field");
    let header = firmware::verify(&image, Some(id)).expect("a packed image verifies");
    assert_eq!(header.crc, crc);
    assert_eq!(firmware::payload(&image), data);
});
