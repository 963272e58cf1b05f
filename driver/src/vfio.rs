//! BAR0 of a real Time Card through VFIO (`pci-driver`'s vfio-pci backend).
//!
//! [`VfioBar::open`] first runs [`Sysfs::preflight`], so a machine that is not
//! set up for VFIO gets a [`PreflightError`] naming the fix. It then opens the
//! device, checks that config space reports a Time Card ID, enables memory
//! decoding and maps BAR0. Register accesses are single volatile 32-bit loads
//! and stores on that mapping; if the BAR cannot be mapped, they fall back to
//! `pread`/`pwrite` on the VFIO device file, which is slower but equivalent.
//!
//! This is the only module of the crate with `unsafe` code: the two volatile
//! accesses to the mapping, each guarded by [`check_access`].

use std::io;

use pci_driver::backends::vfio::VfioPciDevice;
use pci_driver::device::PciDevice;
use pci_driver::regions::{MappedOwningPciRegion, OwningPciRegion, PciRegion, Permissions};
use timecard_hw::pci::{Board, PciId};

use crate::bar::{Bar, BarError, check_access};
use crate::discover::{PciAddress, PreflightError, Sysfs};

/// Why a Time Card could not be opened through VFIO.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// A precondition does not hold (or config space is not a Time Card's).
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The checks passed but opening or setting up the device failed.
    #[error(
        "opening PCI device {address} through VFIO (/sys/bus/pci/devices/{address}, /dev/vfio) failed: \
         {source}; {hint}"
    )]
    Open {
        /// The device's address.
        address: PciAddress,
        /// The underlying error from the VFIO backend.
        source: io::Error,
        /// What to check.
        hint: &'static str,
    },
    /// The device has no usable BAR 0.
    #[error(
        "PCI device {address} has no BAR 0 through VFIO; check `lspci -vv -s {address}` shows \
         \"Region 0: Memory at ...\" and that the FPGA image is loaded"
    )]
    NoBar0 {
        /// The device's address.
        address: PciAddress,
    },
}

/// Picks a hint for an error from the VFIO backend (whose messages are often bare or "TODO").
fn open_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            "permission denied on /dev/vfio/vfio or the group node: run as root or chown /dev/vfio/<group>"
        }
        Some(libc::EBUSY) => {
            "the IOMMU group or device is in use by another process or VM (check `sudo fuser -v /dev/vfio/*`)"
        }
        Some(libc::ENOENT) => {
            "a sysfs or /dev/vfio path disappeared between the checks and the open; check \
             `ls -l /sys/bus/pci/devices/<addr>/iommu_group /dev/vfio` and try again"
        }
        Some(libc::ENODEV | libc::ENXIO) => {
            "the device vanished or is not a vfio-pci device; check `lspci -k -s <addr>` and `dmesg | grep -i vfio`"
        }
        Some(libc::EINVAL | libc::ENOTTY) => {
            "the kernel rejected a VFIO request; check that the IOMMU supports type1v2 and `dmesg | grep -i vfio`"
        }
        _ if error.to_string().contains("not viable") => {
            "bind every device of the IOMMU group to vfio-pci (see /sys/kernel/iommu_groups/<group>/devices)"
        }
        _ => {
            "the VFIO backend gave no detail; check `dmesg | grep -i -e vfio -e DMAR -e AMD-Vi`, \
             that every device of the IOMMU group is bound to vfio-pci, and that the kernel VFIO \
             type1 IOMMU driver is available (`modprobe vfio_iommu_type1`)"
        }
    }
}

/// The address of the 32-bit register at byte `index` of a mapped BAR, after
/// checking that it lies inside the mapping and is aligned for `u32`.
///
/// Computing the pointer is safe; only dereferencing it needs `unsafe`.
fn mapped_word(
    region: &MappedOwningPciRegion,
    index: usize,
    offset: u32,
    len: u64,
) -> Result<*mut u32, BarError> {
    let out_of_range = || BarError::OutOfRange { offset, len };
    if index.checked_add(4).is_none_or(|end| end > region.len()) {
        return Err(out_of_range());
    }
    // Alignment is checked right below instead of assumed.
    #[allow(clippy::cast_ptr_alignment)]
    let word = region.as_mut_ptr().wrapping_add(index).cast::<u32>();
    if !word.is_aligned() {
        return Err(out_of_range());
    }
    Ok(word)
}

/// How BAR0 is reached.
#[derive(Debug)]
enum Access {
    /// Mapped into this process; accesses are volatile loads and stores.
    Mapped(MappedOwningPciRegion),
    /// Not mappable; accesses are `pread`/`pwrite` on the VFIO device file.
    Unmapped(OwningPciRegion),
}

