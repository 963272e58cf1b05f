//! The configuration-flash path: BAR0's `spi_flash` block, a Xilinx AXI Quad
//! SPI controller ([`xspi`]), wired to a Micron MT25QL256 SPI NOR chip
//! ([`nor`]) that holds the golden image at 0 and the regular image at the
//! board's `flash_start`.
//!
//! Everything here is plain data (`#[repr(C)]`, `Copy`, no pointers) so it
//! lives in the shared-memory file with the rest of the card; the flash cells
//! themselves are passed in as a [`FlashMut`] where a byte may touch them.
//!
//! The model, in short (`docs/simulator.md`, "SPI flash", has the details):
//! - transfers are instantaneous: while `CR` has `SPE` and `MASTER` set and
//!   `INHIBIT` clear, every byte in the TX FIFO is shifted out at once and the
//!   chip's answers land in the RX FIFO;
//! - the chip acts when it is deselected (slave select rising), as real NOR
//!   does: that is when write enable, program, erase and status writes take
//!   effect; a command cut short (incomplete address or data) does nothing;
//! - a program or erase keeps the chip busy for a fixed number of status
//!   reads ([`BUSY_PAGE_PROGRAM`] and friends), not for a time, so a polling
//!   loop behaves the same under the manual and the real-time clock;
//! - block protection follows Micron's BP/TB bits; the board ties `W#` low,
//!   so while `SRWD` is set the status register cannot be written over SPI and
//!   the golden region stays read-only whatever a driver sends;
//! - register accesses do not advance simulated time.

use timecard_hw::spi::{nor, xspi};

use crate::flash::{FlashMut, FlashRef, SECTOR};

/// Size of the controller's register block in BAR0, bytes.
pub const BLOCK_LEN: u32 = 0x1_0000;
/// JEDEC ID of the simulated chip (Micron MT25QL256), the first three `RDID` bytes.
pub const JEDEC_ID: [u8; 3] = [0x20, 0xBA, 0x19];
/// Fourth `RDID` byte: length of the extended device ID that follows.
pub const RDID_EXTENDED_LEN: u8 = 0x10;
/// Status reads for which a page program keeps the chip busy.
pub const BUSY_PAGE_PROGRAM: u32 = 1;
/// Status reads for which a 4 KiB sub-sector erase keeps the chip busy.
pub const BUSY_ERASE_4K: u32 = 4;
/// Status reads for which a 64 KiB sector erase keeps the chip busy.
pub const BUSY_ERASE_64K: u32 = 16;
/// Status reads for which a chip erase keeps the chip busy.
pub const BUSY_CHIP_ERASE: u32 = 64;
/// Status reads for which a status-register write keeps the chip busy.
pub const BUSY_WRITE_STATUS: u32 = 1;

/// Control register value after reset: manual slave select, transfers inhibited.
pub const CR_RESET: u32 = xspi::CR_MANUAL_SS | xspi::CR_INHIBIT;
/// Writable bits of `IPIER` (the core's 14 interrupt sources).
const IPIER_MASK: u32 = 0x3FFF;
/// Writable bit of `DGIER` (global interrupt enable).
const DGIER_GIE: u32 = 1 << 31;
/// The status bits that survive a power cycle.
const SR_NONVOLATILE: u8 = nor::SR_SRWD | nor::SR_BP3 | nor::SR_TB | nor::SR_BP_LOW;
/// What the chip drives on MISO when it has nothing to say (the line floats high).
const IDLE: u8 = 0xFF;

/// One of the controller's 256-byte FIFOs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Fifo {
    bytes: [u8; xspi::FIFO_DEPTH],
    head: u16,
    len: u16,
}

impl Default for Fifo {
    fn default() -> Self {
        Self {
            bytes: [0; xspi::FIFO_DEPTH],
            head: 0,
            len: 0,
        }
    }
}

