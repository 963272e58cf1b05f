//! `timecard doctor`: preflight checks of the machine, one line each with a
//! fix when something is wrong. Nothing is opened for writing and no card
//! is touched beyond sysfs, unless `--card` names one: then its time is
//! latched and compared with the system clock; the checks that need a card
//! say so when there is none.
//!
//! The clock checks and their thresholds:
//!
//! - **card vs system** (`--card`): the card's UTC (its TAI minus the card's
//!   own TAI−UTC) minus the midpoint of the system-clock bracket around the
//!   latch. Within 1 ms is ok (a host on NTP over a LAN, or disciplined from
//!   the card by `timecard chrony`, stays well inside); up to 1 s is WARN
//!   (the host is not disciplined from the card, or the card is acquiring);
//!   beyond 1 s is FAIL (whole seconds: a TAI/UTC mix-up, a spoofed GNSS
//!   time, or an unset clock).
//! - **ptp vs system**: fbclockd's TrueTime `[earliest, latest]` (UTC) must
//!   contain the system time read around it; outside by up to 1 s is WARN,
//!   beyond is FAIL.
//! - **hardware timestamping**: `SIOCETHTOOL` / `ETHTOOL_GET_TS_INFO` per
//!   non-loopback interface in `/sys/class/net` (what `ethtool -T` shows):
//!   ok when one has hardware TX and RX timestamps and a PTP hardware clock.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use timecard_driver::HostClock as _;
use timecard_driver::discover::{FoundCard, Sysfs};
use timecard_driver::{DeviceSpec, SystemClock};
use timecard_hw::civil::TAI_UTC_2017;
use timecard_hw::regs::ClockSource;

use crate::cli::DoctorArgs;
use crate::render;

/// Card vs system: ok within this, ns.
pub const CARD_OK_NS: i64 = 1_000_000;
/// Card vs system, and PTP outside its window: WARN up to this, FAIL beyond, ns.
pub const CLOCK_FAIL_NS: i64 = 1_000_000_000;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but not as well as it could.
    Warn,
    /// Broken: the fix says what to do.
    Fail,
    /// Could not be checked here (the reason says why).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub found: String,
    /// What to do about it (empty when nothing).
    pub fix: String,
}

fn check(
    name: &'static str,
    status: Status,
    found: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        found: found.into(),
        fix: fix.into(),
    }
}

/// Every check, against `sysfs`, the fbclock file `fbclock_path` and, when
/// given, the card `card`.
#[must_use]
pub fn checks(sysfs: &Sysfs, fbclock_path: &Path, card: Option<&DeviceSpec>) -> Vec<Check> {
    let mut out = Vec::new();
    let cards = match sysfs.find_cards() {
        Ok(c) => c,
        Err(e) => {
            out.push(check(
                "time card",
                Status::Fail,
                format!("cannot scan the PCI bus: {e}"),
                "run on the host (not in a container without /sys/bus/pci)",
            ));
            Vec::new()
        }
    };
    if cards.is_empty() && out.is_empty() {
        out.push(check(
            "time card",
            Status::Fail,
            "no Time Card on the PCI bus",
            "seat the card and check `lspci -nn -d 1d9b:` (Meta; 18d4: Celestica, 1ad7: Orolia, ad5a: ADVA); without one, `timecard up` runs the simulator",
        ));
    }
    for card in &cards {
        out.push(check(
            "time card",
            Status::Ok,
            format!("{} {} at {}", card.board, card.id, card.address),
            "",
        ));
        out.push(binding(sysfs, card));
        out.push(gnss(sysfs, card));
    }
    if cards.is_empty() {
        for name in ["driver binding", "gnss"] {
            out.push(check(name, Status::Skip, "no card", ""));
        }
    }
    out.push(vfio_dev(sysfs.root()));
    out.push(ptp_ports());
    out.push(hardware_timestamping(sysfs.root()));
    out.push(fbclock(fbclock_path));
    out.push(card_vs_system(card));
    out.push(ptp_vs_system(fbclock_path));
    out
}

