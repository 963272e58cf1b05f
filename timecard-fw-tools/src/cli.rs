//! The command line: every subcommand, flag and help text (clap derive).
//!
//! Parsing only; the offline commands live in [`crate::commands`], the
//! device ones in [`crate::device_cmds`]. Values clap can check (PCI IDs,
//! versions, sizes, board names) are checked here, so a mistake exits with
//! code 2 before any file is opened.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use timecard_driver::DeviceSpec;
use timecard_fw_tools::exit::HELP_TABLE;
use timecard_fw_tools::parse::{
    parse_hex_u16, parse_image_version, parse_pci_id, parse_size, parse_u16,
};
use timecard_hw::pci::{Board, PciId};

/// `timecard-fw --help`: what the tool is for.
const LONG_ABOUT: &str = "\
timecard-fw: firmware images for the OCP Time Card.

A Time Card's FPGA image travels as an OCPC image: a 16-byte header (magic \"OCPC\", the PCI \
vendor and device it is built for, the payload size, a hardware revision and a CRC-16 of the \
payload) followed by the FPGA bitstream. Linux's ptp_ocp driver flashes such an image with \
`devlink dev flash` after four checks, in this order: magic, vendor/device against the card, \
size, CRC. `timecard-fw` makes the same checks offline, explains an image, and packs a \
bitstream into one; `flash`, `dump` and `info` work on a card through the userspace driver.";

/// `timecard-fw --help`: examples, devices and exit codes.
fn after_help() -> String {
    format!(
        "\
Examples:
  timecard-fw inspect card.img                       what the header says, and whether it holds
  timecard-fw verify card.img --board meta           ptp_ocp's checks against a Meta card
  timecard-fw verify card.img --device sim:/tmp/card.bar
  timecard-fw pack top.bit --board meta -o card.img  wrap a bitstream for a Meta card
  timecard-fw sim-bitstream --image-version 1.21 -o sim.bit   (simulator only)

Devices (--device of verify, flash, dump, info):
  pci:0000:01:00.0   a real card bound to vfio-pci (`timecard list` shows the address)
  sim:PATH           a simulator started with `timecard sim --bar PATH`

{HELP_TABLE}"
    )
}