impl Fifo {
    /// Bytes in the FIFO.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the FIFO holds no byte.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the FIFO cannot take another byte.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.len() == xspi::FIFO_DEPTH
    }

    /// Appends a byte; `false` (and the byte is lost) when full.
    fn push(&mut self, b: u8) -> bool {
        if self.is_full() {
            return false;
        }
        self.bytes[(usize::from(self.head) + self.len()) % xspi::FIFO_DEPTH] = b;
        self.len += 1;
        true
    }

    /// Takes the oldest byte.
    fn pop(&mut self) -> Option<u8> {
        if self.is_empty() {
            return None;
        }
        let b = self.bytes[usize::from(self.head)];
        self.head = ((usize::from(self.head) + 1) % xspi::FIFO_DEPTH) as u16;
        self.len -= 1;
        Some(b)
    }

    /// Empties the FIFO.
    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// The occupancy register: bytes minus one, 0 when empty.
    fn occupancy(&self) -> u32 {
        u32::from(self.len.saturating_sub(1))
    }
}

/// The Xilinx AXI Quad SPI core's registers and FIFOs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct XspiController {
    cr: u32,
    ssr: u32,
    ipisr: u32,
    ipier: u32,
    dgier: u32,
    tx: Fifo,
    rx: Fifo,
}

impl Default for XspiController {
    fn default() -> Self {
        Self {
            cr: CR_RESET,
            ssr: xspi::SSR_NONE,
            ipisr: 0,
            ipier: 0,
            dgier: 0,
            tx: Fifo::default(),
            rx: Fifo::default(),
        }
    }
}

impl XspiController {
    /// Whether the core shifts bytes out now (`SPE`, `MASTER`, not `INHIBIT`).
    fn transfers_enabled(&self) -> bool {
        let on = xspi::CR_SPE | xspi::CR_MASTER;
        self.cr & on == on && self.cr & xspi::CR_INHIBIT == 0
    }

    fn manual_ss(&self) -> bool {
        self.cr & xspi::CR_MANUAL_SS != 0
    }

    /// Whether `SSR` asks for the flash (slave 0, active low).
    fn flash_requested(&self) -> bool {
        self.ssr & 1 == 0
    }

    fn status(&self) -> u32 {
        let mut sr = 0;
        if self.rx.is_empty() {
            sr |= xspi::SR_RX_EMPTY;
        }
        if self.rx.is_full() {
            sr |= xspi::SR_RX_FULL;
        }
        if self.tx.is_empty() {
            sr |= xspi::SR_TX_EMPTY;
        }
        if self.tx.is_full() {
            sr |= xspi::SR_TX_FULL;
        }
        sr
    }
}

/// The command the chip is receiving, decoded from its opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    ReadId,
    ReadStatus,
    ReadFlagStatus,
    Read { addr_len: u32 },
    Program { addr_len: u32 },
    Erase { addr_len: u32, unit: u32 },
    ChipErase,
    WriteEnable,
    WriteDisable,
    ClearFlagStatus,
    WriteStatus,
    Unknown,
}

impl Command {
    fn decode(opcode: u8) -> Self {
        match opcode {
            nor::RDID => Self::ReadId,
            nor::RDSR => Self::ReadStatus,
            nor::RDFSR => Self::ReadFlagStatus,
            nor::READ => Self::Read { addr_len: 3 },
            nor::READ_4B => Self::Read { addr_len: 4 },
            nor::PP => Self::Program { addr_len: 3 },
            nor::PP_4B => Self::Program { addr_len: 4 },
            nor::SE_4K => Self::Erase {
                addr_len: 3,
                unit: nor::SUBSECTOR as u32,
            },
            nor::SE_4K_4B => Self::Erase {
                addr_len: 4,
                unit: nor::SUBSECTOR as u32,
            },
            nor::SE_64K => Self::Erase {
                addr_len: 3,
                unit: nor::SECTOR as u32,
            },
            nor::SE_64K_4B => Self::Erase {
                addr_len: 4,
                unit: nor::SECTOR as u32,
            },
            nor::CHIP_ERASE | nor::CHIP_ERASE_ALT => Self::ChipErase,
            nor::WREN => Self::WriteEnable,
            nor::WRDI => Self::WriteDisable,
            nor::CLFSR => Self::ClearFlagStatus,
            nor::WRSR => Self::WriteStatus,
            _ => Self::Unknown,
        }
    }

    fn is_status_read(self) -> bool {
        matches!(self, Self::ReadStatus | Self::ReadFlagStatus)
    }
}

