//! The card's configuration flash, through BAR0's SPI controller.
//!
//! The FPGA boots from a 32 MiB SPI NOR flash: the golden (loader) image at
//! address 0, the regular image at the board's `flash_start`. On Linux,
//! `ptp_ocp` hands the SPI controller (a Xilinx AXI Quad SPI) to `spi-xilinx`
//! and devlink flash writes the image payload there in 4 KiB erase + program
//! steps. This module does the same from userspace, over the [`Bar`](crate::Bar)
//! seam, so it works on a card bound to `vfio-pci` and on the simulator alike.
//!
//! Safety rules, enforced here and not left to callers:
//! - only chips we know (JEDEC ID in [`nor::CHIPS`]) are written;
//! - writes go to the image region `[flash_start, chip end)` only; the golden
//!   region below `flash_start` is never erased or programmed, whatever the
//!   caller asks, and the chip's own block protection is checked too;
//! - the first 4 KiB block (which holds the `OCPC` header) is erased first
//!   and programmed last, so a flash interrupted at any point leaves no
//!   header at all: the card then boots the golden image and reports it, and
//!   a second flash recovers;
//! - every erase and program is followed by the chip's flag status (a
//!   refused operation is an error, not silence), and the whole image is
//!   read back and compared before success is reported.

use std::ops::{ControlFlow, Range};
use std::time::{Duration, Instant};

use serde::Serialize;
use timecard_hw::firmware::{self, ImageError, ImageHeader};
use timecard_hw::pci::Board;
use timecard_hw::spi::nor::{self, Chip};
use timecard_hw::spi::xspi;

use crate::card::{CardError, TimeCard};

/// How long one erase or program may keep the chip busy before we give up
/// (a 4 KiB erase takes at most 400 ms on the MT25Q family).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Polls of the controller's TX FIFO before it counts as stuck.
const FIFO_POLLS: u32 = 10_000;
/// Bytes read per READ command (one chip-select assertion).
const READ_CHUNK: usize = 64 * 1024;
/// Length of a 4-byte-address command header (opcode + address).
const CMD_4B: usize = 5;

/// Why a flash operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The board's BAR0 has no SPI flash controller.
    #[error("{0} has no SPI flash controller in BAR0")]
    NoController(Board),
    /// The board's flash controller is not the Xilinx AXI Quad SPI this driver speaks.
    #[error(
        "{0} uses an Altera SPI controller, which this driver does not drive; use `devlink dev flash` with ptp_ocp"
    )]
    UnsupportedController(Board),
    /// The chip's JEDEC ID is not one we know how to program safely.
    #[error(
        "unknown SPI flash chip (JEDEC ID {:02x} {:02x} {:02x}); refusing to touch it",
        .0[0], .0[1], .0[2]
    )]
    UnknownChip([u8; 3]),
    /// A write outside the image region was requested.
    #[error(
        "refusing to write flash {start:#x}..{end:#x}: only the image region {:#x}..{:#x} may be written \
         (the golden image lives below {:#x})",
        region.start, region.end, region.start
    )]
    OutsideImageRegion {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The writable region.
        region: Range<u32>,
    },
    /// A read outside the chip was requested.
    #[error("flash range {start:#x}..{end:#x} is outside the {size:#x}-byte chip")]
    OutOfRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// Chip size.
        size: u32,
    },
    /// The chip refused an erase or program because the area is write-protected.
    #[error("the flash chip refused to {op} at {addr:#x}: the area is write-protected")]
    Protected {
        /// "erase" or "program".
        op: &'static str,
        /// Address of the operation.
        addr: u32,
    },
    /// The chip reported a failed erase or program.
    #[error("the flash chip reported a failed {op} at {addr:#x} (flag status {fsr:#04x})")]
    ChipError {
        /// "erase" or "program".
        op: &'static str,
        /// Address of the operation.
        addr: u32,
        /// Flag status register.
        fsr: u8,
    },
    /// The chip stayed busy too long.
    #[error("the flash chip stayed busy for more than {}s after a {op} at {addr:#x}", BUSY_TIMEOUT.as_secs())]
    BusyTimeout {
        /// "erase" or "program".
        op: &'static str,
        /// Address of the operation.
        addr: u32,
    },
    /// The SPI controller did not shift out its FIFO.
    #[error(
        "the SPI controller did not send its FIFO (status {status:#010x}); reset the card and retry"
    )]
    ControllerStuck {
        /// Controller status register.
        status: u32,
    },
    /// Read-back after writing differs from the image.
    #[error(
        "read-back verify failed at flash {addr:#x}: wrote {expected:#04x}, read {found:#04x}; the image in flash is not valid, flash again"
    )]
    VerifyMismatch {
        /// Flash address of the first differing byte.
        addr: u32,
        /// Byte written.
        expected: u8,
        /// Byte read back.
        found: u8,
    },
    /// The progress callback asked to stop.
    #[error(
        "flash interrupted at {done} of {total} bytes; the image in flash is not valid, flash again"
    )]
    Interrupted {
        /// Bytes of the phase done.
        done: u64,
        /// Bytes of the phase in total.
        total: u64,
    },
    /// An image that does not fit the image region.
    #[error("image of {len} bytes does not fit the {region_len}-byte image region")]
    TooLarge {
        /// Image length.
        len: usize,
        /// Region length.
        region_len: u32,
    },
    /// Register access failed or the card is gone.
    #[error(transparent)]
    Card(#[from] CardError),
}

