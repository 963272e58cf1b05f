//! `pack` and `sim-bitstream`: building images and simulator bitstreams.
//!
//! [`pack_bitstream`] refuses what would make a useless or surprising image:
//! always an empty bitstream or one larger than the card's 32 MiB flash;
//! unless forced, a PCI ID that is not a known Time Card ([`check_id`]) and a
//! bitstream that already starts with `OCPC` (an image packed twice).

use std::path::{Path, PathBuf};

use timecard_hw::firmware::{self, ImageError, MAGIC};
use timecard_hw::pci::{Board, PciId};
use timecard_sim::card::make_bitstream;

use crate::exit::{EX_SOFTWARE, EX_USAGE};
use crate::parse::board_key;

/// Size of the card's SPI flash: no bitstream can be larger.
pub const MAX_BITSTREAM_LEN: usize = 32 << 20;
/// Shortest simulator bitstream: its 8-byte magic and 4-byte version word.
pub const MIN_SIM_BITSTREAM_LEN: usize = 12;
/// Default simulator bitstream size (1 MiB).
pub const DEFAULT_SIM_BITSTREAM_LEN: usize = 1 << 20;

/// Why `pack` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// The vendor/device is not a Time Card `ptp_ocp` knows.
    #[error(
        "{id} is not a Time Card ptp_ocp knows ({known}); check --vendor/--device, or pass --force \
         to pack for it anyway"
    )]
    UnknownId {
        /// The ID asked for.
        id: PciId,
        /// The known boards, for the message.
        known: String,
    },
    /// The bitstream is already an `OCPC` image.
    #[error(
        "{} already starts with OCPC: it is a packed image, not a raw bitstream; pass --force to \
         wrap it again",
        path.display()
    )]
    AlreadyPacked {
        /// The bitstream file.
        path: PathBuf,
    },
    /// The bitstream is empty.
    #[error("{} is empty: nothing to pack", path.display())]
    Empty {
        /// The bitstream file.
        path: PathBuf,
    },
    /// The bitstream does not fit the card's flash.
    #[error(
        "{} is {len} bytes, larger than the card's {limit}-byte (32 MiB) flash",
        path.display()
    )]
    TooLarge {
        /// The bitstream file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The header could not describe the payload.
    #[error("{}: {source}", path.display())]
    Image {
        /// The bitstream file.
        path: PathBuf,
        /// Why.
        source: ImageError,
    },
}

impl PackError {
    /// 2 for an unknown ID (a usage mistake), else 1.
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            PackError::UnknownId { .. } => EX_USAGE,
            _ => EX_SOFTWARE,
        }
    }
}

/// The board `id` belongs to; an unknown ID is an error unless `force`.
///
/// # Errors
/// [`PackError::UnknownId`].
pub fn check_id(id: PciId, force: bool) -> Result<Option<Board>, PackError> {
    match Board::from_id(id) {
        Some(b) => Ok(Some(b)),
        None if force => Ok(None),
        None => Err(PackError::UnknownId {
            id,
            known: Board::ALL
                .iter()
                .map(|b| format!("{} {}", board_key(*b), b.id()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Builds an image from `bitstream` (read from `path`, named in errors).
///
/// # Errors
/// [`PackError`] (see the module doc for what `force` allows).
pub fn pack_bitstream(
    path: &Path,
    bitstream: &[u8],
    id: PciId,
    hw_revision: u16,
    force: bool,
) -> Result<Vec<u8>, PackError> {
    if bitstream.is_empty() {
        return Err(PackError::Empty {
            path: path.to_owned(),
        });
    }
    if bitstream.len() > MAX_BITSTREAM_LEN {
        return Err(PackError::TooLarge {
            path: path.to_owned(),
            len: bitstream.len(),
            limit: MAX_BITSTREAM_LEN,
        });
    }
    if !force && bitstream.starts_with(&MAGIC) {
        return Err(PackError::AlreadyPacked {
            path: path.to_owned(),
        });
    }
    firmware::pack(bitstream, id, hw_revision).map_err(|source| PackError::Image {
        path: path.to_owned(),
        source,
    })
}

/// A simulator bitstream that boots with image-version word `version`,
/// `len` bytes long.
///
/// # Errors
/// A message when `len` is outside 12 bytes .. 32 MiB.
pub fn sim_bitstream(version: u32, len: usize) -> Result<Vec<u8>, String> {
    if !(MIN_SIM_BITSTREAM_LEN..=MAX_BITSTREAM_LEN).contains(&len) {
        return Err(format!(
            "a simulator bitstream is {MIN_SIM_BITSTREAM_LEN} bytes (magic and version word) to \
             32 MiB (the flash); {len} is out of range"
        ));
    }
    Ok(make_bitstream(version, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecard_sim::card::bitstream_version;

    #[test]
    fn refusals() {
        let p = Path::new("b.bit");
        let meta = Board::Meta.id();
        assert!(matches!(
            pack_bitstream(p, b"", meta, 0, true),
            Err(PackError::Empty { .. })
        ));
        let img = pack_bitstream(p, b"bits", meta, 0, false).unwrap();
        let again = pack_bitstream(p, &img, meta, 0, false).unwrap_err();
        assert!(again.to_string().contains("already starts with OCPC"));
        assert_eq!(again.exit_code(), 1);
        assert!(pack_bitstream(p, &img, meta, 0, true).is_ok());
        let big = vec![0u8; MAX_BITSTREAM_LEN + 1];
        assert!(matches!(
            pack_bitstream(p, &big, meta, 0, true),
            Err(PackError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_ids_need_force() {
        let intel = PciId::new(0x8086, 0x1533);
        let e = check_id(intel, false).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("8086:1533") && e.to_string().contains("meta 1d9b:0400"));
        assert_eq!(check_id(intel, true), Ok(None));
        assert_eq!(check_id(Board::Adva.id(), false), Ok(Some(Board::Adva)));
    }

    #[test]
    fn sim_bitstreams_carry_their_version() {
        let b = sim_bitstream(0x8015, 64).unwrap();
        assert_eq!(b.len(), 64);
        assert_eq!(bitstream_version(&b), Some(0x8015));
        assert!(sim_bitstream(0x8015, 11).is_err());
        assert!(sim_bitstream(0x8015, MAX_BITSTREAM_LEN + 1).is_err());
    }
}