/// The SPI NOR chip (Micron MT25QL256) behind the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct NorChip {
    /// Chip select asserted.
    selected: bool,
    /// The command in progress arrived while busy and is ignored.
    ignored: bool,
    /// Opcode of the command in progress (meaningful once `clocked > 0`).
    opcode: u8,
    /// First data byte of a status-register write.
    new_status: u8,
    /// Bytes clocked since chip select (opcode included).
    clocked: u32,
    /// Address being assembled, then the running read address.
    addr: u32,
    /// Page-program buffer, `0xFF` where no byte was latched.
    page: [u8; nor::PAGE],
    /// Status register: non-volatile bits and `WEL` (`WIP` comes from `busy`).
    status: u8,
    /// Sticky flag-status error bits (`READY` comes from `busy`).
    flag_errors: u8,
    /// Status reads left before the running program or erase completes.
    busy: u32,
}

impl NorChip {
    /// A chip with these non-volatile status bits, idle.
    #[must_use]
    pub fn new(status: u8) -> Self {
        Self {
            selected: false,
            ignored: false,
            opcode: 0,
            new_status: 0,
            clocked: 0,
            addr: 0,
            page: [IDLE; nor::PAGE],
            status: status & SR_NONVOLATILE,
            flag_errors: 0,
            busy: 0,
        }
    }

    /// The status register as `RDSR` would answer it now.
    #[must_use]
    pub fn status(&self) -> u8 {
        self.status | if self.busy > 0 { nor::SR_WIP } else { 0 }
    }

    /// The flag status register as `RDFSR` would answer it now.
    #[must_use]
    pub fn flag_status(&self) -> u8 {
        self.flag_errors | if self.busy > 0 { 0 } else { nor::FSR_READY }
    }

