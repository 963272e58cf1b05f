//! Simulator backends: BAR0 of a [`timecard_sim::Sim`], in-process or in a
//! shared-memory file, and the simulated host clock that goes with a manual
//! or accelerated simulation.

use timecard_hw::pci::PciId;
use timecard_sim::Sim;

use crate::bar::{Bar, BarError, check_access};
use crate::hostclock::{HostClock, NS_PER_S};

/// BAR0 of a simulated card.
#[derive(Clone, Debug)]
pub struct SimBar {
    sim: Sim,
    len: u64,
    id: PciId,
}

impl SimBar {
    /// Wraps a simulator handle.
    #[must_use]
    pub fn new(sim: Sim) -> Self {
        let board = sim.with(|c, _| c.card.identity.board());
        Self {
            sim,
            len: board.layout().bar_len,
            id: board.id(),
        }
    }

    /// The simulator behind this BAR (for tests and control).
    #[must_use]
    pub fn sim(&self) -> &Sim {
        &self.sim
    }
}

impl Bar for SimBar {
    fn read32(&self, offset: u32) -> Result<u32, BarError> {
        check_access(offset, self.len)?;
        Ok(self.sim.read32(offset))
    }

    fn write32(&self, offset: u32, value: u32) -> Result<(), BarError> {
        check_access(offset, self.len)?;
        self.sim.write32(offset, value);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn describe(&self) -> String {
        self.sim.describe()
    }

    fn pci_id(&self) -> PciId {
        self.id
    }
}

/// A perfect host clock that lives in the simulation's truth time: the host
/// of a manual or accelerated simulation. Its UTC is truth minus the
/// configured TAI − UTC offset (which the caller keeps up to date).
#[derive(Clone, Debug)]
pub struct SimHostClock {
    sim: Sim,
    tai_utc_s: i64,
    offset_ns: i64,
}

impl SimHostClock {
    /// A host clock for `sim`, `offset_ns` away from true UTC.
    #[must_use]
    pub fn new(sim: Sim, offset_ns: i64) -> Self {
        Self {
            sim,
            tai_utc_s: i64::from(timecard_sim::TAI_UTC_NOW),
            offset_ns,
        }
    }
}

impl HostClock for SimHostClock {
    fn realtime_ns(&self) -> i64 {
        self.sim.truth_tai_ns() - self.tai_utc_s * NS_PER_S + self.offset_ns
    }

    fn monotonic_ns(&self) -> i64 {
        self.sim.truth_tai_ns()
    }
}
