//! `flash`, `dump` and `info`: the commands that work on a card's flash,
//! through the driver's SPI flash access (`timecard_driver::flash`).
//!
//! `flash` checks the image as `ptp_ocp` does (magic, board, size, CRC)
//! before it opens the flash, refuses another board's image unless
//! `--force`, writes the regular image region in 4 KiB blocks with a
//! progress bar, reads everything back, and reports the running and the
//! flashed version. The golden image region is out of reach: the driver
//! refuses it and the chip's locked block protection would too. Ctrl-C
//! stops at the next block boundary (a second Ctrl-C kills); either way the
//! image in flash is then invalid and the card boots its golden image after
//! the next reset until a flash completes.

use std::io::{IsTerminal as _, Write};
use std::ops::{ControlFlow, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use timecard_driver::flash::{Flash, FlashError, FlashImage, Phase};
use timecard_driver::{CardError, Identity, TimeCard};
use timecard_fw_tools::check::{Target, VerifyReport};
use timecard_fw_tools::device::{DeviceError, open_card};
use timecard_fw_tools::exit::{EX_INCOMPATIBLE, EX_IOERR, EX_REFUSED, EX_UNAVAILABLE, Failure};
use timecard_fw_tools::input::{InputKind, read_input};
use timecard_fw_tools::inspect::{SimBitstream, board_name, capability_words, write_rows};
use timecard_fw_tools::output::{check_output, write_atomic};
use timecard_fw_tools::progress::{self, Bar, Mode};
use timecard_hw::firmware::{self, ImageError};
use timecard_sim::card::bitstream_version;

use crate::cli::{DumpArgs, FlashArgs, InfoArgs, Progress, Region};

/// Writes `value` as pretty JSON and a newline.
fn write_json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).context("writing JSON")?;
    writeln!(out)?;
    Ok(())
}

/// The exit code a flash error selects: 69 when the card cannot be used,
/// 75 when we refused, 74 for I/O, interruption or a failed read-back.
fn flash_failure(err: FlashError, device: &str) -> Failure {
    let code = match &err {
        FlashError::NoController(_)
        | FlashError::UnsupportedController(_)
        | FlashError::Card(CardError::CardGone) => EX_UNAVAILABLE,
        FlashError::UnknownChip(_)
        | FlashError::OutsideImageRegion { .. }
        | FlashError::OutOfRange { .. }
        | FlashError::Protected { .. }
        | FlashError::TooLarge { .. } => EX_REFUSED,
        _ => EX_IOERR,
    };
    Failure::new(code, format!("{device}: {err}"))
}

/// The progress mode `--progress` asks for.
fn progress_mode(p: Progress) -> Mode {
    match p {
        Progress::Never => Mode::Off,
        Progress::Always if !std::io::stderr().is_terminal() => Mode::Lines,
        Progress::Always => Mode::Terminal,
        Progress::Auto if std::io::stderr().is_terminal() => Mode::Terminal,
        Progress::Auto => Mode::Off,
    }
}