    /// Whether a program or erase is still running.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.busy > 0
    }

    /// Power lost: the command being received is dropped without effect,
    /// the running operation and the volatile bits (`WEL`, flag errors) are
    /// gone; block protection stays.
    pub fn power_cut(&mut self) {
        *self = Self::new(self.status);
    }

    fn select(&mut self) {
        self.selected = true;
        self.clocked = 0;
        self.ignored = false;
    }

    /// One status byte for a status read; each read counts down the busy time.
    fn status_read(&mut self, flag: bool) -> u8 {
        let v = if flag {
            self.flag_status()
        } else {
            self.status()
        };
        self.busy = self.busy.saturating_sub(1);
        v
    }

    /// Clocks one byte in and returns the byte the chip drives meanwhile.
    fn clock(&mut self, mosi: u8, flash: FlashRef<'_>) -> u8 {
        let n = self.clocked;
        self.clocked = n.saturating_add(1);
        if n == 0 {
            self.opcode = mosi;
            self.addr = 0;
            let cmd = Command::decode(mosi);
            self.ignored = self.busy > 0 && !cmd.is_status_read();
            if matches!(cmd, Command::Program { .. }) {
                self.page = [IDLE; nor::PAGE];
            }
            return IDLE;
        }
        if self.ignored {
            return IDLE;
        }
        match Command::decode(self.opcode) {
            Command::ReadStatus => self.status_read(false),
            Command::ReadFlagStatus => self.status_read(true),
            Command::ReadId => match n {
                1..=3 => JEDEC_ID[n as usize - 1],
                4 => RDID_EXTENDED_LEN,
                _ => 0,
            },
            Command::Read { addr_len } => {
                if n <= addr_len {
                    self.address_byte(mosi, n, addr_len, flash.len());
                    return IDLE;
                }
                let b = flash.read(self.addr as usize, 1).map_or(IDLE, |v| v[0]);
                self.addr = wrap(self.addr.wrapping_add(1), flash.len());
                b
            }
            Command::Program { addr_len } => {
                if n <= addr_len {
                    self.address_byte(mosi, n, addr_len, flash.len());
                } else {
                    // Inside the page, wrapping at its end as real NOR does.
                    let i = (self.addr as usize + (n - addr_len - 1) as usize) % nor::PAGE;
                    self.page[i] = mosi;
                }
                IDLE
            }
            Command::Erase { addr_len, .. } => {
                if n <= addr_len {
                    self.address_byte(mosi, n, addr_len, flash.len());
                }
                IDLE
            }
            Command::WriteStatus => {
                if n == 1 {
                    self.new_status = mosi;
                }
                IDLE
            }
            Command::ChipErase
            | Command::WriteEnable
            | Command::WriteDisable
            | Command::ClearFlagStatus
            | Command::Unknown => IDLE,
        }
    }

    /// Shifts address byte `n` (1-based) in; the last one wraps it to the chip.
    fn address_byte(&mut self, b: u8, n: u32, addr_len: u32, size: usize) {
        self.addr = (self.addr << 8) | u32::from(b);
        if n == addr_len {
            self.addr = wrap(self.addr, size);
        }
    }

    /// Chip select rises: the command received takes effect if it is complete.
    fn deselect(&mut self, flash: &mut FlashMut<'_>) {
        if !self.selected {
            return;
        }
        self.selected = false;
        let n = self.clocked;
        self.clocked = 0;
        if n == 0 || self.ignored {
            return;
        }
        match Command::decode(self.opcode) {
            Command::WriteEnable if n == 1 => self.status |= nor::SR_WEL,
            Command::WriteDisable if n == 1 => self.status &= !nor::SR_WEL,
            Command::ClearFlagStatus if n == 1 => self.flag_errors = 0,
            Command::WriteStatus if n == 2 => self.write_status(),
            Command::Program { addr_len } if n > addr_len + 1 => self.program(flash),
            Command::Erase { addr_len, unit } if n == addr_len + 1 => {
                self.erase(flash, self.addr & !(unit - 1), unit);
            }
            Command::ChipErase if n == 1 => self.chip_erase(flash),
            _ => {}
        }
    }

    /// Consumes the write enable latch; `false` if it was not set.
    fn take_wel(&mut self) -> bool {
        let had = self.status & nor::SR_WEL != 0;
        self.status &= !nor::SR_WEL;
        had
    }

    fn protected(&self, flash: FlashRef<'_>) -> std::ops::Range<u32> {
        nor::protected_range(self.status, flash.len() as u32)
    }

    fn refuse(&mut self, error: u8) {
        self.flag_errors |= nor::FSR_PROTECTION_ERROR | error;
    }

    fn write_status(&mut self) {
        if !self.take_wel() {
            return;
        }
        // W# is tied low on the board: with SRWD set the register is frozen.
        if self.status & nor::SR_SRWD != 0 {
            return;
        }
        self.status = self.new_status & SR_NONVOLATILE;
        self.busy = BUSY_WRITE_STATUS;
    }

    fn program(&mut self, flash: &mut FlashMut<'_>) {
        if !self.take_wel() {
            return;
        }
        let base = self.addr & !(nor::PAGE as u32 - 1);
        if overlaps(&self.protected(flash.as_ref()), base, nor::PAGE as u32) {
            self.refuse(nor::FSR_PROGRAM_ERROR);
            return;
        }
        flash
            .program(base as usize, &self.page)
            .expect("page address wrapped to the chip");
        self.busy = BUSY_PAGE_PROGRAM;
    }

    fn erase(&mut self, flash: &mut FlashMut<'_>, start: u32, unit: u32) {
        if !self.take_wel() {
            return;
        }
        if overlaps(&self.protected(flash.as_ref()), start, unit) {
            self.refuse(nor::FSR_ERASE_ERROR);
            return;
        }
        for s in (start..start + unit).step_by(SECTOR) {
            flash
                .erase_sector(s as usize)
                .expect("erase unit aligned inside the chip");
        }
        self.busy = if unit as usize == nor::SECTOR {
            BUSY_ERASE_64K
        } else {
            BUSY_ERASE_4K
        };
    }

    fn chip_erase(&mut self, flash: &mut FlashMut<'_>) {
        if !self.take_wel() {
            return;
        }
        if !self.protected(flash.as_ref()).is_empty() {
            self.refuse(nor::FSR_ERASE_ERROR);
            return;
        }
        let len = flash.as_ref().len();
        for s in (0..len).step_by(SECTOR) {
            flash.erase_sector(s).expect("sector inside the chip");
        }
        self.busy = BUSY_CHIP_ERASE;
    }
}

/// An address wrapped to a chip of `size` bytes (a power of two): the chip
/// ignores the address bits above its capacity.
fn wrap(addr: u32, size: usize) -> u32 {
    if size.is_power_of_two() {
        addr & (size as u32).wrapping_sub(1)
    } else {
        addr % size as u32
    }
}

fn overlaps(protected: &std::ops::Range<u32>, start: u32, len: u32) -> bool {
    protected.start < start + len && start < protected.end
}