/// The `timecard-fw` command line.
#[derive(Debug, Parser)]
#[command(
    name = "timecard-fw",
    version,
    about = "Inspect, verify, pack and flash OCPC firmware images for the OCP Time Card",
    long_about = LONG_ABOUT,
    after_help = after_help(),
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show an image's header, checked against its payload
    #[command(
        long_about = "Show everything an OCPC image's header says: the magic, the PCI vendor and \
            device it is built for (with the board's name, or \"unknown device\"), the payload \
            size in the header against the actual payload, the hardware revision, and the CRC-16 \
            in the header against the one computed over the payload. When the payload is a \
            simulator bitstream, also the image version a simulated card boots from it and the \
            driver features that version enables.\n\n\
            The last line is a verdict: valid, or the first check that fails. The compatibility \
            check needs a card: use `verify` for it.",
        after_help = "Examples:\n  timecard-fw inspect card.img\n  \
            timecard-fw inspect card.img --json | jq .crc\n\n\
            Exits with 0 whenever the header can be read, even when the verdict is a failure; \
            3 when the file is not an OCPC image (empty, shorter than the 16-byte header, no \
            OCPC magic); 66 when it cannot be read."
    )]
    Inspect(InspectArgs),

    /// Make the checks ptp_ocp makes before flashing, one by one
    #[command(
        long_about = "Check an image the way Linux's ptp_ocp does before `devlink dev flash` \
            writes it, in the driver's order, stopping at the first failure as the driver does:\n\n\
            1. magic: the file starts with an OCPC header (\"No firmware header found\")\n\
            2. compatibility: the header's vendor/device is the card's (\"Firmware image \
            compatibility check failed\")\n\
            3. size: the header's size is the payload's length (\"Firmware image size check \
            failed\")\n\
            4. CRC: the header's CRC-16 is the payload's (\"Firmware image CRC check failed\")\n\n\
            The card is given by --device (opened with the driver; its PCI ID is used), --board \
            or --pci-id. Without one the compatibility check is skipped, and the output says so.",
        after_help = "Examples:\n  timecard-fw verify card.img\n  \
            timecard-fw verify card.img --board celestica\n  \
            timecard-fw verify card.img --pci-id 1d9b:0400 --json\n  \
            timecard-fw verify card.img --device sim:/tmp/card.bar\n\n\
            Exits with 0 when every check passes; 3 not an OCPC image; 4 built for another \
            board; 5 size check failed; 6 CRC mismatch; 66 unreadable file; 69 the device cannot \
            be used; 2 for --device sim (an embedded simulator would die with this command: \
            start one with `timecard sim --bar PATH` and use --device sim:PATH)."
    )]
    Verify(VerifyArgs),

    /// Wrap a raw FPGA bitstream into an OCPC image
    #[command(
        long_about = "Wrap a raw FPGA bitstream into an OCPC image for one board: the header \
            gets the board's PCI vendor and device, the payload size, --hw-rev and the payload's \
            CRC-16, so the image passes every ptp_ocp check on that board.\n\n\
            The output is written atomically (a temporary file in the same directory, then a \
            rename): on any error no partial file is left.\n\n\
            Refused unless --force: an existing output file; a vendor/device that is not a Time \
            Card ptp_ocp knows; a bitstream that already starts with OCPC (an image, packed \
            twice). Always refused: an empty bitstream, and one larger than the card's 32 MiB \
            flash.\n\n\
            Note: here --device is the PCI device ID that goes into the header (with --vendor); \
            in verify, flash, dump and info --device is a card.",
        after_help = "Examples:\n  timecard-fw pack top.bit --board meta -o card.img\n  \
            timecard-fw pack top.bit --vendor 0x1d9b --device 0x0400 --hw-rev 2 -o card.img\n  \
            timecard-fw pack top.bit --vendor 8086 --device 1533 --force -o test.img\n\n\
            Boards: meta (1d9b:0400), celestica (18d4:1008), orolia-art (1ad7:a000), adva \
            (ad5a:0400), adva-x1 (ad5a:0410).\n\n\
            Exits with 0 when the image is written; 2 for an unknown vendor/device without \
            --force; 66 when the bitstream cannot be read; 1 when it is refused (empty, over 32 \
            MiB, already packed); 73 when the output exists (without --force) or cannot be \
            created."
    )]
    Pack(PackArgs),

    /// Write a simulated card's bitstream (for the simulator only)
    #[command(
        long_about = "Write a bitstream for the Time Card simulator (`timecard sim`), so there \
            is something to pack and flash on a machine without a card. It is not an FPGA \
            bitstream: the simulator recognises its magic (TCSIMBIT) and boots the image-version \
            word it carries, which `timecard status` and `timecard-fw info` then show. A real \
            card cannot boot it.\n\n\
            --image-version is the image-version register value, as tag.version (1.21 = FPGA \
            firmware tag 1, version 21, raw (1<<15)|21 = 0x8015) or raw hex (0x8015). A value \
            whose low 16 bits are zero is refused: it would read as the golden loader.",
        after_help = "Examples:\n  timecard-fw sim-bitstream --image-version 1.21 -o sim.bit\n  \
            timecard-fw pack sim.bit --board meta -o sim.img\n  \
            timecard-fw flash sim.img --device sim:/tmp/card.bar\n\n\
            Exits with 0 when written; 2 for a bad version or size; 73 when the output exists \
            (without --force) or cannot be created."
    )]
    SimBitstream(SimBitstreamArgs),

    /// Write an image to a card's SPI flash (checks first, never the golden image)
    #[command(
        long_about = "Write an OCPC image to a card's SPI flash at the board's flash_start, \
            after ptp_ocp's checks against the card, then read it back to verify. The golden \
            (loader) image is never touched.",
        after_help = "Examples:\n  timecard-fw flash card.img --device sim:/tmp/card.bar --dry-run\n  \
            timecard-fw flash card.img --device pci:0000:01:00.0"
    )]
    Flash(FlashArgs),

    /// Read a card's flash (the image region, the golden image, or all) into a file
    #[command(
        after_help = "Examples:\n  timecard-fw dump --device sim:/tmp/card.bar -o card-backup.img\n  \
            timecard-fw dump --device pci:0000:01:00.0 --region all -o flash.bin"
    )]
    Dump(DumpArgs),

    /// Show a card's running firmware and the image in its flash
    #[command(
        after_help = "Examples:\n  timecard-fw info --device sim:/tmp/card.bar\n  \
            timecard-fw info --device pci:0000:01:00.0 --json"
    )]
    Info(InfoArgs),
}

/// A board by its short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BoardArg {
    /// Meta OCP Time Card (1d9b:0400), the reference design
    Meta,
    /// Celestica Time Card (18d4:1008)
    Celestica,
    /// Orolia ART card (1ad7:a000)
    OroliaArt,
    /// ADVA Time Card (ad5a:0400)
    Adva,
    /// ADVA Time Card X1 (ad5a:0410)
    AdvaX1,
}

impl From<BoardArg> for Board {
    fn from(b: BoardArg) -> Self {
        match b {
            BoardArg::Meta => Board::Meta,
            BoardArg::Celestica => Board::Celestica,
            BoardArg::OroliaArt => Board::OroliaArt,
            BoardArg::Adva => Board::Adva,
            BoardArg::AdvaX1 => Board::AdvaX1,
        }
    }
}

/// Flags of `timecard-fw inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The OCPC image file
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Print one JSON object instead of the aligned text
    #[arg(long)]
    pub json: bool,
}

/// Flags of `timecard-fw verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The OCPC image file
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// The card to check against.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Print one JSON object (every check, verdict, exit code) instead of the table
    #[arg(long)]
    pub json: bool,
}

