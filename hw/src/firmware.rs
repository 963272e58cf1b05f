//! The `OCPC` firmware image format that `ptp_ocp`'s devlink flash accepts.
//!
//! An image is a 16-byte header followed by the raw FPGA bitstream
//! (the payload). All header fields are big-endian:
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 4 | magic `OCPC` |
//! | 4 | 2 | PCI vendor ID |
//! | 6 | 2 | PCI device ID |
//! | 8 | 4 | payload size (file size − 16) |
//! | 12 | 2 | hardware revision (not checked by the driver) |
//! | 14 | 2 | CRC-16/MODBUS of the payload |
//!
//! [`verify`] applies the driver's checks in its order (magic,
//! compatibility, size, CRC); [`pack`] builds an image that passes them.

use serde::{Deserialize, Serialize};

use crate::pci::PciId;

/// Header magic.
pub const MAGIC: [u8; 4] = *b"OCPC";
/// Header length in bytes.
pub const HEADER_LEN: usize = 16;

/// Why an image was rejected. Variants are in the driver's check order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Fewer bytes than a header.
    #[error("image is {len} bytes, shorter than the 16-byte OCPC header")]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// The first four bytes are not `OCPC`.
    #[error("No firmware header found (magic is not OCPC)")]
    NoHeader,
    /// The header names another PCI device than the card.
    #[error("Firmware image compatibility check failed: image is for {image}, card is {target}")]
    Incompatible {
        /// ID in the header.
        image: PciId,
        /// ID of the card being flashed.
        target: PciId,
    },
    /// The header's size field disagrees with the payload length.
    #[error(
        "Firmware image size check failed: header says {header} bytes, payload is {actual} bytes"
    )]
    SizeMismatch {
        /// Size in the header.
        header: u32,
        /// Actual payload length.
        actual: usize,
    },
    /// The payload's CRC disagrees with the header.
    #[error(
        "Firmware image CRC check failed: header has 0x{header:04x}, payload gives 0x{computed:04x}"
    )]
    CrcMismatch {
        /// CRC in the header.
        header: u16,
        /// CRC computed over the payload.
        computed: u16,
    },
    /// The payload does not fit the 32-bit size field.
    #[error("payload is {len} bytes, more than the 32-bit OCPC size field can describe")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
}

/// A decoded image header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHeader {
    /// PCI vendor ID the image is built for.
    pub vendor: u16,
    /// PCI device ID the image is built for.
    pub device: u16,
    /// Payload length in bytes.
    pub image_size: u32,
    /// Hardware revision (informational).
    pub hw_revision: u16,
    /// CRC-16/MODBUS of the payload.
    pub crc: u16,
}

impl ImageHeader {
    /// The PCI ID the image is built for.
    #[must_use]
    pub const fn id(&self) -> PciId {
        PciId::new(self.vendor, self.device)
    }

    /// Decodes the header at the start of `bytes`; checks length and magic only.
    ///
    /// # Errors
    /// [`ImageError::TooShort`] or [`ImageError::NoHeader`].
    pub fn parse(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(ImageError::TooShort { len: bytes.len() });
        };
        if h[0..4] != MAGIC {
            return Err(ImageError::NoHeader);
        }
        Ok(ImageHeader {
            vendor: u16::from_be_bytes([h[4], h[5]]),
            device: u16::from_be_bytes([h[6], h[7]]),
            image_size: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            hw_revision: u16::from_be_bytes([h[12], h[13]]),
            crc: u16::from_be_bytes([h[14], h[15]]),
        })
    }

    /// Encodes the header, magic included.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.vendor.to_be_bytes());
        out[6..8].copy_from_slice(&self.device.to_be_bytes());
        out[8..12].copy_from_slice(&self.image_size.to_be_bytes());
        out[12..14].copy_from_slice(&self.hw_revision.to_be_bytes());
        out[14..16].copy_from_slice(&self.crc.to_be_bytes());
        out
    }
}

