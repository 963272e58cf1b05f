//! # timecard-fw-tools
//!
//! The library behind `timecard-fw`: reading, checking, describing and
//! building `OCPC` firmware images for the OCP Time Card, the format Linux's
//! `ptp_ocp` accepts through `devlink dev flash` (see
//! [`timecard_hw::firmware`] for the header layout and the checks).
//!
//! Everything here returns data or typed errors; the binary prints. Each
//! error knows its exit code ([`exit::code_of`]), so the binary maps any
//! failure to the table in [`exit`].
//!
//! - [`input`]: reading an image or bitstream file with every refusal named
//!   (missing, directory, special file, unreadable, over 64 MiB, empty).
//! - [`inspect`]: [`inspect::InspectReport`], all a header says, checked
//!   against the payload, with what a simulated card would boot from it.
//! - [`check`]: [`check::VerifyReport`], the driver's checks one by one
//!   against an optional target card.
//! - [`pack`]: building images (with `pack`'s refusals) and simulator bitstreams.
//! - [`output`]: atomic, no-clobber output files.
//! - [`device`]: opening `--device` cards through `timecard-driver`.
//! - [`parse`]: command-line value parsers (PCI IDs, versions, sizes).
//! - [`progress`]: the progress bar of flash operations.
//! - [`exit`]: the exit code table.
#![forbid(unsafe_code)]

pub mod check;
pub mod device;
pub mod exit;
pub mod input;
pub mod inspect;
pub mod output;
pub mod pack;
pub mod parse;
pub mod progress;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use timecard_hw::firmware::{HEADER_LEN, ImageError};
    use timecard_hw::pci::{Board, PciId};

    use crate::check::{Target, VerifyReport};
    use crate::pack::pack_bitstream;

    proptest! {
        /// Every packed payload verifies against its own board; flipping any
        /// one payload byte (any position, any non-zero xor) is caught by the
        /// CRC, which detects every single-byte error, and exits with 6.
        #[test]
        fn packed_payloads_verify_and_single_byte_errors_fail_crc(
            payload in proptest::collection::vec(any::<u8>(), 1..4096),
            board in proptest::sample::select(Board::ALL.to_vec()),
            rev: u16,
            pos: proptest::sample::Index,
            xor in 1u8..=255,
        ) {
            prop_assume!(!payload.starts_with(b"OCPC"));
            let id: PciId = board.id();
            let img = pack_bitstream("p.bit".as_ref(), &payload, id, rev, false).unwrap();
            let ok = VerifyReport::new("p.img", &img, Some(Target::new(id, "test")));
            prop_assert!(ok.valid);
            prop_assert_eq!(ok.exit_code, 0);
            prop_assert_eq!(ok.result().unwrap().hw_revision, rev);

            let mut bad = img.clone();
            bad[HEADER_LEN + pos.index(payload.len())] ^= xor;
            let r = VerifyReport::new("p.img", &bad, Some(Target::new(id, "test")));
            let is_crc = matches!(r.error, Some(ImageError::CrcMismatch { .. }));
            prop_assert!(is_crc);
            prop_assert_eq!(r.exit_code, 6);
        }
    }
}