/// A progress callback that draws `bar` and stops when `stop` is set.
fn reporter<'a>(
    bar: &'a mut Bar,
    stop: &'a AtomicBool,
) -> impl FnMut(timecard_driver::flash::Progress) -> ControlFlow<()> + 'a {
    move |p| {
        let label = match p.phase {
            Phase::Write => "writing",
            Phase::Verify => "verify",
            Phase::Read => "reading",
        };
        bar.update(label, p.done, p.total);
        if stop.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// SIGINT/SIGTERM set a flag the progress callback checks; a second signal
/// terminates at once.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Firmware running on the card, for people: `fw 1.20`.
fn running(id: &Identity) -> String {
    format!("{} {}", id.firmware_kind, id.firmware)
}

/// The simulated bitstream an image carries, if it is one.
fn sim_bitstream(image: &[u8]) -> Option<SimBitstream> {
    bitstream_version(firmware::payload(image)).map(SimBitstream::from_raw)
}

/// Running firmware, as reported.
#[derive(Debug, Serialize)]
struct RunningReport {
    /// `fw` or `loader`.
    kind: &'static str,
    /// `<tag>.<version>`.
    version: String,
    /// Image version register.
    register: String,
    /// Features it enables.
    capabilities: timecard_hw::regs::image::Capabilities,
}

impl RunningReport {
    fn new(id: &Identity) -> Self {
        Self {
            kind: id.firmware_kind,
            version: id.firmware.to_string(),
            register: format!("0x{:08x}", id.firmware.raw),
            capabilities: id.capabilities,
        }
    }
}

/// What `flash` did.
#[derive(Debug, Serialize)]
struct FlashReport {
    device: String,
    board: &'static str,
    pci_id: String,
    image_file: String,
    image_bytes: usize,
    /// Flash range written, `0x400000..0x410010`.
    flash_range: String,
    chip: &'static str,
    /// The golden region and whether the chip's protection covers it.
    golden_region: String,
    golden_protected: bool,
    running: RunningReport,
    /// What the flashed image boots, when it is a simulator bitstream.
    flashed: Option<SimBitstream>,
    forced: bool,
    dry_run: bool,
    /// Read back and compared (false for a dry run).
    verified: bool,
    seconds: f64,
    bytes_per_second: f64,
}

fn range(r: &Range<u32>) -> String {
    format!("0x{:06x}..0x{:06x}", r.start, r.end)
}

/// Opens the card and its flash, mapping failures to exit codes.
fn open(spec: &timecard_driver::DeviceSpec) -> anyhow::Result<TimeCard> {
    Ok(open_card(spec)?)
}

fn identify(card: &TimeCard, device: &str) -> anyhow::Result<Identity> {
    card.identify().map_err(|source| {
        DeviceError::Identify {
            device: device.to_string(),
            source,
        }
        .into()
    })
}

/// `timecard-fw flash`: writes an image to the card's flash.
///
/// # Errors
/// Input errors, failed image checks (3–6), a device that cannot be used
/// (69), refusals (4 for another board, 75), flash failures (74).
pub fn flash(args: &FlashArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let file = args.image.display().to_string();
    let device = args.device.to_string();
    let image = read_input(&args.image, InputKind::Image)?;
    // Magic, size and CRC before anything touches the card.
    VerifyReport::new(&file, &image, None).result()?;
    let card = open(&args.device)?;
    let id = identify(&card, &device)?;
    let report = VerifyReport::new(
        &file,
        &image,
        Some(
            Target::new(id.pci_id, format!("--device {device}"))
                .with_running_firmware(running(&id)),
        ),
    );
    let forced = match report.result() {
        Ok(_) => false,
        Err(e) if matches!(e.error, ImageError::Incompatible { .. }) && args.force => {
            eprintln!(
                "timecard-fw: warning: --force: writing an image for {} onto a {}; the card will most \
                 likely not boot it and fall back to its golden image",
                board_name(firmware::ImageHeader::parse(&image)?.id()),
                id.board.name()
            );
            true
        }
        Err(e) if matches!(e.error, ImageError::Incompatible { .. }) => {
            return Err(Failure::new(
                EX_INCOMPATIBLE,
                format!("{e}; refusing to flash it (--force overrides)"),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let flash = card.flash().map_err(|e| flash_failure(e, &device))?;
    let start = flash.image_region().start;
    let written = start..start + image.len() as u32;
    let mut result = FlashReport {
        device: device.clone(),
        board: id.board.name(),
        pci_id: id.pci_id.to_string(),
        image_file: file,
        image_bytes: image.len(),
        flash_range: range(&written),
        chip: flash.chip().name,
        golden_region: range(&flash.golden_region()),
        golden_protected: flash.protected().start == 0
            && flash.protected().end >= flash.golden_region().end,
        running: RunningReport::new(&id),
        flashed: sim_bitstream(&image),
        forced,
        dry_run: args.dry_run,
        verified: false,
        seconds: 0.0,
        bytes_per_second: 0.0,
    };
    flash
        .check_fits(image.len())
        .map_err(|e| flash_failure(e, &device))?;
    if !args.dry_run {
        let stop = stop_on_signals()?;
        let mut bar = Bar::new(progress_mode(args.progress));
        let t = Instant::now();
        flash
            .write_image(&image, &mut reporter(&mut bar, &stop))
            .map_err(|e| flash_failure(e, &device))?;
        drop(bar);
        result.verified = true;
        result.seconds = t.elapsed().as_secs_f64();
        result.bytes_per_second = image.len() as f64 / result.seconds.max(1e-9);
    }
    if args.json {
        return write_json(out, &result);
    }
    write_flash_text(&result, out)
}

fn write_flash_text(r: &FlashReport, out: &mut dyn Write) -> anyhow::Result<()> {
    let verb = if r.dry_run { "would write" } else { "wrote" };
    let mut rows = vec![
        (
            "device",
            format!("{} ({}, {})", r.device, r.board, r.pci_id),
        ),
        ("flash chip", r.chip.to_string()),
        (
            "golden image",
            format!(
                "{} {}",
                r.golden_region,
                if r.golden_protected {
                    "write-protected by the chip, never written"
                } else {
                    "never written (chip protection not set)"
                }
            ),
        ),
        (
            "image",
            format!(
                "{verb} {} ({}) to flash {}",
                r.image_file,
                progress::bytes(r.image_bytes as f64),
                r.flash_range
            ),
        ),
    ];
    if !r.dry_run {
        rows.push((
            "result",
            format!(
                "erased, programmed and read back in {:.1}s ({}/s): verified",
                r.seconds,
                progress::bytes(r.bytes_per_second)
            ),
        ));
    }
    rows.push((
        "running",
        format!(
            "{} {} (image register {})",
            r.running.kind, r.running.version, r.running.register
        ),
    ));
    let after = if r.dry_run { "would boot" } else { "boots" };
    rows.push((
        "flashed",
        match &r.flashed {
            Some(sim) => format!(
                "{after} {} after the next FPGA reset; capabilities: {}",
                sim.boots,
                capability_words(sim.capabilities)
            ),
            None => format!("{after} after the next FPGA reset (its version shows once it runs)"),
        },
    ));
    write_rows(out, &rows)?;
    if !r.dry_run {
        writeln!(
            out,
            "\nReset the FPGA to run it: power-cycle the host (on the simulator: \
             `timecard sim fault --bar PATH reset-fpga`), then `timecard status --device {}`.",
            r.device
        )?;
    }
    Ok(())
}

/// One image found in flash, as `info` and `dump` report it.
#[derive(Debug, Serialize)]
struct ImageReport {
    offset: String,
    valid: bool,
    /// The first failing check, if any.
    problem: Option<String>,
    bytes: Option<usize>,
    hw_revision: Option<u16>,
    simulator_bitstream: Option<SimBitstream>,
}

impl ImageReport {
    fn new(img: &FlashImage) -> Self {
        Self {
            offset: format!("0x{:06x}", img.offset),
            valid: img.check.is_ok(),
            problem: img.check.as_ref().err().map(ToString::to_string),
            bytes: img
                .header
                .map(|h| firmware::HEADER_LEN + h.image_size as usize),
            hw_revision: img.header.map(|h| h.hw_revision),
            simulator_bitstream: if img.check.is_ok() {
                sim_bitstream(&img.bytes)
            } else {
                None
            },
        }
    }

    fn describe(&self) -> String {
        match (&self.problem, &self.simulator_bitstream) {
            (Some(p), _) => format!("{}: INVALID: {p}", self.offset),
            (None, sim) => format!(
                "{}: valid, {}, hw rev {}{}",
                self.offset,
                progress::bytes(self.bytes.unwrap_or(0) as f64),
                self.hw_revision.unwrap_or(0),
                sim.as_ref()
                    .map(|s| format!(", boots {}", s.boots))
                    .unwrap_or_default()
            ),
        }
    }
}

/// What `info` shows.
#[derive(Debug, Serialize)]
struct InfoReport {
    device: String,
    board: &'static str,
    pci_id: String,
    running: RunningReport,
    /// Set when the golden image runs: what to do.
    action: Option<String>,
    chip: &'static str,
    jedec_id: String,
    chip_bytes: u32,
    status_register: String,
    protected: String,
    protection_locked: bool,
    golden: ImageReport,
    regular: ImageReport,
}

fn flash_of<'a>(card: &'a TimeCard, device: &str) -> Result<Flash<'a>, Failure> {
    card.flash().map_err(|e| flash_failure(e, device))
}

fn read_image(flash: &Flash<'_>, offset: u32, device: &str) -> Result<FlashImage, Failure> {
    flash.image_at(offset).map_err(|e| flash_failure(e, device))
}

/// `timecard-fw info`: the card's running firmware and the images in its flash.
///
/// # Errors
/// A device that cannot be used (69), flash read failures (74).
pub fn info(args: &InfoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let device = args.device.to_string();
    let card = open(&args.device)?;
    let id = identify(&card, &device)?;
    let flash = flash_of(&card, &device)?;
    let chip = flash.chip();
    let golden = ImageReport::new(&read_image(&flash, 0, &device)?);
    let regular = ImageReport::new(&read_image(&flash, flash.image_region().start, &device)?);
    let r = InfoReport {
        device: device.clone(),
        board: id.board.name(),
        pci_id: id.pci_id.to_string(),
        running: RunningReport::new(&id),
        action: id.firmware.loader.then(|| {
            format!(
                "image invalid, reflash: the golden image runs because the regular image did not boot; \
                 run `timecard-fw flash IMAGE --device {device}`"
            )
        }),
        chip: chip.name,
        jedec_id: chip.jedec_id.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
        chip_bytes: chip.size,
        status_register: format!("0x{:02x}", flash.status_register()),
        protected: range(&flash.protected()),
        protection_locked: flash.protection_locked(),
        golden,
        regular,
    };
    if args.json {
        return write_json(out, &r);
    }
    let mut rows = vec![
        (
            "device",
            format!("{} ({}, {})", r.device, r.board, r.pci_id),
        ),
        (
            "running",
            format!(
                "{} {} (image register {}); capabilities: {}",
                r.running.kind,
                r.running.version,
                r.running.register,
                capability_words(r.running.capabilities)
            ),
        ),
    ];
    if let Some(a) = &r.action {
        rows.push(("", a.clone()));
    }
    rows.extend([
        (
            "flash chip",
            format!(
                "{} (JEDEC {}), {}",
                r.chip,
                r.jedec_id,
                progress::bytes(f64::from(r.chip_bytes))
            ),
        ),
        (
            "protection",
            format!(
                "{} write-protected (status register {}{})",
                r.protected,
                r.status_register,
                if r.protection_locked {
                    ", locked: SRWD set with the write-protect pin low"
                } else {
                    ""
                }
            ),
        ),
        ("golden image", r.golden.describe()),
        ("regular image", r.regular.describe()),
    ]);
    if let Some(sim) = &r.regular.simulator_bitstream
        && sim.raw != r.running.register
    {
        rows.push((
            "",
            format!(
                "the regular image differs from what runs: {} runs after the next FPGA reset",
                sim.boots
            ),
        ));
    }
    write_rows(out, &rows)?;
    Ok(())
}

/// `timecard-fw dump`: reads a flash region into a file.
///
/// # Errors
/// An existing output without `--force` (73), a device that cannot be used
/// (69), flash read failures (74).
pub fn dump(args: &DumpArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check_output(&args.output, args.force)?;
    let device = args.device.to_string();
    let card = open(&args.device)?;
    let flash = flash_of(&card, &device)?;
    let (what, region) = match args.region {
        Region::Image => ("regular image", flash.image_region()),
        Region::Golden => ("golden image", flash.golden_region()),
        Region::All => ("whole flash", 0..flash.chip().size),
    };
    // An image region holding a valid image is dumped exactly; otherwise all of it.
    let (span, note) = match args.region {
        Region::All => (region.clone(), String::new()),
        _ => {
            let img = read_image(&flash, region.start, &device)?;
            match (&img.check, img.header) {
                (Ok(()), Some(h)) => (
                    region.start..region.start + (firmware::HEADER_LEN as u32 + h.image_size),
                    "valid OCPC image".to_string(),
                ),
                (Err(e), _) => (
                    region.clone(),
                    format!("no valid image ({e}); dumped the whole region"),
                ),
                (Ok(()), None) => (region.clone(), String::new()),
            }
        }
    };
    let stop = stop_on_signals()?;
    let mut bar = Bar::new(progress_mode(Progress::Auto));
    let t = Instant::now();
    let data = flash
        .read(span.start, span.len(), &mut reporter(&mut bar, &stop))
        .map_err(|e| flash_failure(e, &device))?;
    let secs = t.elapsed().as_secs_f64();
    write_atomic(&args.output, &data, args.force)?;
    let mut rows = vec![
        (
            "read",
            format!(
                "{what} {} of {device} ({}) in {secs:.1}s",
                range(&span),
                progress::bytes(data.len() as f64)
            ),
        ),
        ("wrote", args.output.display().to_string()),
    ];
    if !note.is_empty() {
        rows.push(("content", note));
    }
    write_rows(out, &rows)?;
    Ok(())
}