/// Byte-wise lookup table for the reflected polynomial 0xA001.
const CRC_TABLE: [u16; 256] = CRC_TABLES_INIT[0];

/// Slicing-by-8 tables: `CRC_TABLES[0]` is the byte-wise table and
/// `CRC_TABLES[k][i]` is the CRC contribution of byte `i` followed by `k`
/// zero bytes, so eight input bytes fold into the CRC with eight lookups.
static CRC_TABLES: [[u16; 256]; 8] = CRC_TABLES_INIT;

/// The slicing tables, computed at compile time.
const CRC_TABLES_INIT: [[u16; 256]; 8] = build_crc_tables();

/// Inputs shorter than this go through the byte-wise table: the slicing
/// loop only pays off once it runs a few times.
const SLICE_THRESHOLD: usize = 32;

/// Builds the byte-wise table bit by bit, then each slicing table from the previous one.
const fn build_crc_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            bit += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// Feeds `data` into a running CRC one byte at a time (one table lookup per byte).
const fn crc16_update_bytewise(mut crc: u16, data: &[u8]) -> u16 {
    let mut i = 0;
    while i < data.len() {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ data[i] as u16) & 0xFF) as usize];
        i += 1;
    }
    crc
}

/// Feeds `data` into a running CRC eight bytes at a time (slicing-by-8),
/// finishing the last `len % 8` bytes byte-wise. Works at any alignment.
fn crc16_update_slice8(crc: u16, data: &[u8]) -> u16 {
    let t = &CRC_TABLES;
    let mut chunks = data.chunks_exact(8);
    let mut crc = crc;
    for chunk in &mut chunks {
        // The CRC register overlaps the first two (little-endian) bytes.
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ u64::from(crc);
        let b = x.to_le_bytes();
        crc = t[7][usize::from(b[0])]
            ^ t[6][usize::from(b[1])]
            ^ t[5][usize::from(b[2])]
            ^ t[4][usize::from(b[3])]
            ^ t[3][usize::from(b[4])]
            ^ t[2][usize::from(b[5])]
            ^ t[1][usize::from(b[6])]
            ^ t[0][usize::from(b[7])];
    }
    crc16_update_bytewise(crc, chunks.remainder())
}

/// CRC-16/MODBUS: reflected polynomial 0x8005 (0xA001), init 0xFFFF, no
/// final XOR; the same as Linux `crc16(0xFFFF, data, len)`.
///
/// Short inputs use one table lookup per byte ([`crc16_bytewise`]); longer
/// ones use slicing-by-8 ([`crc16_slice8`]). Both give identical results.
#[must_use]
pub fn crc16(data: &[u8]) -> u16 {
    if data.len() < SLICE_THRESHOLD {
        crc16_bytewise(data)
    } else {
        crc16_slice8(data)
    }
}

/// [`crc16`] with one 256-entry table lookup per byte (the classic
/// table-driven form; exposed for benchmarks and cross-checks).
#[must_use]
pub const fn crc16_bytewise(data: &[u8]) -> u16 {
    crc16_update_bytewise(0xFFFF, data)
}