/// The card's flash path: the SPI controller and the NOR chip it drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SpiFlashPort {
    /// The Xilinx AXI Quad SPI core.
    pub controller: XspiController,
    /// The flash chip.
    pub chip: NorChip,
}

impl SpiFlashPort {
    /// A controller at its reset values and a chip whose non-volatile status
    /// register holds `status` (block protection as set at manufacture).
    #[must_use]
    pub fn new(status: u8) -> Self {
        Self {
            controller: XspiController::default(),
            chip: NorChip::new(status),
        }
    }

    /// Power cut or PCIe reset: the controller returns to its reset values
    /// (FIFOs lost) and the chip abandons whatever it was doing without
    /// committing it ([`NorChip::power_cut`]).
    pub fn power_cut(&mut self) {
        self.controller = XspiController::default();
        self.chip.power_cut();
    }

    /// Reads the register at byte offset `off` in the block. Unknown offsets
    /// read all-ones; `DRR` pops the RX FIFO (0 when empty).
    pub fn read(&mut self, off: u32) -> u32 {
        let c = &mut self.controller;
        match off {
            xspi::DGIER => c.dgier,
            xspi::IPISR => c.ipisr,
            xspi::IPIER => c.ipier,
            xspi::CR => c.cr,
            xspi::SR => c.status(),
            xspi::DRR => c.rx.pop().map_or(0, u32::from),
            xspi::SSR => c.ssr,
            xspi::TX_OCCUPANCY => c.tx.occupancy(),
            xspi::RX_OCCUPANCY => c.rx.occupancy(),
            // Write-only registers.
            xspi::SRR | xspi::DTR => 0,
            _ => u32::MAX,
        }
    }

    /// Writes the register at byte offset `off` in the block; bytes that
    /// reach the chip may program or erase `flash`.
    pub fn write(&mut self, off: u32, v: u32, mut flash: FlashMut<'_>) {
        let c = &mut self.controller;
        match off {
            xspi::SRR => {
                if v == xspi::SRR_RESET {
                    // The reset releases slave select: the chip sees it rise.
                    *c = XspiController::default();
                    self.chip.deselect(&mut flash);
                }
                return;
            }
            xspi::CR => {
                let v = v & xspi::CR_MASK;
                if v & xspi::CR_TXFIFO_RESET != 0 {
                    c.tx.clear();
                }
                if v & xspi::CR_RXFIFO_RESET != 0 {
                    c.rx.clear();
                }
                c.cr = v & !(xspi::CR_TXFIFO_RESET | xspi::CR_RXFIFO_RESET);
            }
            xspi::SSR => c.ssr = v,
            xspi::DTR => {
                if !c.tx.push(v as u8) {
                    c.ipisr |= xspi::IPISR_DTR_OVERRUN;
                }
            }
            xspi::IPISR => {
                c.ipisr &= !v;
                return;
            }
            xspi::IPIER => {
                c.ipier = v & IPIER_MASK;
                return;
            }
            xspi::DGIER => {
                c.dgier = v & DGIER_GIE;
                return;
            }
            _ => return,
        }
        self.update_select(&mut flash);
        self.shift(&mut flash);
    }

    /// Manual slave select: the chip is selected exactly while `SSR` asks for it.
    fn update_select(&mut self, flash: &mut FlashMut<'_>) {
        let c = &self.controller;
        let want = c.manual_ss() && c.flash_requested();
        if want && !self.chip.selected {
            self.chip.select();
        } else if !want && self.chip.selected {
            self.chip.deselect(flash);
        }
    }

    /// Shifts the whole TX FIFO out, if the core is enabled.
    fn shift(&mut self, flash: &mut FlashMut<'_>) {
        let c = &mut self.controller;
        if !c.transfers_enabled() || c.tx.is_empty() {
            return;
        }
        // Automatic slave select: asserted for the burst only.
        let auto = !c.manual_ss();
        if auto && c.flash_requested() {
            self.chip.select();
        }
        let looped = c.cr & xspi::CR_LOOP != 0;
        while let Some(b) = c.tx.pop() {
            let answer = if self.chip.selected {
                self.chip.clock(b, flash.as_ref())
            } else {
                IDLE
            };
            let answer = if looped { b } else { answer };
            if !c.rx.push(answer) {
                c.ipisr |= xspi::IPISR_DRR_OVERRUN;
            }
        }
        if auto {
            self.chip.deselect(flash);
        }
    }
}