/// BAR0 of a Time Card opened through VFIO.
///
/// Holds the device open for as long as it lives; dropping it unmaps the BAR
/// and releases the VFIO group.
#[derive(Debug)]
pub struct VfioBar {
    address: PciAddress,
    group: u32,
    id: PciId,
    board: Board,
    len: u64,
    access: Access,
    /// Keeps the device (and its container) open alongside the BAR.
    _device: VfioPciDevice,
}

impl VfioBar {
    /// Opens BAR0 of the Time Card at `address`.
    ///
    /// Runs [`Sysfs::preflight`], opens the device with `pci-driver`, checks the
    /// vendor/device ID in config space, enables memory-space decoding and maps
    /// BAR0 (falling back to `pread`/`pwrite` if it cannot be mapped).
    ///
    /// # Errors
    /// [`VfioError::Preflight`] when a precondition fails (including a config
    /// space ID that is not a Time Card), [`VfioError::Open`] when the VFIO
    /// backend fails, [`VfioError::NoBar0`] when BAR0 is absent.
    pub fn open(sysfs: &Sysfs, address: PciAddress) -> Result<Self, VfioError> {
        let group = sysfs.preflight(address)?;
        let open_err = |source: io::Error| VfioError::Open {
            address,
            hint: open_hint(&source),
            source,
        };

        let device = VfioPciDevice::open(sysfs.device_dir(address)).map_err(open_err)?;

        let config = device.config();
        let vendor = config.vendor_id().read().map_err(|e| VfioError::Open {
            address,
            source: e,
            hint: "reading the vendor ID from config space failed; check `dmesg | grep -i vfio`",
        })?;
        let device_id = config.device_id().read().map_err(|e| VfioError::Open {
            address,
            source: e,
            hint: "reading the device ID from config space failed; check `dmesg | grep -i vfio`",
        })?;
        let id = PciId::new(vendor, device_id);
        let Some(board) = Board::from_id(id) else {
            return Err(PreflightError::NotATimeCard { address, id }.into());
        };

        // vfio-pci leaves memory decoding as it found it; with it off, BAR reads
        // return all-ones (or fault on a mapping).
        config
            .command()
            .memory_space_enable()
            .write(true)
            .map_err(|e| VfioError::Open {
                address,
                source: e,
                hint: "enabling memory-space decoding in the command register failed; check `dmesg | grep -i vfio`",
            })?;

        let bar = device.bar(0).ok_or(VfioError::NoBar0 { address })?;
        let len = bar.len();
        if len < 4 {
            return Err(VfioError::NoBar0 { address });
        }
        let access = if bar.is_mappable() {
            match bar.map(.., Permissions::ReadWrite) {
                Ok(mapped) => Access::Mapped(mapped),
                Err(e) => {
                    tracing::warn!(%address, error = %e, "mapping BAR0 failed; using pread/pwrite");
                    Access::Unmapped(bar)
                }
            }
        } else {
            tracing::info!(%address, "BAR0 is not mappable; using pread/pwrite");
            Access::Unmapped(bar)
        };
        tracing::debug!(%address, group, %id, len, mapped = matches!(access, Access::Mapped(_)), "opened Time Card BAR0");

        Ok(Self {
            address,
            group,
            id,
            board,
            len,
            access,
            _device: device,
        })
    }

    /// The vendor and device ID read from config space when the card was opened.
    #[must_use]
    pub fn config_ids(&self) -> (u16, u16) {
        (self.id.vendor, self.id.device)
    }

    /// The board model the config-space ID denotes.
    #[must_use]
    pub fn board(&self) -> Board {
        self.board
    }

    /// The card's PCI address.
    #[must_use]
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// The card's IOMMU group.
    #[must_use]
    pub fn iommu_group(&self) -> u32 {
        self.group
    }

    /// Whether BAR0 is memory-mapped (otherwise accesses use `pread`/`pwrite`).
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        matches!(self.access, Access::Mapped(_))
    }
}

impl Bar for VfioBar {
    fn read32(&self, offset: u32) -> Result<u32, BarError> {
        let index = check_access(offset, self.len)?;
        match &self.access {
            Access::Mapped(region) => {
                let word = mapped_word(region, index, offset, self.len)?;
                // SAFETY: `mapped_word` checked that the 4 bytes at `word` lie inside
                // `region`, a live read-write mapping of BAR0 owned by `self` (so it stays
                // mapped for this borrow), and that `word` is aligned for u32. MMIO must be
                // accessed with one volatile load of the register's width, which this is; no
                // Rust reference to device memory is ever created.
                let raw = unsafe { word.read_volatile() };
                Ok(u32::from_le(raw))
            }
            Access::Unmapped(region) => Ok(region.read_le_u32(u64::from(offset))?),
        }
    }

