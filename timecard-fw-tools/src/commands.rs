//! The offline commands: `inspect`, `verify`, `pack`, `sim-bitstream`.
//!
//! Each reads its input through [`timecard_fw_tools::input`], builds a
//! report or an image with the library, prints to `out`, and returns the
//! library's typed error (which carries the exit code) on failure.

use std::io::Write;

use anyhow::Context as _;
use timecard_driver::DeviceSpec;
use timecard_fw_tools::check::CheckFailed;
use timecard_fw_tools::check::{Target, VerifyReport};
use timecard_fw_tools::device::{DeviceError, identify};
use timecard_fw_tools::exit::UsageError;
use timecard_fw_tools::input::{InputKind, read_input};
use timecard_fw_tools::inspect::{InspectReport, SimBitstream, board_name};
use timecard_fw_tools::output::{check_output, write_atomic};
use timecard_fw_tools::pack::{check_id, pack_bitstream, sim_bitstream};
use timecard_fw_tools::parse::board_key;
use timecard_hw::firmware::{self, MAGIC};
use timecard_hw::pci::{Board, PciId};
use timecard_sim::card::bitstream_version;

use crate::cli::{InspectArgs, PackArgs, SimBitstreamArgs, TargetArgs, VerifyArgs};

/// Writes `value` as pretty JSON and a newline.
fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).context("writing JSON")?;
    writeln!(out)?;
    Ok(())
}

/// Prints a warning on stderr.
fn warn(message: &str) {
    eprintln!("timecard-fw: warning: {message}");
}

/// `timecard-fw inspect`.
///
/// # Errors
/// Input errors; a missing header ([`CheckFailed`], exit 3).
pub fn inspect(args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let file = args.image.display().to_string();
    let image = read_input(&args.image, InputKind::Image)?;
    let report = InspectReport::new(&file, &image).map_err(|error| CheckFailed {
        file: file.clone(),
        error,
    })?;
    if args.json {
        write_json(out, &report)
    } else {
        report.write_human(out)?;
        Ok(())
    }
}

/// `timecard-fw verify`: prints every check; fails with the first failing one.
///
/// # Errors
/// Input and device errors; [`CheckFailed`] (exit 3 to 6).
pub fn verify(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // A usage mistake is reported before anything is read.
    if args.target.device == Some(DeviceSpec::Embedded) {
        return Err(DeviceError::Embedded.into());
    }
    let file = args.image.display().to_string();
    let image = read_input(&args.image, InputKind::Image)?;
    let target = resolve_target(&args.target)?;
    let report = VerifyReport::new(&file, &image, target);
    if args.json {
        write_json(out, &report)?;
    } else {
        report.write_human(out)?;
    }
    out.flush()?;
    report.result()?;
    Ok(())
}

/// The card named by `--device`, `--board` or `--pci-id`, if any.
fn resolve_target(t: &TargetArgs) -> anyhow::Result<Option<Target>> {
    if let Some(spec) = &t.device {
        let id = identify(spec)?;
        let running = format!("{} {}", id.firmware_kind, id.firmware);
        return Ok(Some(
            Target::new(id.pci_id, format!("--device {spec}")).with_running_firmware(running),
        ));
    }
    if let Some(b) = t.board {
        let b = Board::from(b);
        return Ok(Some(Target::new(
            b.id(),
            format!("--board {}", board_key(b)),
        )));
    }
    Ok(t.pci_id.map(|id| Target::new(id, format!("--pci-id {id}"))))
}

/// `timecard-fw pack`.
///
/// # Errors
/// Usage, input, pack and output errors; nothing is written on error.
pub fn pack(args: &PackArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let id = match (args.board, args.vendor, args.device) {
        (Some(b), _, _) => Board::from(b).id(),
        (None, Some(v), Some(d)) => PciId::new(v, d),
        // clap requires one form; keep a clear message anyway.
        _ => {
            return Err(
                UsageError("give --board NAME, or --vendor V and --device D".into()).into(),
            );
        }
    };
    let board = check_id(id, args.force)?;
    check_output(&args.output, args.force)?;
    let bitstream = read_input(&args.bitstream, InputKind::Bitstream)?;
    if board.is_none() {
        warn(&format!(
            "{id} is not a Time Card ptp_ocp knows; packing anyway (--force)"
        ));
    }
    if bitstream.starts_with(&MAGIC) && args.force {
        warn(&format!(
            "{} already starts with OCPC; wrapping it again (--force)",
            args.bitstream.display()
        ));
    }
    let image = pack_bitstream(&args.bitstream, &bitstream, id, args.hw_rev, args.force)?;
    write_atomic(&args.output, &image, args.force)?;
    let header = firmware::ImageHeader::parse(&image)?;
    writeln!(
        out,
        "packed {} ({} bytes) into {} ({} bytes) for {} ({id}), hw revision {}, CRC-16 0x{:04x}",
        args.bitstream.display(),
        bitstream.len(),
        args.output.display(),
        image.len(),
        board_name(id),
        args.hw_rev,
        header.crc,
    )?;
    if let Some(raw) = bitstream_version(&bitstream) {
        let s = SimBitstream::from_raw(raw);
        writeln!(
            out,
            "the payload is a simulator bitstream: a simulated card boots {}",
            s.boots
        )?;
    }
    Ok(())
}

/// `timecard-fw sim-bitstream`.
///
/// # Errors
/// A size out of range (usage), output errors.
pub fn sim_bitstream_cmd(args: &SimBitstreamArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let bits = sim_bitstream(args.image_version, args.size).map_err(UsageError)?;
    write_atomic(&args.output, &bits, args.force)?;
    let s = SimBitstream::from_raw(args.image_version);
    writeln!(
        out,
        "wrote {}: simulator bitstream, {} bytes, boots {} (raw {}); for the simulator only, a \
         real card cannot boot it",
        args.output.display(),
        bits.len(),
        s.boots,
        s.raw
    )?;
    writeln!(
        out,
        "next: timecard-fw pack {} --board meta -o IMAGE",
        args.output.display()
    )?;
    Ok(())
}
