//! `timecard status`: a card's identity, time and status, once.
//!
//! Status fields carry the names of `ptp_ocp`'s sysfs attributes (and
//! debugfs fields), so the output reads like `/sys/class/timecard/ocp0/` on a
//! machine where the kernel drives the card. A simulated card adds its ground
//! truth, in a section of its own.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::Serialize;
use timecard_driver::{DeviceSpec, TimeCard};
use timecard_hw::civil::TAI_UTC_2017;
use timecard_hw::pci::Board;
use timecard_hw::regs::ClockSource;
use timecard_hw::regs::image::Capabilities;
use timecard_sim::SimSnapshot;

use crate::cli::StatusArgs;
use crate::device;
use crate::render;

/// Nanoseconds per second.
const NS_PER_S: i64 = 1_000_000_000;

/// Everything `timecard status` reports.
#[derive(Debug, Serialize)]
struct StatusReport {
    /// The device as given (`sim`, `sim:PATH`, `pci:…`).
    device: String,
    /// Backend description from the driver.
    backend: String,
    /// Board model.
    board: Board,
    /// Board model, for people.
    board_name: &'static str,
    /// PCI vendor:device.
    pci_id: String,
    /// Running firmware, `<tag>.<version>` as devlink shows it.
    firmware: String,
    /// "fw", or "loader" for the golden image.
    firmware_kind: &'static str,
    /// The image version register.
    firmware_register: String,
    /// Optional features the firmware has.
    capabilities: Capabilities,
    /// What to do about the firmware, when the golden image is running.
    #[serde(skip_serializing_if = "Option::is_none")]
    firmware_action: Option<String>,
    /// Clock IP core version `major.minor.patch`.
    clock_ip_version: String,
    /// The GNSS receiver's serial port, if known.
    gnss_serial: Option<PathBuf>,
    /// The card's time with the host bracket.
    time: TimeReport,
    /// Card status under `ptp_ocp`'s sysfs names.
    status: SysfsStatus,
    /// Simulator ground truth (only for a simulated card).
    #[serde(skip_serializing_if = "Option::is_none")]
    simulator_ground_truth: Option<SimSnapshot>,
}

/// The card's time.
#[derive(Debug, Serialize)]
struct TimeReport {
    /// Card time (TAI), ns since the epoch.
    card_tai_ns: i64,
    /// Card time (TAI) as a calendar time.
    card_tai: String,
    /// Card time as UTC, RFC 3339.
    card_utc: String,
    /// TAI − UTC used, seconds.
    utc_tai_offset: i32,
    /// The offset came from the card (else 37 s is assumed).
    utc_tai_offset_from_card: bool,
    /// Host `CLOCK_REALTIME` before the read, ns.
    host_pre_ns: i64,
    /// Host `CLOCK_REALTIME` after the read (minus `ts_window_adjust`), ns.
    host_post_ns: i64,
    /// Card UTC minus the bracket's midpoint, ns.
    card_minus_host_ns: i64,
}

/// Status as `ptp_ocp` names it in sysfs (and debugfs for the TOD fields).
#[derive(Debug, Serialize)]
struct SysfsStatus {
    /// "SYNC", or "LOST" while the PPS supervision error is set.
    gnss_sync: &'static str,
    /// Active clock source.
    clock_source: String,
    /// Every source the driver can select.
    available_clock_sources: String,
    /// TAI − UTC from the TOD block, seconds (meaningful when valid).
    utc_tai_offset: i32,
    /// Whether the receiver has reported the offset.
    utc_tai_offset_valid: bool,
    /// Servo offset, ns.
    clock_status_offset: i64,
    /// Servo drift.
    clock_status_drift: i64,
    /// ns subtracted from the host bracket's end.
    ts_window_adjust: i64,
    /// Clock `IN_SYNC` bit.
    in_sync: bool,
    /// Clock `IN_HOLDOVER` bit.
    in_holdover: bool,
    /// A leap second is announced.
    leap_announce: bool,
    /// The announced leap is +1 (61-second minute) or −1 (59), 0 if none.
    leap_delta: i32,
    /// Seconds to the announced leap second.
    seconds_to_leap: i32,
    /// TOD antenna-status register.
    antenna_status: u32,
    /// Its bits in words.
    antenna: Vec<&'static str>,
    /// Satellites used.
    satellites_used: u8,
    /// Satellites seen.
    satellites_seen: u8,
    /// TOD protocol.
    tod_protocol: &'static str,
    /// TOD parser status (nonzero: errors).
    tod_status: u32,
    /// PPS period filter error.
    pps_filter_error: bool,
}