    fn write32(&self, offset: u32, value: u32) -> Result<(), BarError> {
        let index = check_access(offset, self.len)?;
        match &self.access {
            Access::Mapped(region) => {
                let word = mapped_word(region, index, offset, self.len)?;
                // SAFETY: as in `read32`: `mapped_word` checked that `word` is u32-aligned
                // and inside the live mapping, which was made with Permissions::ReadWrite.
                // The store is one volatile u32 write, as MMIO requires; concurrent accesses
                // from other threads go to device registers, not Rust-managed memory.
                unsafe { word.write_volatile(value.to_le()) };
                Ok(())
            }
            Access::Unmapped(region) => Ok(region.write_le_u32(u64::from(offset), value)?),
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn pci_id(&self) -> PciId {
        let (vendor, device) = self.config_ids();
        PciId::new(vendor, device)
    }

    fn describe(&self) -> String {
        format!(
            "vfio:{}{}",
            self.address,
            if self.is_mapped() { "" } else { " (pread)" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_access_accepts_aligned_in_range() {
        assert_eq!(check_access(0, 4).unwrap(), 0);
        assert_eq!(check_access(0x0100_0000, 0x0200_0000).unwrap(), 0x0100_0000);
        assert_eq!(check_access(0x01ff_fffc, 0x0200_0000).unwrap(), 0x01ff_fffc);
        assert_eq!(
            check_access(u32::MAX - 3, 1 << 32).unwrap(),
            (u32::MAX - 3) as usize
        );
    }

    #[test]
    fn check_access_rejects_unaligned_and_out_of_range() {
        for (offset, len) in [
            (1, 16),
            (2, 16),
            (3, 16),
            (16, 16),
            (13, 16),
            (12, 15),
            (0, 0),
            (0, 3),
            (u32::MAX, u64::MAX),
            (u32::MAX - 3, u64::from(u32::MAX)),
        ] {
            match check_access(offset, len) {
                Err(BarError::OutOfRange { offset: o, len: l }) => {
                    assert_eq!((o, l), (offset, len));
                }
                other => panic!("({offset:#x}, {len:#x}) gave {other:?}"),
            }
        }
    }

    #[test]
    fn open_bogus_address_is_a_preflight_error() {
        let bogus = PciAddress::new(0xfeed, 0xfe, 0x1f, 7);
        let err = VfioBar::open(&Sysfs::system(), bogus).unwrap_err();
        assert!(
            matches!(
                err,
                VfioError::Preflight(PreflightError::NoSuchDevice { address }) if address == bogus
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("feed:fe:1f.7") && msg.contains("lspci"),
            "{msg}"
        );
        assert!(VfioBar::open(&Sysfs::system(), bogus).is_err());
    }

    #[test]
    fn open_real_devices_never_panics() {
        // Whatever this machine has (here: virtio devices, no IOMMU, no /dev/vfio),
        // opening must fail cleanly with a message, or succeed on a set-up card.
        let sysfs = Sysfs::system();
        let Ok(entries) = std::fs::read_dir("/sys/bus/pci/devices") else {
            eprintln!("SKIPPED open_real_devices_never_panics: no /sys/bus/pci/devices");
            return;
        };
        for entry in entries.flatten() {
            let Some(address) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            match VfioBar::open(&sysfs, address) {
                Ok(bar) => assert!(bar.len() >= 4),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn open_hints_cover_common_errors() {
        let hint = |code| open_hint(&io::Error::from_raw_os_error(code));
        assert!(hint(libc::EACCES).contains("run as root"));
        assert!(hint(libc::EBUSY).contains("another process or VM"));
        assert!(hint(libc::ENOENT).contains("/dev/vfio"));
        assert!(open_hint(&io::Error::other("TODO")).contains("dmesg"));
        assert!(
            open_hint(&io::Error::other(
                "Group is not viable; are all devices in the group bound to vfio or unbound?"
            ))
            .contains("bind every device")
        );
        let err = VfioError::Open {
            address: PciAddress::new(0, 1, 0, 0),
            source: io::Error::from_raw_os_error(libc::EBUSY),
            hint: hint(libc::EBUSY),
        };
        let msg = err.to_string();
        assert!(
            msg.contains("0000:01:00.0") && msg.contains("another process"),
            "{msg}"
        );
    }
}
