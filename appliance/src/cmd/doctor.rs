//! `timecard doctor`: preflight checks of the machine, one line each with a
//! fix when something is wrong. Nothing is opened for writing and no card
//! is touched beyond sysfs; the checks that need a card say so when there
//! is none.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use timecard_driver::discover::{FoundCard, Sysfs};

use crate::cli::DoctorArgs;

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

/// Every check, against `sysfs` and the fbclock file `fbclock_path`.
#[must_use]
pub fn checks(sysfs: &Sysfs, fbclock_path: &Path) -> Vec<Check> {
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

/// PTP hardware clocks of network interfaces (`/sys/class/ptp`).
fn hardware_timestamping(root: &Path) -> Check {
    let dir = root.join("sys/class/ptp");
    let mut clocks: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let clock =
                        std::fs::read_to_string(e.path().join("clock_name")).unwrap_or_default();
                    format!("{name} ({})", clock.trim())
                })
                .collect()
        })
        .unwrap_or_default();
    clocks.sort();
    if clocks.is_empty() {
        check(
            "hardware timestamping",
            Status::Warn,
            "no PTP hardware clock (no /sys/class/ptp entries): software timestamps only",
            "use a NIC with hardware timestamping (check with `ethtool -T IFACE`) for sub-microsecond PTP",
        )
    } else {
        check(
            "hardware timestamping",
            Status::Ok,
            format!("PTP clocks: {}", clocks.join(", ")),
            "",
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
            "start fbclockd (or `timecard up`) for TrueTime; services fall back to the system clock with an assumed bound",
        ),
    }
}

/// Runs the checks and prints them; the exit code is 1 when one failed.
///
/// # Errors
/// Writing the output failed, or a check failed (after printing all).
pub fn run(args: &DoctorArgs, out: &mut dyn Write) -> Result<()> {
    let results = checks(&Sysfs::system(), &args.fbclock);
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
