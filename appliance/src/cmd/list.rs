//! `timecard list`: the Time Cards on the PCI bus, from a sysfs scan.
//!
//! Nothing is opened. For a card that Linux's `ptp_ocp` drives, the driver's
//! sysfs attributes are shown too, since the kernel owns the card then.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;
use timecard_driver::discover::{FoundCard, Sysfs, VFIO_PCI_DRIVER};

use crate::cli::ListArgs;

/// `ptp_ocp` attributes worth a glance in the table (all of them are in the JSON).
const GLANCE: [&str; 5] = [
    "serialnum",
    "gnss_sync",
    "clock_source",
    "utc_tai_offset",
    "clock_status_offset",
];

/// One card with the `ptp_ocp` attributes of its class device, if any.
#[derive(Debug, Serialize)]
struct Listed {
    /// What the PCI scan found.
    #[serde(flatten)]
    card: FoundCard,
    /// `/sys/class/timecard/<ocpN>/*`, when `ptp_ocp` drives the card.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ptp_ocp: BTreeMap<String, String>,
}

/// The message for a machine without cards: how to check, and the simulator.
const NONE_FOUND: &str = "\
No Time Card found on this machine's PCI bus.
  Check what the bus shows: `lspci -d 1d9b:` (Meta cards; Celestica: `lspci -d 18d4:`,
  ADVA: `lspci -d ad5a:`, Orolia: `lspci -d 1ad7:`). A card lspci shows but this list
  does not has a PCI ID timecard does not know (`lspci -nn`).
  No hardware? `--device sim` runs a simulated card: try `timecard status --device sim`
  or `timecard up`.";

/// Scans `sysfs` and prints the cards.
///
/// # Errors
/// An unreadable PCI device directory, or a failed write.
pub fn run(sysfs: &Sysfs, args: &ListArgs, out: &mut dyn Write) -> Result<()> {
    let cards = sysfs
        .find_cards()
        .context("scanning /sys/bus/pci/devices for Time Cards")?;
    let listed: Vec<Listed> = cards
        .into_iter()
        .map(|card| {
            let ptp_ocp = card
                .timecard
                .as_deref()
                .and_then(|name| sysfs.ptp_ocp_attributes(name).ok())
                .unwrap_or_default();
            Listed { card, ptp_ocp }
        })
        .collect();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &listed)?;
        writeln!(out)?;
        return Ok(());
    }
    if listed.is_empty() {
        writeln!(out, "{NONE_FOUND}")?;
        return Ok(());
    }
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".to_owned());
    writeln!(
        out,
        "{:<14} {:<22} {:<10} {:<10} {:<6} {:<8} GNSS TTY",
        "ADDRESS", "BOARD", "PCI ID", "DRIVER", "IOMMU", "PTP_OCP"
    )?;
    for l in &listed {
        let c = &l.card;
        writeln!(
            out,
            "{:<14} {:<22} {:<10} {:<10} {:<6} {:<8} {}",
            c.address.to_string(),
            c.board.name(),
            c.id.to_string(),
            opt(c.driver.clone()),
            opt(c.iommu_group.map(|g| g.to_string())),
            opt(c.timecard.clone()),
            opt(c.gnss_tty.as_ref().map(|p| p.display().to_string())),
        )?;
        let glance: Vec<String> = GLANCE
            .iter()
            .filter_map(|k| l.ptp_ocp.get(*k).map(|v| format!("{k} {v}")))
            .collect();
        if !glance.is_empty() {
            writeln!(out, "  ptp_ocp: {}", glance.join(", "))?;
        }
        if c.driver.as_deref() != Some(VFIO_PCI_DRIVER) {
            writeln!(
                out,
                "  to open it with timecard it must be bound to vfio-pci; \
                 `timecard status --device pci:{}` says how",
                c.address
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// A fake sysfs tree under the system temp dir, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        /// An empty PCI device directory under a fresh root.
        fn new(name: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("timecard-list-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
            Self(root)
        }

        /// Writes a file, creating its directories.
        fn write(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `list` on the tree and returns its output.
    fn list(tree: &Tree, json: bool) -> String {
        let mut out = Vec::new();
        run(&Sysfs::at(&tree.0), &ListArgs { json }, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_cards_explains_how_to_check() {
        let tree = Tree::new("empty");
        let text = list(&tree, false);
        assert!(text.contains("lspci -d 1d9b:"), "{text}");
        assert!(text.contains("--device sim"), "{text}");
        assert_eq!(list(&tree, true).trim(), "[]");
    }

    #[test]
    fn a_ptp_ocp_card_shows_its_sysfs_attributes() {
        let tree = Tree::new("ptp-ocp");
        let dev = "sys/bus/pci/devices/0000:01:00.0";
        tree.write(&format!("{dev}/vendor"), "0x1d9b\n");
        tree.write(&format!("{dev}/device"), "0x0400\n");
        fs::create_dir_all(tree.0.join("sys/bus/pci/drivers/ptp_ocp")).unwrap();
        symlink(
            tree.0.join("sys/bus/pci/drivers/ptp_ocp"),
            tree.0.join(dev).join("driver"),
        )
        .unwrap();
        tree.write("sys/class/timecard/ocp0/gnss_sync", "SYNC\n");
        tree.write("sys/class/timecard/ocp0/clock_source", "TOD\n");
        symlink(
            tree.0.join(dev),
            tree.0.join("sys/class/timecard/ocp0/device"),
        )
        .unwrap();
        let text = list(&tree, false);
        assert!(text.contains("0000:01:00.0"), "{text}");
        assert!(text.contains("Meta OCP Time Card"), "{text}");
        assert!(
            text.contains("ptp_ocp: gnss_sync SYNC, clock_source TOD"),
            "{text}"
        );
        assert!(text.contains("vfio-pci"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&list(&tree, true)).unwrap();
        assert_eq!(json[0]["address"], "0000:01:00.0");
        assert_eq!(json[0]["board"], "Meta");
        assert_eq!(json[0]["ptp_ocp"]["gnss_sync"], "SYNC");
    }
}