/// The card an image is checked against: at most one way of naming it.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct TargetArgs {
    /// A card: `pci:0000:01:00.0` (bound to vfio-pci) or `sim:PATH` (a running
    /// `timecard sim --bar PATH`); its PCI ID is read from the card
    #[arg(long, value_name = "DEV")]
    pub device: Option<DeviceSpec>,

    /// A board model, without a card
    #[arg(long, value_enum, value_name = "NAME")]
    pub board: Option<BoardArg>,

    /// A PCI vendor:device in hex, without a card (e.g. 1d9b:0400)
    #[arg(long, value_name = "VVVV:DDDD", value_parser = parse_pci_id)]
    pub pci_id: Option<PciId>,
}

/// Flags of `timecard-fw pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The raw FPGA bitstream to wrap
    #[arg(value_name = "BITSTREAM")]
    pub bitstream: PathBuf,

    /// The board the image is for (sets the vendor and device IDs)
    #[arg(
        long,
        value_enum,
        value_name = "NAME",
        required_unless_present_any = ["vendor", "device"],
        conflicts_with_all = ["vendor", "device"]
    )]
    pub board: Option<BoardArg>,

    /// PCI vendor ID for the header, hex (0x1d9b or 1d9b); needs --device
    #[arg(long, value_name = "V", value_parser = parse_hex_u16, requires = "device")]
    pub vendor: Option<u16>,

    /// PCI device ID for the header, hex (0x0400 or 0400); needs --vendor.
    /// (Not a card, unlike --device of verify/flash.)
    #[arg(long, value_name = "D", value_parser = parse_hex_u16, requires = "vendor")]
    pub device: Option<u16>,

    /// Hardware revision for the header, decimal or 0x hex (the driver does not check it)
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_u16)]
    pub hw_rev: u16,

    /// Where to write the image
    #[arg(short = 'o', long = "output", value_name = "IMAGE")]
    pub output: PathBuf,

    /// Overwrite an existing output; allow an unknown vendor/device and an
    /// input that is already an OCPC image
    #[arg(long)]
    pub force: bool,
}

/// Flags of `timecard-fw sim-bitstream`.
#[derive(Debug, Args)]
pub struct SimBitstreamArgs {
    /// Image-version register value to boot: tag.version (1.21) or raw hex (0x8015)
    #[arg(long, value_name = "V", value_parser = parse_image_version)]
    pub image_version: u32,

    /// Where to write the bitstream
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// Bitstream length: bytes, or with K/M (64K, 1M); 12 bytes to 32 MiB
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_size)]
    pub size: usize,

    /// Overwrite an existing output file
    #[arg(long)]
    pub force: bool,
}

/// When to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// When stderr is a terminal
    Auto,
    /// Always
    Always,
    /// Never
    Never,
}

/// Which part of the flash to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Region {
    /// The regular image at the board's flash_start
    Image,
    /// The golden (loader) image
    Golden,
    /// The whole flash
    All,
}

/// Flags of `timecard-fw flash`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// The OCPC image file to write
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// The card: `pci:0000:01:00.0` or `sim:PATH`
    #[arg(long, value_name = "DEV")]
    pub device: DeviceSpec,

    /// Flash even if the image is for another board
    #[arg(long)]
    pub force: bool,

    /// Check everything, write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Progress display on stderr
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Flags of `timecard-fw dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The card: `pci:0000:01:00.0` or `sim:PATH`
    #[arg(long, value_name = "DEV")]
    pub device: DeviceSpec,

    /// Where to write what was read
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// Which part of the flash to read
    #[arg(long, value_enum, default_value_t = Region::Image)]
    pub region: Region,

    /// Overwrite an existing output file
    #[arg(long)]
    pub force: bool,
}

/// Flags of `timecard-fw info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The card: `pci:0000:01:00.0` or `sim:PATH`
    #[arg(long, value_name = "DEV")]
    pub device: DeviceSpec,

    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pack_target_forms() {
        let ok = Cli::try_parse_from(["timecard-fw", "pack", "b", "--board", "meta", "-o", "x"]);
        assert!(ok.is_ok());
        let ok = Cli::try_parse_from([
            "timecard-fw",
            "pack",
            "b",
            "--vendor",
            "0x1d9b",
            "--device",
            "0400",
            "-o",
            "x",
        ]);
        assert!(ok.is_ok());
        for bad in [
            vec!["timecard-fw", "pack", "b", "-o", "x"],
            vec!["timecard-fw", "pack", "b", "--vendor", "1d9b", "-o", "x"],
            vec![
                "timecard-fw",
                "pack",
                "b",
                "--board",
                "meta",
                "--vendor",
                "1d9b",
                "--device",
                "1",
                "-o",
                "x",
            ],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verify_takes_at_most_one_target() {
        assert!(Cli::try_parse_from(["timecard-fw", "verify", "i", "--board", "meta"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "timecard-fw",
                "verify",
                "i",
                "--board",
                "meta",
                "--pci-id",
                "1d9b:0400"
            ])
            .is_err()
        );
    }
}