/// Bound to vfio-pci with a viable IOMMU group, or to ptp_ocp.
fn binding(sysfs: &Sysfs, card: &FoundCard) -> Check {
    match card.driver.as_deref() {
        Some("ptp_ocp") => check(
            "driver binding",
            Status::Warn,
            format!(
                "{} is driven by the kernel's ptp_ocp{}",
                card.address,
                card.timecard
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ),
            format!(
                "fine for the kernel's PHC; for `timecard --device pci:{}` bind it to vfio-pci: echo {} > /sys/bus/pci/devices/{}/driver/unbind && echo vfio-pci > /sys/bus/pci/devices/{}/driver_override && echo {} > /sys/bus/pci/drivers_probe",
                card.address, card.address, card.address, card.address, card.address
            ),
        ),
        _ => match sysfs.preflight(card.address) {
            Ok(group) => check(
                "driver binding",
                Status::Ok,
                format!(
                    "{} bound to vfio-pci, IOMMU group {group} viable, /dev/vfio/{group} usable",
                    card.address
                ),
                "",
            ),
            Err(e) => check(
                "driver binding",
                Status::Fail,
                format!("{}: not usable through VFIO", card.address),
                e.to_string(),
            ),
        },
    }
}

/// GNSS lock as ptp_ocp reports it (only readable through the kernel driver
/// without opening the card).
fn gnss(sysfs: &Sysfs, card: &FoundCard) -> Check {
    let Some(class) = &card.timecard else {
        return check(
            "gnss",
            Status::Skip,
            "not driven by ptp_ocp: read it with `timecard status --device pci:ADDRESS`",
            "",
        );
    };
    match sysfs.ptp_ocp_attributes(class) {
        Ok(attrs) => match attrs.get("gnss_sync").map(|s| s.trim().to_owned()) {
            Some(s) if s == "SYNC" => {
                check("gnss", Status::Ok, format!("{class}: gnss_sync SYNC"), "")
            }
            Some(s) => check(
                "gnss",
                Status::Fail,
                format!("{class}: gnss_sync {s}"),
                "check the antenna cable and its view of the sky; a cold receiver needs minutes for a fix",
            ),
            None => check(
                "gnss",
                Status::Skip,
                format!("{class}: no gnss_sync attribute"),
                "",
            ),
        },
        Err(e) => check("gnss", Status::Skip, format!("{class}: {e}"), ""),
    }
}

/// `/dev/vfio/vfio` present and openable.
fn vfio_dev(root: &Path) -> Check {
    let dev = root.join("dev/vfio/vfio");
    if !dev.exists() {
        return check(
            "vfio",
            Status::Warn,
            format!("{} missing (vfio not loaded)", dev.display()),
            "modprobe vfio-pci (and add it to /etc/modules-load.d/ to keep it)",
        );
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
    {
        Ok(_) => check("vfio", Status::Ok, format!("{} usable", dev.display()), ""),
        Err(e) => check(
            "vfio",
            Status::Fail,
            format!("{}: {e}", dev.display()),
            "run as root, or give the service user the device (udev rule for /dev/vfio/*)",
        ),
    }
}

/// UDP 319 and 320 free on all addresses.
fn ptp_ports() -> Check {
    let mut busy = Vec::new();
    let mut denied = false;
    for port in [319u16, 320] {
        match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => busy.push(port),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(e) => {
                return check(
                    "ptp ports",
                    Status::Fail,
                    format!("UDP {port}: {e}"),
                    "check the host's network configuration",
                );
            }
        }
    }
    if !busy.is_empty() {
        check(
            "ptp ports",
            Status::Fail,
            format!("UDP {busy:?} in use"),
            "another PTP daemon holds them: `ss -ulpn 'sport = :319 or sport = :320'`, stop it (e.g. systemctl stop ptp4l)",
        )
    } else if denied {
        check(
            "ptp ports",
            Status::Warn,
            "UDP 319/320 need privileges this user lacks",
            "run ptp-server as root or with CAP_NET_BIND_SERVICE (timecard up uses 3319/3320 otherwise)",
        )
    } else {
        check("ptp ports", Status::Ok, "UDP 319 and 320 free", "")
    }
}

/// Hardware timestamping on the network interfaces, as `ethtool -T` shows it.
fn hardware_timestamping(root: &Path) -> Check {
    let dir = root.join("sys/class/net");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    let kind =
                        std::fs::read_to_string(dir.join(name).join("type")).unwrap_or_default();
                    // ARPHRD_LOOPBACK
                    kind.trim() != "772"
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut capable = false;
    let found: Vec<String> = names
        .iter()
        .map(|name| match ts_info(name) {
            Ok(info) => {
                capable |= info.hardware_tx && info.hardware_rx && info.phc.is_some();
                format!("{name}: {info}")
            }
            Err(e) => format!("{name}: unknown ({e})"),
        })
        .collect();
    let fix = "the PTP server needs a NIC with hardware TX and RX timestamps and a PTP hardware clock (`ethtool -T IFACE`; e.g. Intel i210/E810, Mellanox ConnectX) for sub-microsecond time; software timestamps give tens of µs";
    if found.is_empty() {
        check(
            "hardware timestamping",
            Status::Warn,
            format!("no network interface besides loopback in {}", dir.display()),
            fix,
        )
    } else if capable {
        check("hardware timestamping", Status::Ok, found.join("; "), "")
    } else {
        check(
            "hardware timestamping",
            Status::Warn,
            format!("no interface timestamps in hardware: {}", found.join("; ")),
            fix,
        )
    }
}