/// Reads everything from `card`.
fn report(spec: &DeviceSpec, card: &TimeCard, truth: Option<SimSnapshot>) -> Result<StatusReport> {
    let id = card.identify().context("reading the card's identity")?;
    let st = card.status().context("reading the card's status")?;
    let reading = card.read_time().context("reading the card's time")?;
    let (offset, from_card) = if st.utc.utc_valid {
        (i32::from(st.utc.offset_s), true)
    } else {
        (TAI_UTC_2017, false)
    };
    let card_utc_ns = reading.card_tai_ns - i64::from(offset) * NS_PER_S;
    let (major, minor, patch) = id.clock_ip_version;
    Ok(StatusReport {
        device: spec.to_string(),
        backend: id.backend,
        board: id.board,
        board_name: id.board.name(),
        pci_id: id.pci_id.to_string(),
        firmware: id.firmware.to_string(),
        firmware_kind: id.firmware_kind,
        firmware_register: format!("{:#010x}", id.firmware.raw),
        capabilities: id.capabilities,
        firmware_action: id.firmware.loader.then(|| {
            format!(
                "image invalid, reflash: the golden (loader) image is running because the regular image \
                 did not boot (missing, corrupt or an interrupted update); flash it with \
                 `timecard-fw flash IMAGE --device {spec}`"
            )
        }),
        clock_ip_version: format!("{major}.{minor}.{patch}"),
        gnss_serial: card.gnss_serial().map(PathBuf::from),
        time: TimeReport {
            card_tai_ns: reading.card_tai_ns,
            card_tai: render::tai(reading.card_tai_ns),
            card_utc: render::utc(card_utc_ns),
            utc_tai_offset: offset,
            utc_tai_offset_from_card: from_card,
            host_pre_ns: reading.pre_ns,
            host_post_ns: reading.post_ns,
            card_minus_host_ns: card_utc_ns
                - (reading.pre_ns + (reading.post_ns - reading.pre_ns) / 2),
        },
        status: SysfsStatus {
            gnss_sync: if st.pps_lost { "LOST" } else { "SYNC" },
            clock_source: st
                .clock_source
                .map_or_else(|| "unknown".to_owned(), |s| s.name().to_owned()),
            available_clock_sources: ClockSource::ALL.map(ClockSource::name).join(" "),
            utc_tai_offset: i32::from(st.utc.offset_s),
            utc_tai_offset_valid: st.utc.utc_valid,
            clock_status_offset: st.servo_offset_ns,
            clock_status_drift: st.servo_drift,
            ts_window_adjust: st.ts_window_adjust_ns,
            in_sync: st.in_sync,
            in_holdover: st.in_holdover,
            leap_announce: st.utc.leap_announce,
            leap_delta: if !st.utc.leap_announce {
                0
            } else if st.utc.leap_59 {
                -1
            } else {
                1
            },
            seconds_to_leap: st.seconds_to_leap,
            antenna_status: st.antenna_status,
            antenna: render::antenna_flags(st.antenna_status),
            satellites_used: st.satellites.0,
            satellites_seen: st.satellites.1,
            tod_protocol: st.tod_protocol,
            tod_status: st.tod_status,
            pps_filter_error: st.pps_filter_error,
        },
        simulator_ground_truth: truth,
    })
}

