//! PCI identities of the Time Card boards that Linux's `ptp_ocp` knows.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::layout::{self, Layout};

/// PCI vendor ID of Meta (formerly Facebook).
pub const VENDOR_META: u16 = 0x1d9b;
/// Device ID of the Meta OCP Time Card.
pub const DEVICE_META_TIMECARD: u16 = 0x0400;
/// PCI vendor ID of Celestica.
pub const VENDOR_CELESTICA: u16 = 0x18d4;
/// Device ID of the Celestica Time Card (same FPGA design as Meta's).
pub const DEVICE_CELESTICA_TIMECARD: u16 = 0x1008;
/// PCI vendor ID of Orolia (now Safran).
pub const VENDOR_OROLIA: u16 = 0x1ad7;
/// Device ID of the Orolia ART card.
pub const DEVICE_OROLIA_ARTCARD: u16 = 0xa000;
/// PCI vendor ID of ADVA.
pub const VENDOR_ADVA: u16 = 0xad5a;
/// Device ID of the ADVA Time Card.
pub const DEVICE_ADVA_TIMECARD: u16 = 0x0400;
/// Device ID of the ADVA Time Card X1.
pub const DEVICE_ADVA_TIMECARD_X1: u16 = 0x0410;

/// A PCI vendor/device pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PciId {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
}

impl PciId {
    /// Builds an ID from its two halves.
    #[must_use]
    pub const fn new(vendor: u16, device: u16) -> Self {
        Self { vendor, device }
    }
}

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// A Time Card board model, as `ptp_ocp`'s PCI table distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Board {
    /// Meta (Facebook) OCP Time Card, the reference design (`ocp_fb_resource`).
    Meta,
    /// Celestica Time Card; same FPGA layout as Meta's.
    Celestica,
    /// Orolia ART card with an mRO-50 (`ocp_art_resource`).
    OroliaArt,
    /// ADVA Time Card.
    Adva,
    /// ADVA Time Card X1.
    AdvaX1,
}

impl Board {
    /// Every board this crate knows.
    pub const ALL: [Board; 5] = [
        Board::Meta,
        Board::Celestica,
        Board::OroliaArt,
        Board::Adva,
        Board::AdvaX1,
    ];

    /// The board with this PCI ID, if it is a Time Card.
    #[must_use]
    pub fn from_id(id: PciId) -> Option<Board> {
        Board::ALL.into_iter().find(|b| b.id() == id)
    }

    /// The board's PCI vendor/device ID.
    #[must_use]
    pub const fn id(self) -> PciId {
        match self {
            Board::Meta => PciId::new(VENDOR_META, DEVICE_META_TIMECARD),
            Board::Celestica => PciId::new(VENDOR_CELESTICA, DEVICE_CELESTICA_TIMECARD),
            Board::OroliaArt => PciId::new(VENDOR_OROLIA, DEVICE_OROLIA_ARTCARD),
            Board::Adva => PciId::new(VENDOR_ADVA, DEVICE_ADVA_TIMECARD),
            Board::AdvaX1 => PciId::new(VENDOR_ADVA, DEVICE_ADVA_TIMECARD_X1),
        }
    }

    /// Human-readable board name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Board::Meta => "Meta OCP Time Card",
            Board::Celestica => "Celestica Time Card",
            Board::OroliaArt => "Orolia ART Card",
            Board::Adva => "ADVA Time Card",
            Board::AdvaX1 => "ADVA Time Card X1",
        }
    }

    /// The BAR0 block layout this board uses.
    #[must_use]
    pub const fn layout(self) -> &'static Layout {
        match self {
            Board::Meta | Board::Celestica => &layout::FB,
            Board::OroliaArt => &layout::ART,
            Board::Adva => &layout::ADVA,
            Board::AdvaX1 => &layout::ADVA_X1,
        }
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_ptp_ocp_table() {
        assert_eq!(Board::Meta.id().to_string(), "1d9b:0400");
        assert_eq!(Board::Celestica.id().to_string(), "18d4:1008");
        assert_eq!(Board::OroliaArt.id().to_string(), "1ad7:a000");
        assert_eq!(Board::Adva.id().to_string(), "ad5a:0400");
        assert_eq!(Board::AdvaX1.id().to_string(), "ad5a:0410");
    }

    #[test]
    fn lookup_round_trips_and_rejects_strangers() {
        for b in Board::ALL {
            assert_eq!(Board::from_id(b.id()), Some(b));
        }
        assert_eq!(Board::from_id(PciId::new(0x8086, 0x1533)), None);
        assert_eq!(Board::from_id(PciId::new(VENDOR_META, 0x0401)), None);
    }
}