/// One interface's timestamping capabilities (`struct ethtool_ts_info`, abridged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TsInfo {
    /// `SOF_TIMESTAMPING_TX_HARDWARE`.
    hardware_tx: bool,
    /// `SOF_TIMESTAMPING_RX_HARDWARE`.
    hardware_rx: bool,
    /// The PTP hardware clock's index (`/dev/ptpN`), if any.
    phc: Option<u32>,
}

impl std::fmt::Display for TsInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.hardware_tx, self.hardware_rx) {
            (true, true) => f.write_str("hardware TX+RX")?,
            (true, false) => f.write_str("hardware TX only")?,
            (false, true) => f.write_str("hardware RX only")?,
            (false, false) => f.write_str("software only")?,
        }
        match self.phc {
            Some(n) => write!(f, ", PHC /dev/ptp{n}"),
            None => f.write_str(", no PHC"),
        }
    }
}

/// `struct ethtool_ts_info` from `<linux/ethtool.h>`.
#[repr(C)]
#[derive(Debug, Default)]
struct EthtoolTsInfo {
    cmd: u32,
    so_timestamping: u32,
    phc_index: i32,
    tx_types: u32,
    tx_reserved: [u32; 3],
    rx_filters: u32,
    rx_reserved: [u32; 3],
}

/// `ETHTOOL_GET_TS_INFO` from `<linux/ethtool.h>`.
const ETHTOOL_GET_TS_INFO: u32 = 0x41;

/// Asks the kernel how `iface` timestamps (`SIOCETHTOOL`, `ETHTOOL_GET_TS_INFO`;
/// read-only, no privileges needed).
#[allow(unsafe_code)]
fn ts_info(iface: &str) -> std::io::Result<TsInfo> {
    if iface.len() >= libc::IFNAMSIZ || iface.as_bytes().contains(&0) {
        return Err(std::io::Error::other("interface name too long"));
    }
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    let mut info = EthtoolTsInfo {
        cmd: ETHTOOL_GET_TS_INFO,
        ..EthtoolTsInfo::default()
    };
    let mut req = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: (&raw mut info).cast(),
        },
    };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name and
    // `ifru_data` pointing at `info`, a live `struct ethtool_ts_info` the
    // kernel fills; both outlive the call, and the fd is an open socket.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TsInfo {
        hardware_tx: info.so_timestamping & libc::SOF_TIMESTAMPING_TX_HARDWARE != 0,
        hardware_rx: info.so_timestamping & libc::SOF_TIMESTAMPING_RX_HARDWARE != 0,
        phc: u32::try_from(info.phc_index).ok(),
    })
}

/// The card's clock (UTC) against the system clock.
fn card_vs_system(spec: Option<&DeviceSpec>) -> Check {
    const NAME: &str = "card vs system";
    let spec = match spec {
        None => {
            return check(
                NAME,
                Status::Skip,
                "no --card given (`timecard doctor --card pci:ADDRESS` or sim:PATH compares it)",
                "",
            );
        }
        Some(DeviceSpec::Embedded) => {
            return check(
                NAME,
                Status::Skip,
                "--card sim would be a fresh simulator inside the doctor; name a running one: --card sim:PATH",
                "",
            );
        }
        Some(spec) => spec,
    };
    let card = match timecard_driver::device::open(spec) {
        Ok(card) => card,
        Err(e) => {
            return check(
                NAME,
                Status::Fail,
                format!("cannot open {spec}: {e}"),
                format!("check the card: `timecard status --device {spec}`"),
            );
        }
    };
    let (status, reading) = match card.status().and_then(|st| Ok((st, card.read_time()?))) {
        Ok(r) => r,
        Err(e) => {
            return check(
                NAME,
                Status::Fail,
                format!("{spec}: {e}"),
                format!("check the card: `timecard status --device {spec}`"),
            );
        }
    };
    if status.clock_source == Some(ClockSource::None) {
        return check(
            NAME,
            Status::Warn,
            format!("{spec}: not initialised (clock source NONE), its clock runs from power-on"),
            "start the appliance that owns the card (`timecard up`), then check again",
        );
    }
    let (tai_utc, from_card) = if status.utc.utc_valid {
        (i32::from(status.utc.offset_s), true)
    } else {
        (TAI_UTC_2017, false)
    };
    let mid = reading.pre_ns + (reading.post_ns - reading.pre_ns) / 2;
    let diff = reading.card_tai_ns - i64::from(tai_utc) * 1_000_000_000 - mid;
    let found = format!(
        "{spec}: card − system {} (card UTC = TAI − {tai_utc} s{}; {}; read within {})",
        render::signed_ns(diff),
        if from_card {
            ""
        } else {
            " assumed, card has no TAI-UTC"
        },
        if status.in_sync {
            "card in sync"
        } else {
            "card NOT in sync"
        },
        render::signed_ns(reading.post_ns - reading.pre_ns),
    );
    if diff.abs() <= CARD_OK_NS {
        check(NAME, Status::Ok, found, "")
    } else if diff.abs() <= CLOCK_FAIL_NS {
        check(
            NAME,
            Status::Warn,
            found,
            "discipline the system clock from the card: chronyd with `refclock SOCK` fed by `timecard chrony` (README: Host clock from the card); if the card is not in sync, check GNSS with `timecard status`",
        )
    } else {
        check(
            NAME,
            Status::Fail,
            found,
            "whole seconds apart: check the card's TAI-UTC and GNSS (spoofed or jumped time: `timecard watch` shows the supervisor's verdict) and the system clock (`chronyc tracking`, `timedatectl`)",
        )
    }
}