/// [`crc16`] one bit at a time, straight from the definition (poly 0xA001
/// reflected, init 0xFFFF): the reference the table forms are checked
/// against and the benchmarks' baseline. Slow; not for real use.
#[must_use]
pub fn crc16_bitwise(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// [`crc16`] with slicing-by-8: eight tables, eight lookups per eight bytes
/// (exposed for benchmarks and cross-checks).
#[must_use]
pub fn crc16_slice8(data: &[u8]) -> u16 {
    crc16_update_slice8(0xFFFF, data)
}

/// The bytes after the header (empty if `image` is shorter than a header).
#[must_use]
pub fn payload(image: &[u8]) -> &[u8] {
    image.get(HEADER_LEN..).unwrap_or(&[])
}

/// Checks an image as the driver does before flashing it: magic, then
/// compatibility with `target` (skipped when `None`), then size, then CRC.
///
/// # Errors
/// The first failing check, as an [`ImageError`].
pub fn verify(image: &[u8], target: Option<PciId>) -> Result<ImageHeader, ImageError> {
    let header = ImageHeader::parse(image)?;
    if let Some(target) = target
        && header.id() != target
    {
        return Err(ImageError::Incompatible {
            image: header.id(),
            target,
        });
    }
    let body = payload(image);
    if usize::try_from(header.image_size).ok() != Some(body.len()) {
        return Err(ImageError::SizeMismatch {
            header: header.image_size,
            actual: body.len(),
        });
    }
    let computed = crc16(body);
    if computed != header.crc {
        return Err(ImageError::CrcMismatch {
            header: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Builds an image: header for `id` and `hw_revision`, then `payload`.
///
/// # Errors
/// [`ImageError::PayloadTooLarge`] if the payload exceeds `u32::MAX` bytes.
pub fn pack(payload: &[u8], id: PciId, hw_revision: u16) -> Result<Vec<u8>, ImageError> {
    let image_size = u32::try_from(payload.len())
        .map_err(|_| ImageError::PayloadTooLarge { len: payload.len() })?;
    let header = ImageHeader {
        vendor: id.vendor,
        device: id.device,
        image_size,
        hw_revision,
        crc: crc16(payload),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::Board;
    use proptest::prelude::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x4B37);
        assert_eq!(crc16(b""), 0xFFFF);
        assert_eq!(CRC_TABLE[0], 0);
        assert_eq!(CRC_TABLE[1], 0xC0C1);
        assert_eq!(CRC_TABLE[255], 0x4040);
        assert_eq!(crc16_bytewise(b"123456789"), 0x4B37);
        assert_eq!(crc16_slice8(b"123456789"), 0x4B37);
        assert_eq!(crc16_slice8(b""), 0xFFFF);
        assert_eq!(crc16_bitwise(b"123456789"), 0x4B37);
    }

    #[test]
    fn every_length_around_the_threshold_agrees() {
        let data: Vec<u8> = (0u32..300)
            .map(|i| (i.wrapping_mul(151) ^ (i >> 3)) as u8)
            .collect();
        for len in 0..data.len() {
            let d = &data[..len];
            let want = crc16_bitwise(d);
            assert_eq!(crc16(d), want, "len {len}");
            assert_eq!(crc16_bytewise(d), want, "len {len}");
            assert_eq!(crc16_slice8(d), want, "len {len}");
        }
    }

    #[test]
    fn header_layout_is_big_endian() {
        let h = ImageHeader {
            vendor: 0x1d9b,
            device: 0x0400,
            image_size: 0x0102_0304,
            hw_revision: 0x0A0B,
            crc: 0xBEEF,
        };
        let b = h.to_bytes();
        assert_eq!(
            b,
            [
                b'O', b'C', b'P', b'C', 0x1d, 0x9b, 0x04, 0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B,
                0xBE, 0xEF
            ]
        );
        assert_eq!(ImageHeader::parse(&b), Ok(h));
        assert_eq!(h.id(), Board::Meta.id());
    }

    #[test]
    fn checks_in_driver_order() {
        let meta = Board::Meta.id();
        let art = Board::OroliaArt.id();
        let good = pack(b"bitstream", meta, 3).unwrap();
        let h = verify(&good, Some(meta)).unwrap();
        assert_eq!((h.image_size, h.hw_revision), (9, 3));
        assert_eq!(payload(&good), b"bitstream");
        assert_eq!(verify(&good, None), Ok(h));

        assert_eq!(
            verify(&good[..15], Some(meta)),
            Err(ImageError::TooShort { len: 15 })
        );
        assert_eq!(payload(&good[..15]), b"");

        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(verify(&bad, Some(meta)), Err(ImageError::NoHeader));

        // Compatibility is checked before size and CRC.
        let mut wrong = good.clone();
        wrong.push(0);
        assert_eq!(
            verify(&wrong, Some(art)),
            Err(ImageError::Incompatible {
                image: meta,
                target: art
            })
        );
        assert_eq!(
            verify(&wrong, Some(meta)),
            Err(ImageError::SizeMismatch {
                header: 9,
                actual: 10
            })
        );

        let mut flipped = good.clone();
        flipped[HEADER_LEN] ^= 1;
        assert!(matches!(
            verify(&flipped, Some(meta)),
            Err(ImageError::CrcMismatch { .. })
        ));

        // Header-only image with an empty payload.
        let empty = pack(b"", meta, 0).unwrap();
        assert_eq!(empty.len(), HEADER_LEN);
        assert_eq!(verify(&empty, Some(meta)).unwrap().crc, 0xFFFF);
    }

    #[test]
    fn messages_use_kernel_words() {
        let meta = Board::Meta.id();
        let art = Board::OroliaArt.id();
        let msgs = [
            ImageError::TooShort { len: 3 }.to_string(),
            ImageError::NoHeader.to_string(),
            ImageError::Incompatible {
                image: meta,
                target: art,
            }
            .to_string(),
            ImageError::SizeMismatch {
                header: 1,
                actual: 2,
            }
            .to_string(),
            ImageError::CrcMismatch {
                header: 1,
                computed: 2,
            }
            .to_string(),
        ];
        assert!(msgs[0].contains("3 bytes") && msgs[0].contains("16-byte OCPC header"));
        assert!(msgs[1].contains("No firmware header found"));
        assert!(msgs[2].contains("Firmware image compatibility check failed"));
        assert!(msgs[2].contains("1d9b:0400") && msgs[2].contains("1ad7:a000"));
        assert!(msgs[3].contains("Firmware image size check failed"));
        assert!(msgs[4].contains("Firmware image CRC check failed"));
    }

    proptest! {
        #[test]
        fn table_matches_bitwise(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert_eq!(crc16(&data), crc16_bitwise(&data));
        }

        /// The fast paths equal the bit-at-a-time reference on random
        /// lengths and at every start alignment (a sub-slice at `offset`).
        #[test]
        fn slicing_by_8_matches_bitwise(
            data in proptest::collection::vec(any::<u8>(), 0..4200),
            offset in 0usize..16,
        ) {
            let d = data.get(offset..).unwrap_or(&[]);
            let want = crc16_bitwise(d);
            prop_assert_eq!(crc16_slice8(d), want);
            prop_assert_eq!(crc16_bytewise(d), want);
            prop_assert_eq!(crc16(d), want);
        }

        #[test]
        fn packed_images_verify(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            vendor: u16,
            device: u16,
            rev: u16,
        ) {
            let id = PciId::new(vendor, device);
            let img = pack(&data, id, rev).unwrap();
            let h = verify(&img, Some(id)).unwrap();
            prop_assert_eq!(h.id(), id);
            prop_assert_eq!(h.hw_revision, rev);
            prop_assert_eq!(payload(&img), &data[..]);
            prop_assert_eq!(ImageHeader::parse(&h.to_bytes()), Ok(h));
        }

        #[test]
        fn any_flipped_payload_byte_fails_crc(
            data in proptest::collection::vec(any::<u8>(), 1..1024),
            pos: proptest::sample::Index,
            mask in 1u8..=255,
        ) {
            let id = Board::Meta.id();
            let mut img = pack(&data, id, 0).unwrap();
            let i = HEADER_LEN + pos.index(data.len());
            img[i] ^= mask;
            let is_crc_mismatch = matches!(verify(&img, Some(id)), Err(ImageError::CrcMismatch { .. }));
            prop_assert!(is_crc_mismatch);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            magic: bool,
            target: Option<(u16, u16)>,
        ) {
            let mut data = data;
            if magic && data.len() >= 4 {
                data[..4].copy_from_slice(&MAGIC);
            }
            let _ = ImageHeader::parse(&data);
            let _ = payload(&data);
            let r = verify(&data, target.map(|(v, d)| PciId::new(v, d)));
            if let Ok(h) = r {
                prop_assert_eq!(h.image_size as usize, data.len() - HEADER_LEN);
            }
        }
    }
}