/// Result alias for flash operations.
pub type Result<T, E = FlashError> = std::result::Result<T, E>;

/// What a long operation is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Erasing and programming 4 KiB blocks.
    Write,
    /// Reading back and comparing.
    Verify,
    /// Reading flash contents.
    Read,
}

/// Progress of a long operation, passed to the caller's callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Bytes of this phase done.
    pub done: u64,
    /// Bytes of this phase in total.
    pub total: u64,
}

/// A progress callback: return `ControlFlow::Break(())` to stop.
pub type ProgressFn<'a> = &'a mut dyn FnMut(Progress) -> ControlFlow<()>;

/// An `OCPC` image found in flash, and whether it passes the driver's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashImage {
    /// Flash address of the header.
    pub offset: u32,
    /// The header, if one parses.
    pub header: Option<ImageHeader>,
    /// The verdict of [`firmware::verify`] against the card's PCI ID.
    pub check: Result<(), ImageError>,
    /// The image bytes (header + payload) when the header's size fits the region.
    pub bytes: Vec<u8>,
}

/// The card's configuration flash, ready for use (see [`TimeCard::flash`]).
#[derive(Debug)]
pub struct Flash<'a> {
    card: &'a TimeCard,
    base: u32,
    chip: &'static Chip,
    status: u8,
    image_start: u32,
}

impl TimeCard {
    /// Resets the card's SPI controller, identifies the flash chip and reads
    /// its protection. Nothing is written to the flash.
    ///
    /// # Errors
    /// No or unsupported controller, unknown chip, access errors.
    pub fn flash(&self) -> Result<Flash<'_>> {
        let board = self.board();
        let base = self
            .layout()
            .spi_flash
            .ok_or(FlashError::NoController(board))?;
        if board == Board::Adva {
            return Err(FlashError::UnsupportedController(board));
        }
        let mut flash = Flash {
            card: self,
            base,
            chip: &nor::CHIPS[0],
            status: 0,
            image_start: self.layout().flash_start,
        };
        flash.reset_controller()?;
        let mut id = [0u8; 3];
        flash.command(&[nor::RDID], &[], &mut id)?;
        flash.chip = nor::chip_by_id(id).ok_or(FlashError::UnknownChip(id))?;
        flash.status = flash.read_status()?;
        Ok(flash)
    }
}