/// Writes the report as text.
fn write_text(r: &StatusReport, out: &mut dyn Write) -> Result<()> {
    let caps = {
        let mut c = vec!["basic"];
        if r.capabilities.signal {
            c.push("signal generators");
        }
        if r.capabilities.freq {
            c.push("frequency counters");
        }
        c.join(", ")
    };
    writeln!(out, "Time Card      {} ({})", r.board_name, r.pci_id)?;
    writeln!(out, "device         {}  (backend {})", r.device, r.backend)?;
    writeln!(
        out,
        "firmware       {} {}  (image register {}); capabilities: {caps}",
        r.firmware_kind, r.firmware, r.firmware_register
    )?;
    if let Some(action) = &r.firmware_action {
        writeln!(out, "               {action}")?;
    }
    writeln!(out, "clock IP       v{}", r.clock_ip_version)?;
    if let Some(tty) = &r.gnss_serial {
        writeln!(out, "GNSS serial    {}", tty.display())?;
    }

    let t = &r.time;
    writeln!(out, "\nTime")?;
    writeln!(out, "  card TAI       {}", t.card_tai)?;
    writeln!(
        out,
        "  card UTC       {}  (TAI-UTC {} s, {})",
        t.card_utc,
        t.utc_tai_offset,
        if t.utc_tai_offset_from_card {
            "from the card"
        } else {
            "assumed: the card has no valid UTC offset yet"
        }
    )?;
    writeln!(
        out,
        "  host bracket   {}, {} wide",
        render::utc(t.host_pre_ns),
        render::signed_ns(t.host_post_ns - t.host_pre_ns)
    )?;
    writeln!(
        out,
        "  card - host    {}  (card UTC minus the bracket's midpoint)",
        render::signed_ns(t.card_minus_host_ns)
    )?;

    let s = &r.status;
    let leap = if s.leap_announce {
        format!(
            "{:+} announced ({}-second last minute), seconds_to_leap {}",
            s.leap_delta,
            60 + s.leap_delta,
            s.seconds_to_leap
        )
    } else {
        "none announced".to_owned()
    };
    writeln!(out, "\nStatus (ptp_ocp sysfs names)")?;
    writeln!(out, "  gnss_sync                 {}", s.gnss_sync)?;
    writeln!(out, "  clock_source              {}", s.clock_source)?;
    writeln!(
        out,
        "  available_clock_sources   {}",
        s.available_clock_sources
    )?;
    if s.utc_tai_offset_valid {
        writeln!(out, "  utc_tai_offset            {}", s.utc_tai_offset)?;
    } else {
        writeln!(
            out,
            "  utc_tai_offset            - (the GNSS receiver has not reported it yet)"
        )?;
    }
    writeln!(out, "  clock_status_offset       {}", s.clock_status_offset)?;
    writeln!(out, "  clock_status_drift        {}", s.clock_status_drift)?;
    writeln!(out, "  ts_window_adjust          {}", s.ts_window_adjust)?;
    writeln!(
        out,
        "  in_sync / in_holdover     {} / {}",
        s.in_sync, s.in_holdover
    )?;
    writeln!(out, "  leap                      {leap}")?;
    writeln!(
        out,
        "  antenna                   {}",
        if s.antenna.is_empty() {
            "no status bits set".to_owned()
        } else {
            s.antenna.join(", ")
        }
    )?;
    writeln!(
        out,
        "  satellites                {} used / {} seen",
        s.satellites_used, s.satellites_seen
    )?;
    writeln!(
        out,
        "  tod protocol              {} (status {:#x})",
        s.tod_protocol, s.tod_status
    )?;
    if s.clock_source == ClockSource::None.name() {
        writeln!(
            out,
            "  note: clock source NONE is the FPGA's reset state: nothing has initialised this \
             card since power-on or reset (`timecard watch --device {}` does)",
            r.device
        )?;
    }

    if let Some(truth) = &r.simulator_ground_truth {
        writeln!(
            out,
            "\nSimulator ground truth (not visible on real hardware)"
        )?;
        write!(out, "{}", render::truth_section(truth))?;
    }
    Ok(())
}

/// Opens `spec`, reads it once and prints the report.
///
/// # Errors
/// [`crate::exit::DeviceUnavailable`] for a missing device, `CardGone` for a
/// dead one, other driver errors, or a failed write.
pub fn run(spec: &DeviceSpec, args: &StatusArgs, out: &mut dyn Write) -> Result<()> {
    let opened = device::open(spec)?;
    let truth = opened.truth.as_ref().map(timecard_sim::Sim::snapshot);
    let r = report(spec, &opened.card, truth)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &r)?;
        writeln!(out)?;
    } else {
        write_text(&r, out)?;
    }
    Ok(())
}