/// fbclockd's TrueTime (PTP) against the system clock.
fn ptp_vs_system(path: &Path) -> Check {
    const NAME: &str = "ptp vs system";
    let client = match fbclock::FbClock::open(path) {
        Ok(c) => c,
        Err(e) => {
            return check(
                NAME,
                Status::Skip,
                format!("no TrueTime at {}: {e}", path.display()),
                "",
            );
        }
    };
    let host = SystemClock;
    let before = host.realtime_ns();
    let tt = client.now_utc();
    let after = host.realtime_ns();
    let tt = match tt {
        Ok(tt) => tt,
        Err(e) => {
            return check(
                NAME,
                Status::Skip,
                format!("TrueTime unavailable ({e}); see the fbclock line"),
                "",
            );
        }
    };
    let outside = if after < tt.earliest_ns {
        tt.earliest_ns - after
    } else if before > tt.latest_ns {
        before - tt.latest_ns
    } else {
        0
    };
    let found = format!(
        "system − TrueTime midpoint {}, window of uncertainty {}",
        render::signed_ns((before + after) / 2 - tt.midpoint_ns()),
        render::signed_ns(tt.wou_ns()),
    );
    if outside == 0 {
        check(
            NAME,
            Status::Ok,
            format!("system time inside TrueTime: {found}"),
            "",
        )
    } else {
        check(
            NAME,
            if outside <= CLOCK_FAIL_NS {
                Status::Warn
            } else {
                Status::Fail
            },
            format!(
                "system time {} outside TrueTime: {found}",
                render::signed_ns(outside)
            ),
            "discipline the system clock: chronyd fed by `timecard chrony` on the appliance, or phc2sys/chronyd from the NIC's PTP clock on hosts",
        )
    }
}

/// fbclockd's shared memory present and fresh.
fn fbclock(path: &Path) -> Check {
    match fbclock::FbClock::open(path) {
        Ok(c) => match c.now() {
            Ok(t) => check(
                "fbclock",
                Status::Ok,
                format!(
                    "{} fresh, window of uncertainty {} ns",
                    path.display(),
                    t.wou_ns()
                ),
                "",
            ),
            Err(e) => check(
                "fbclock",
                Status::Fail,
                format!("{}: {e}", path.display()),
                "fbclockd is not publishing: check it (`timecard up`, or systemctl status fbclockd) and its PTP server",
            ),
        },
        Err(e) => check(
            "fbclock",
            Status::Warn,
            format!("{}: {e}", path.display()),
            "start fbclockd (or `timecard up`) for TrueTime; counter and notify configured with `fbclock` refuse to start without it",
        ),
    }
}

/// Runs the checks and prints them; the exit code is 1 when one failed.
///
/// # Errors
/// Writing the output failed, or a check failed (after printing all).
pub fn run(args: &DoctorArgs, out: &mut dyn Write) -> Result<()> {
    let results = checks(&Sysfs::system(), &args.fbclock, args.card.as_ref());
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&results)?)?;
    } else {
        for c in &results {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            write!(out, "{mark} {:<22} {}", c.name, c.found)?;
            if !c.fix.is_empty() {
                write!(out, " — fix: {}", c.fix)?;
            }
            writeln!(out)?;
        }
    }
    let failed = results.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed (the fixes are above)");
    }
    Ok(())
}