impl Flash<'_> {
    /// The flash chip.
    #[must_use]
    pub fn chip(&self) -> &'static Chip {
        self.chip
    }

    /// The chip's status register as read when the flash was opened.
    #[must_use]
    pub fn status_register(&self) -> u8 {
        self.status
    }

    /// The range the chip's block protection makes read-only.
    #[must_use]
    pub fn protected(&self) -> Range<u32> {
        nor::protected_range(self.status, self.chip.size)
    }

    /// Whether the chip's status register is frozen (SRWD set; with the
    /// board's write-protect pin low, nothing can clear the protection).
    #[must_use]
    pub fn protection_locked(&self) -> bool {
        self.status & nor::SR_SRWD != 0
    }

    /// The golden (loader) image region: below `flash_start`, never written.
    #[must_use]
    pub fn golden_region(&self) -> Range<u32> {
        0..self.image_start
    }

    /// The regular image region: `flash_start` to the end of the chip.
    #[must_use]
    pub fn image_region(&self) -> Range<u32> {
        self.image_start..self.chip.size
    }

    fn reg(&self, off: u32) -> u32 {
        self.base + off
    }

    fn rd(&self, off: u32) -> Result<u32> {
        Ok(self.card.rd(self.reg(off))?)
    }

    fn wr(&self, off: u32, v: u32) -> Result<()> {
        Ok(self.card.wr(self.reg(off), v)?)
    }

    const CR_IDLE: u32 = xspi::CR_SPE | xspi::CR_MASTER | xspi::CR_MANUAL_SS | xspi::CR_INHIBIT;

    fn reset_controller(&self) -> Result<()> {
        self.wr(xspi::SRR, xspi::SRR_RESET)?;
        self.wr(xspi::SSR, xspi::SSR_NONE)?;
        self.wr(
            xspi::CR,
            Self::CR_IDLE | xspi::CR_TXFIFO_RESET | xspi::CR_RXFIFO_RESET,
        )
    }

    /// One SPI command with chip select held throughout: sends `header` and
    /// `out`, then clocks `input.len()` more bytes and stores what the chip
    /// answers for them. Bytes move through the FIFOs in chunks of their depth.
    fn command(&self, header: &[u8], out: &[u8], input: &mut [u8]) -> Result<()> {
        let sent_len = header.len() + out.len();
        let total = sent_len + input.len();
        self.wr(xspi::SSR, xspi::SSR_FLASH)?;
        let result = (|| {
            let mut pos = 0;
            while pos < total {
                let n = (total - pos).min(xspi::FIFO_DEPTH);
                for i in pos..pos + n {
                    let byte = if i < header.len() {
                        header[i]
                    } else if i < sent_len {
                        out[i - header.len()]
                    } else {
                        0xFF
                    };
                    self.wr(xspi::DTR, u32::from(byte))?;
                }
                self.wr(xspi::CR, Self::CR_IDLE & !xspi::CR_INHIBIT)?;
                self.wait_tx_empty()?;
                self.wr(xspi::CR, Self::CR_IDLE)?;
                for i in pos..pos + n {
                    let byte = self.rd(xspi::DRR)? as u8;
                    if i >= sent_len {
                        input[i - sent_len] = byte;
                    }
                }
                pos += n;
            }
            Ok(())
        })();
        // Deselect even after an error: the chip acts on chip-select rising.
        let deselect = self.wr(xspi::SSR, xspi::SSR_NONE);
        result.and(deselect)
    }

    fn wait_tx_empty(&self) -> Result<()> {
        let mut status = 0;
        for _ in 0..FIFO_POLLS {
            status = self.rd(xspi::SR)?;
            if status & xspi::SR_TX_EMPTY != 0 {
                return Ok(());
            }
        }
        Err(FlashError::ControllerStuck { status })
    }

    fn read_status(&self) -> Result<u8> {
        let mut st = [0u8; 1];
        self.command(&[nor::RDSR], &[], &mut st)?;
        Ok(st[0])
    }

    fn flag_status(&self) -> Result<u8> {
        let mut st = [0u8; 1];
        self.command(&[nor::RDFSR], &[], &mut st)?;
        Ok(st[0])
    }

    /// Waits for the chip to finish `op`, then checks and clears its flag status.
    fn finish(&self, op: &'static str, addr: u32) -> Result<()> {
        let deadline = Instant::now() + BUSY_TIMEOUT;
        while self.read_status()? & nor::SR_WIP != 0 {
            if Instant::now() > deadline {
                return Err(FlashError::BusyTimeout { op, addr });
            }
        }
        let fsr = self.flag_status()?;
        let errors = nor::FSR_PROTECTION_ERROR | nor::FSR_ERASE_ERROR | nor::FSR_PROGRAM_ERROR;
        if fsr & errors == 0 {
            return Ok(());
        }
        self.command(&[nor::CLFSR], &[], &mut [])?;
        if fsr & nor::FSR_PROTECTION_ERROR != 0 {
            Err(FlashError::Protected { op, addr })
        } else {
            Err(FlashError::ChipError { op, addr, fsr })
        }
    }

    fn addr_cmd(opcode: u8, addr: u32) -> [u8; CMD_4B] {
        let a = addr.to_be_bytes();
        [opcode, a[0], a[1], a[2], a[3]]
    }

    /// Refuses any write that leaves the image region or touches a protected range.
    fn check_writable(&self, start: u32, len: usize) -> Result<()> {
        let end = u64::from(start) + len as u64;
        let region = self.image_region();
        let protected = self.protected();
        let inside = u64::from(region.start) <= u64::from(start) && end <= u64::from(region.end);
        let overlaps_protection =
            u64::from(protected.start) < end && u64::from(start) < u64::from(protected.end);
        if inside && !overlaps_protection {
            Ok(())
        } else {
            Err(FlashError::OutsideImageRegion {
                start: u64::from(start),
                end,
                region,
            })
        }
    }

    /// Erases the 4 KiB block at `addr` (aligned).
    fn erase_block(&self, addr: u32) -> Result<()> {
        debug_assert!((addr as usize).is_multiple_of(nor::SUBSECTOR));
        self.check_writable(addr, nor::SUBSECTOR)?;
        self.command(&[nor::WREN], &[], &mut [])?;
        self.command(&Self::addr_cmd(nor::SE_4K_4B, addr), &[], &mut [])?;
        self.finish("erase", addr)
    }

    /// Programs `data` (at most one erased 4 KiB block) at `addr`, skipping
    /// pages that are all `0xFF` (already erased).
    fn program_block(&self, addr: u32, data: &[u8]) -> Result<()> {
        debug_assert!(data.len() <= nor::SUBSECTOR);
        self.check_writable(addr, data.len())?;
        for (i, page) in data.chunks(nor::PAGE).enumerate() {
            if page.iter().all(|b| *b == 0xFF) {
                continue;
            }
            let page_addr = addr + (i * nor::PAGE) as u32;
            self.command(&[nor::WREN], &[], &mut [])?;
            self.command(&Self::addr_cmd(nor::PP_4B, page_addr), page, &mut [])?;
            self.finish("program", page_addr)?;
        }
        Ok(())
    }

    /// Whether an image of `len` bytes may be written at `flash_start`: it
    /// must fit the image region and stay clear of protected ranges. Checks
    /// only; nothing is sent to the chip.
    ///
    /// # Errors
    /// [`FlashError::TooLarge`] or [`FlashError::OutsideImageRegion`].
    pub fn check_fits(&self, len: usize) -> Result<()> {
        let region = self.image_region();
        let region_len = region.end - region.start;
        if len > region_len as usize {
            return Err(FlashError::TooLarge { len, region_len });
        }
        self.check_writable(self.image_start, len)
    }

    /// Reads `len` bytes at `addr`.
    ///
    /// # Errors
    /// A range outside the chip, access errors, or [`FlashError::Interrupted`].
    pub fn read(&self, addr: u32, len: usize, progress: ProgressFn<'_>) -> Result<Vec<u8>> {
        self.read_phase(addr, len, Phase::Read, progress)
    }

    fn read_phase(
        &self,
        addr: u32,
        len: usize,
        phase: Phase,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<u8>> {
        let end = u64::from(addr) + len as u64;
        if end > u64::from(self.chip.size) {
            return Err(FlashError::OutOfRange {
                start: u64::from(addr),
                end,
                size: self.chip.size,
            });
        }
        let mut out = vec![0u8; len];
        let total = len as u64;
        for (i, chunk) in out.chunks_mut(READ_CHUNK).enumerate() {
            let at = addr + (i * READ_CHUNK) as u32;
            self.command(&Self::addr_cmd(nor::READ_4B, at), &[], chunk)?;
            let done = ((i + 1) * READ_CHUNK).min(len) as u64;
            if progress(Progress { phase, done, total }).is_break() {
                return Err(FlashError::Interrupted { done, total });
            }
        }
        Ok(out)
    }

    /// Writes a whole image at `flash_start` as `ptp_ocp` does (4 KiB erase +
    /// program per block), header block last, then reads it back and
    /// compares. The caller checks the image itself ([`firmware::verify`]);
    /// this only refuses what could hurt the card (size, region, protection).
    ///
    /// # Errors
    /// [`FlashError::TooLarge`], chip errors, [`FlashError::VerifyMismatch`],
    /// [`FlashError::Interrupted`] when the callback stops it, access errors.
    pub fn write_image(&self, image: &[u8], progress: ProgressFn<'_>) -> Result<()> {
        self.check_fits(image.len())?;
        let blocks: Vec<&[u8]> = image.chunks(nor::SUBSECTOR).collect();
        let total = image.len() as u64;
        let mut done = 0u64;
        // Invalidate first: erase the header block so nothing half-written
        // ever looks like an image, write the rest, then program the header
        // block (already erased) last.
        self.erase_block(self.image_start)?;
        let order = (1..blocks.len()).chain(0..blocks.len().min(1));
        for i in order {
            let addr = self.image_start + (i * nor::SUBSECTOR) as u32;
            if i != 0 {
                self.erase_block(addr)?;
            }
            self.program_block(addr, blocks[i])?;
            done += blocks[i].len() as u64;
            let p = Progress {
                phase: Phase::Write,
                done,
                total,
            };
            if progress(p).is_break() {
                return Err(FlashError::Interrupted { done, total });
            }
        }
        self.verify_at(self.image_start, image, progress)
    }

    /// Reads back `expected.len()` bytes at `addr` and compares.
    ///
    /// # Errors
    /// [`FlashError::VerifyMismatch`] at the first difference, access errors.
    pub fn verify_at(&self, addr: u32, expected: &[u8], progress: ProgressFn<'_>) -> Result<()> {
        let found = self.read_phase(addr, expected.len(), Phase::Verify, progress)?;
        match expected.iter().zip(&found).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(FlashError::VerifyMismatch {
                addr: addr + i as u32,
                expected: expected[i],
                found: found[i],
            }),
        }
    }

    /// Reads and checks the `OCPC` image at `offset` (0 for the golden
    /// image, `flash_start` for the regular one) against the card's PCI ID.
    ///
    /// # Errors
    /// Access errors only; an invalid image is reported in [`FlashImage::check`].
    pub fn image_at(&self, offset: u32) -> Result<FlashImage> {
        let mut quiet = |_| ControlFlow::Continue(());
        let head = self.read(offset, firmware::HEADER_LEN, &mut quiet)?;
        let header = ImageHeader::parse(&head).ok();
        let room = self.chip.size.saturating_sub(offset) as usize;
        let len = header.map_or(0, |h| firmware::HEADER_LEN + h.image_size as usize);
        let bytes = if header.is_some() && len <= room {
            self.read(offset, len, &mut quiet)?
        } else {
            head
        };
        let check = firmware::verify(&bytes, Some(self.card.board().id())).map(|_| ());
        Ok(FlashImage {
            offset,
            header,
            check,
            bytes,
        })
    }
}
