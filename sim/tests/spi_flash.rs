//! The configuration-flash path as a driver sees it: every test talks to the
//! Xilinx AXI Quad SPI block through `Sim::read32` / `Sim::write32` only
//! (the `FlashMut` back door is used solely to break what SPI must not be
//! able to break).

use timecard_hw::firmware;
use timecard_hw::pci::Board;
use timecard_hw::spi::{nor, xspi};
use timecard_sim::card::{self, GOLDEN_VERSION};
use timecard_sim::spi::{BUSY_CHIP_ERASE, BUSY_ERASE_4K, BUSY_ERASE_64K, BUSY_PAGE_PROGRAM};
use timecard_sim::{DEFAULT_FIRMWARE_VERSION, Fault, Sim, SimConfig};

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const CR_IDLE: u32 = xspi::CR_SPE | xspi::CR_MASTER | xspi::CR_MANUAL_SS | xspi::CR_INHIBIT;

fn sim_for(board: Board) -> Sim {
    Sim::new(&SimConfig {
        board,
        start_tai_ns: Some(T0),
        ..SimConfig::default()
    })
    .unwrap()
}

/// A driver's view of the SPI block: raw register accesses and SPI commands.
struct Spi<'a> {
    sim: &'a Sim,
    base: u32,
}

impl<'a> Spi<'a> {
    /// Resets the controller and sets it up for manual slave select.
    fn new(sim: &'a Sim) -> Self {
        let base = sim.snapshot_board().layout().spi_flash.unwrap();
        let s = Self { sim, base };
        s.wr(xspi::SRR, xspi::SRR_RESET);
        s.wr(xspi::SSR, xspi::SSR_NONE);
        s.wr(
            xspi::CR,
            CR_IDLE | xspi::CR_TXFIFO_RESET | xspi::CR_RXFIFO_RESET,
        );
        s
    }

    fn rd(&self, off: u32) -> u32 {
        self.sim.read32(self.base + off)
    }

    fn wr(&self, off: u32, v: u32) {
        self.sim.write32(self.base + off, v);
    }

    /// Shifts `out` to the chip with chip select held, chunked by FIFO depth:
    /// inhibit, fill TX, select, uninhibit, drain RX. Returns every byte received.
    fn shift(&self, out: &[u8]) -> Vec<u8> {
        let mut got = Vec::with_capacity(out.len());
        for chunk in out.chunks(xspi::FIFO_DEPTH) {
            self.wr(xspi::CR, CR_IDLE);
            for b in chunk {
                self.wr(xspi::DTR, u32::from(*b));
            }
            self.wr(xspi::SSR, xspi::SSR_FLASH);
            self.wr(xspi::CR, CR_IDLE & !xspi::CR_INHIBIT);
            assert_ne!(self.rd(xspi::SR) & xspi::SR_TX_EMPTY, 0);
            for _ in chunk {
                assert_eq!(self.rd(xspi::SR) & xspi::SR_RX_EMPTY, 0);
                got.push(self.rd(xspi::DRR) as u8);
            }
            self.wr(xspi::CR, CR_IDLE);
        }
        got
    }

    fn deselect(&self) {
        self.wr(xspi::SSR, xspi::SSR_NONE);
    }

    /// One complete command: sends `out`, then clocks `n_in` bytes in.
    fn xfer(&self, out: &[u8], n_in: usize) -> Vec<u8> {
        let mut bytes = out.to_vec();
        bytes.resize(out.len() + n_in, 0xFF);
        let got = self.shift(&bytes);
        self.deselect();
        got[out.len()..].to_vec()
    }

    fn cmd(&self, out: &[u8]) {
        self.xfer(out, 0);
    }

    fn status(&self) -> u8 {
        self.xfer(&[nor::RDSR], 1)[0]
    }

    fn flag_status(&self) -> u8 {
        self.xfer(&[nor::RDFSR], 1)[0]
    }

    /// Polls RDSR until WIP clears; returns how many reads showed it set.
    fn wait_ready(&self) -> u32 {
        let mut busy = 0;
        while self.status() & nor::SR_WIP != 0 {
            busy += 1;
            assert!(busy < 1000, "chip stuck busy");
        }
        busy
    }

    fn read(&self, addr: u32, n: usize) -> Vec<u8> {
        self.xfer(&addr4(nor::READ_4B, addr), n)
    }

    fn erase_4k(&self, addr: u32) -> u32 {
        self.cmd(&[nor::WREN]);
        self.cmd(&addr4(nor::SE_4K_4B, addr));
        self.wait_ready()
    }

    fn program(&self, addr: u32, data: &[u8]) -> u32 {
        self.cmd(&[nor::WREN]);
        let mut out = addr4(nor::PP_4B, addr).to_vec();
        out.extend_from_slice(data);
        self.cmd(&out);
        self.wait_ready()
    }

    /// Erases and programs `data` at the 4 KiB-aligned `addr`, as devlink does.
    fn write(&self, addr: u32, data: &[u8]) {
        for (i, block) in data.chunks(nor::SUBSECTOR).enumerate() {
            let a = addr + (i * nor::SUBSECTOR) as u32;
            self.erase_4k(a);
            for (j, page) in block.chunks(nor::PAGE).enumerate() {
                self.program(a + (j * nor::PAGE) as u32, page);
            }
            assert_eq!(self.flag_status(), nor::FSR_READY, "write at {a:#x}");
        }
    }
}

/// The board a simulator was built for (from its image register layout).
trait BoardOf {
    fn snapshot_board(&self) -> Board;
}

impl BoardOf for Sim {
    fn snapshot_board(&self) -> Board {
        self.with(|c, _| c.card.identity.board())
    }
}

fn addr4(op: u8, addr: u32) -> [u8; 5] {
    let a = addr.to_be_bytes();
    [op, a[0], a[1], a[2], a[3]]
}

fn image(board: Board, version: u32) -> Vec<u8> {
    firmware::pack(&card::make_bitstream(version, 64 * 1024), board.id(), 1).unwrap()
}

fn flash_start(sim: &Sim) -> u32 {
    sim.snapshot_board().layout().flash_start
}

fn image_register(sim: &Sim) -> u32 {
    sim.read32(sim.snapshot_board().layout().image.unwrap())
}

#[test]
fn rdid_and_both_image_headers() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    assert_eq!(spi.xfer(&[nor::RDID], 5), [0x20, 0xBA, 0x19, 0x10, 0x00]);
    assert_eq!(
        nor::chip_by_id([0x20, 0xBA, 0x19]).unwrap().size as usize,
        card::FLASH_LEN
    );
    let golden = image(Board::Meta, GOLDEN_VERSION);
    assert_eq!(spi.read(0, 16), golden[..16]);
    assert_eq!(&spi.read(0, 4)[..], b"OCPC");
    let regular = image(Board::Meta, DEFAULT_FIRMWARE_VERSION);
    assert_eq!(spi.read(flash_start(&sim), 16), regular[..16]);
    // 3-byte READ of the same bytes, and a whole image read back in one command.
    assert_eq!(spi.xfer(&[nor::READ, 0x40, 0, 0], 16), regular[..16]);
    assert_eq!(spi.read(flash_start(&sim), regular.len()), regular);
    let snap = sim.snapshot();
    assert_eq!(snap.boot, "regular");
    assert!(snap.regular_image);
}

#[test]
fn erase_program_read_round_trip_in_the_image_region() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let addr = flash_start(&sim) + (1 << 20);
    assert_eq!(spi.erase_4k(addr + 0x123), BUSY_ERASE_4K);
    assert_eq!(spi.read(addr, 4096), vec![0xFF; 4096]);
    let page: Vec<u8> = (0..=255u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
    assert_eq!(spi.program(addr + 256, &page), BUSY_PAGE_PROGRAM);
    assert_eq!(spi.read(addr + 256, 256), page);
    assert_eq!(spi.read(addr, 256), vec![0xFF; 256]);
    assert_eq!(spi.flag_status(), nor::FSR_READY);
    // NOR AND: programming again can only clear bits.
    spi.program(addr + 256, &[0x0F; 4]);
    let back = spi.read(addr + 256, 4);
    assert_eq!(back, page[..4].iter().map(|b| b & 0x0F).collect::<Vec<_>>());
    // A 64 KiB erase clears all of its sector.
    spi.cmd(&[nor::WREN]);
    spi.cmd(&addr4(nor::SE_64K_4B, addr + 0x8000));
    assert_eq!(spi.wait_ready(), BUSY_ERASE_64K);
    assert_eq!(spi.read(addr + 256, 4), [0xFF; 4]);
}

#[test]
fn page_program_wraps_inside_the_page() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let page = flash_start(&sim) + 0x20_0000;
    spi.erase_4k(page);
    let data: Vec<u8> = (0..100u8).collect();
    spi.program(page + 200, &data);
    let back = spi.read(page, 512);
    assert_eq!(back[200..256], data[..56]);
    assert_eq!(back[..44], data[56..]);
    assert!(back[44..200].iter().all(|b| *b == 0xFF));
    assert!(
        back[256..].iter().all(|b| *b == 0xFF),
        "next page untouched"
    );
}

#[test]
fn program_and_erase_need_write_enable() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let addr = flash_start(&sim) + 0x30_0000;
    spi.erase_4k(addr);
    let status = spi.status();
    assert_eq!(status & nor::SR_WEL, 0);
    // No WREN: ignored, not busy.
    let mut out = addr4(nor::PP_4B, addr).to_vec();
    out.extend_from_slice(&[0; 16]);
    spi.cmd(&out);
    assert_eq!(spi.wait_ready(), 0);
    assert_eq!(spi.read(addr, 16), [0xFF; 16]);
    // WREN sets WEL, WRDI clears it again.
    spi.cmd(&[nor::WREN]);
    assert_ne!(spi.status() & nor::SR_WEL, 0);
    spi.cmd(&[nor::WRDI]);
    assert_eq!(spi.status() & nor::SR_WEL, 0);
    spi.cmd(&out);
    assert_eq!(spi.read(addr, 16), [0xFF; 16]);
    // WEL is used up by one program.
    spi.program(addr, &[0x00]);
    assert_eq!(spi.status() & nor::SR_WEL, 0);
    spi.cmd(&out);
    assert_eq!(spi.read(addr, 2), [0x00, 0xFF]);
    // An erase whose address is cut short does nothing (and keeps WEL).
    spi.cmd(&[nor::WREN]);
    let a = addr4(nor::SE_4K_4B, addr);
    spi.cmd(&a[..4]);
    assert_eq!(spi.wait_ready(), 0);
    assert_eq!(spi.read(addr, 1), [0x00]);
    assert_ne!(spi.status() & nor::SR_WEL, 0);
}

#[test]
fn commands_are_ignored_while_busy() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let addr = flash_start(&sim) + 0x40_0000;
    spi.cmd(&[nor::WREN]);
    spi.cmd(&addr4(nor::SE_4K_4B, addr));
    // Busy: WREN and READ are ignored; the flag status says not ready.
    spi.cmd(&[nor::WREN]);
    assert_eq!(spi.read(addr, 2), [0xFF, 0xFF]);
    assert_eq!(spi.flag_status() & nor::FSR_READY, 0);
    spi.wait_ready();
    assert_eq!(
        spi.status() & nor::SR_WEL,
        0,
        "WREN sent while busy was lost"
    );
    assert_eq!(spi.flag_status(), nor::FSR_READY);
    // Status can also be polled by clocking many bytes in one RDSR.
    spi.cmd(&[nor::WREN]);
    spi.cmd(&addr4(nor::SE_4K_4B, addr));
    let polled = spi.xfer(&[nor::RDSR], 8);
    let busy = polled.iter().filter(|s| *s & nor::SR_WIP != 0).count();
    assert_eq!(busy as u32, BUSY_ERASE_4K);
}

#[test]
fn golden_region_is_protected_against_everything_spi_can_send() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let start = flash_start(&sim);
    let expected = nor::bottom_protection(start).unwrap();
    assert_eq!(spi.status(), expected);
    assert_eq!(nor::protected_range(spi.status(), 32 << 20), 0..start);
    let golden = spi.read(0, 64 * 1024 + 16);
    let errors = nor::FSR_PROTECTION_ERROR | nor::FSR_ERASE_ERROR | nor::FSR_PROGRAM_ERROR;

    // Sub-sector erase at 0: refused, flagged.
    assert_eq!(spi.erase_4k(0), 0);
    assert_eq!(
        spi.flag_status(),
        nor::FSR_READY | nor::FSR_PROTECTION_ERROR | nor::FSR_ERASE_ERROR
    );
    // Sticky until CLFSR.
    assert_ne!(spi.flag_status() & errors, 0);
    spi.cmd(&[nor::CLFSR]);
    assert_eq!(spi.flag_status(), nor::FSR_READY);

    // Program into the golden header.
    spi.program(0, &[0; 16]);
    assert_eq!(
        spi.flag_status(),
        nor::FSR_READY | nor::FSR_PROTECTION_ERROR | nor::FSR_PROGRAM_ERROR
    );
    spi.cmd(&[nor::CLFSR]);

    // The last 64 KiB sector below flash_start, with both address widths.
    spi.cmd(&[nor::WREN]);
    spi.cmd(&addr4(nor::SE_64K_4B, start - 1));
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::SE_4K, 0, 0, 0]);
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::PP, 0, 0x10, 0, 0]);
    assert_eq!(spi.flag_status() & errors, errors);
    spi.cmd(&[nor::CLFSR]);

    // Clearing the protection: ignored (W# low, SRWD set).
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::WRSR, 0x00]);
    assert_eq!(spi.wait_ready(), 0);
    assert_eq!(spi.status(), expected);
    assert_eq!(spi.erase_4k(0), 0);
    assert_ne!(spi.flag_status() & nor::FSR_PROTECTION_ERROR, 0);
    spi.cmd(&[nor::CLFSR]);

    // Chip erase, both opcodes: refused.
    for op in [nor::CHIP_ERASE, nor::CHIP_ERASE_ALT] {
        spi.cmd(&[nor::WREN]);
        spi.cmd(&[op]);
        assert_eq!(spi.wait_ready(), 0);
        assert_eq!(
            spi.flag_status(),
            nor::FSR_READY | nor::FSR_PROTECTION_ERROR | nor::FSR_ERASE_ERROR
        );
        spi.cmd(&[nor::CLFSR]);
    }

    assert_eq!(spi.read(0, golden.len()), golden);
    assert_eq!(
        spi.read(start, 16),
        image(Board::Meta, DEFAULT_FIRMWARE_VERSION)[..16]
    );
    // Protection survives a power cycle.
    sim.inject(&Fault::ResetFpga);
    let spi = Spi::new(&sim);
    assert_eq!(spi.status(), expected);
}

#[test]
fn protection_covers_each_boards_golden_region() {
    for board in [Board::Meta, Board::Celestica, Board::AdvaX1] {
        let sim = sim_for(board);
        let spi = Spi::new(&sim);
        let start = flash_start(&sim);
        assert_eq!(spi.xfer(&[nor::RDID], 3), [0x20, 0xBA, 0x19], "{board}");
        assert_eq!(
            nor::protected_range(spi.status(), 32 << 20),
            0..start,
            "{board}"
        );
        assert_eq!(spi.read(0, 16), image(board, GOLDEN_VERSION)[..16]);
        spi.erase_4k(start - 4096);
        assert_ne!(spi.flag_status() & nor::FSR_PROTECTION_ERROR, 0);
        spi.cmd(&[nor::CLFSR]);
        spi.erase_4k(start);
        assert_eq!(spi.flag_status(), nor::FSR_READY, "{board}");
        assert_eq!(spi.read(start, 4), [0xFF; 4]);
    }
}

#[test]
fn fifo_reset_values_occupancy_overruns_and_resets() {
    let sim = sim_for(Board::Meta);
    let base = sim.snapshot_board().layout().spi_flash.unwrap();
    let rd = |off| sim.read32(base + off);
    let wr = |off, v| sim.write32(base + off, v);
    assert_eq!(rd(xspi::CR), xspi::CR_MANUAL_SS | xspi::CR_INHIBIT);
    assert_eq!(rd(xspi::SSR), xspi::SSR_NONE);
    assert_eq!(rd(xspi::SR), xspi::SR_RX_EMPTY | xspi::SR_TX_EMPTY);
    assert_eq!(rd(xspi::IPISR), 0);
    assert_eq!(rd(xspi::IPIER), 0);
    assert_eq!(rd(xspi::DGIER), 0);
    assert_eq!(rd(xspi::TX_OCCUPANCY), 0);
    assert_eq!(rd(xspi::RX_OCCUPANCY), 0);
    assert_eq!(rd(xspi::DRR), 0, "empty RX FIFO reads 0");
    assert_eq!(rd(0x80), u32::MAX, "unknown offset");
    wr(0x80, 5);
    assert_eq!(rd(0x80), u32::MAX);

    // TX: fill while inhibited, one byte too many.
    wr(xspi::CR, CR_IDLE);
    wr(xspi::DTR, 0xAA);
    assert_eq!(rd(xspi::TX_OCCUPANCY), 0);
    assert_eq!(rd(xspi::SR) & xspi::SR_TX_EMPTY, 0);
    wr(xspi::DTR, 0xAB);
    assert_eq!(rd(xspi::TX_OCCUPANCY), 1);
    for _ in 2..xspi::FIFO_DEPTH {
        wr(xspi::DTR, nor::RDSR.into());
    }
    assert_eq!(rd(xspi::TX_OCCUPANCY), 255);
    assert_ne!(rd(xspi::SR) & xspi::SR_TX_FULL, 0);
    assert_eq!(rd(xspi::IPISR), 0);
    wr(xspi::DTR, 0);
    assert_eq!(rd(xspi::IPISR), xspi::IPISR_DTR_OVERRUN);
    wr(xspi::IPISR, xspi::IPISR_DTR_OVERRUN);
    assert_eq!(rd(xspi::IPISR), 0);
    // TX FIFO reset: empties it and reads back clear.
    wr(xspi::CR, CR_IDLE | xspi::CR_TXFIFO_RESET);
    assert_eq!(rd(xspi::CR), CR_IDLE);
    assert_eq!(rd(xspi::TX_OCCUPANCY), 0);
    assert_ne!(rd(xspi::SR) & xspi::SR_TX_EMPTY, 0);

    // RX: 256 bytes from a deselected flash read 0xFF and fill the FIFO.
    for _ in 0..xspi::FIFO_DEPTH {
        wr(xspi::DTR, 0);
    }
    wr(xspi::CR, CR_IDLE & !xspi::CR_INHIBIT);
    assert_eq!(rd(xspi::RX_OCCUPANCY), 255);
    assert_ne!(rd(xspi::SR) & xspi::SR_RX_FULL, 0);
    assert_eq!(rd(xspi::IPISR), 0);
    // Not inhibited: a DTR write shifts at once, the answer finds RX full.
    wr(xspi::DTR, 0);
    assert_eq!(rd(xspi::IPISR), xspi::IPISR_DRR_OVERRUN);
    assert_ne!(rd(xspi::SR) & xspi::SR_TX_EMPTY, 0);
    assert_eq!(rd(xspi::DRR), 0xFF);
    assert_eq!(rd(xspi::RX_OCCUPANCY), 254);
    wr(xspi::CR, CR_IDLE | xspi::CR_RXFIFO_RESET);
    assert_eq!(rd(xspi::SR), xspi::SR_RX_EMPTY | xspi::SR_TX_EMPTY);
    // IPISR is write-one-to-clear: other bits stay.
    wr(xspi::IPISR, 0);
    assert_eq!(rd(xspi::IPISR), xspi::IPISR_DRR_OVERRUN);

    // CR writes are masked; SRR takes only its magic value.
    wr(xspi::CR, u32::MAX);
    assert_eq!(
        rd(xspi::CR),
        xspi::CR_MASK & !(xspi::CR_TXFIFO_RESET | xspi::CR_RXFIFO_RESET)
    );
    wr(xspi::SRR, 1);
    assert_eq!(
        rd(xspi::CR),
        xspi::CR_MASK & !(xspi::CR_TXFIFO_RESET | xspi::CR_RXFIFO_RESET),
        "SRR ignores other values"
    );
    wr(xspi::IPIER, u32::MAX);
    wr(xspi::DGIER, u32::MAX);
    assert_eq!(rd(xspi::DGIER), 1 << 31);
    wr(xspi::SRR, xspi::SRR_RESET);
    assert_eq!(rd(xspi::CR), xspi::CR_MANUAL_SS | xspi::CR_INHIBIT);
    assert_eq!(rd(xspi::IPISR), 0);
    assert_eq!(rd(xspi::IPIER), 0);
    assert_eq!(rd(xspi::DGIER), 0);
}

#[test]
fn automatic_slave_select_frames_each_burst() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let auto = xspi::CR_SPE | xspi::CR_MASTER;
    spi.wr(xspi::SSR, xspi::SSR_FLASH);
    spi.wr(xspi::CR, auto | xspi::CR_INHIBIT);
    for b in [nor::RDID, 0, 0, 0] {
        spi.wr(xspi::DTR, b.into());
    }
    spi.wr(xspi::CR, auto);
    let got: Vec<u32> = (0..4).map(|_| spi.rd(xspi::DRR)).collect();
    assert_eq!(got, [0xFF, 0x20, 0xBA, 0x19]);
    // Each DTR write is its own burst: WREN takes effect at once.
    spi.wr(xspi::DTR, nor::WREN.into());
    spi.rd(xspi::DRR);
    spi.wr(xspi::CR, auto | xspi::CR_INHIBIT);
    spi.wr(xspi::DTR, nor::RDSR.into());
    spi.wr(xspi::DTR, 0);
    spi.wr(xspi::CR, auto);
    spi.rd(xspi::DRR);
    assert_ne!(spi.rd(xspi::DRR) as u8 & nor::SR_WEL, 0);
    // Slave select not asked for: the flash never sees the bytes.
    spi.wr(xspi::SSR, xspi::SSR_NONE);
    spi.wr(xspi::DTR, nor::RDID.into());
    spi.wr(xspi::DTR, 0);
    assert_eq!([spi.rd(xspi::DRR), spi.rd(xspi::DRR)], [0xFF, 0xFF]);
}

#[test]
fn fpga_reset_mid_page_program_commits_nothing() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let addr = flash_start(&sim) + 0x50_0000;
    spi.erase_4k(addr);
    spi.cmd(&[nor::WREN]);
    let mut out = addr4(nor::PP_4B, addr).to_vec();
    out.extend_from_slice(&[0x00; 200]);
    spi.shift(&out);
    // Leave a few bytes in the TX FIFO too, inhibited.
    spi.wr(xspi::DTR, 0);
    spi.wr(xspi::DTR, 0);
    sim.inject(&Fault::ResetFpga);

    let rd = |off| sim.read32(spi.base + off);
    assert_eq!(rd(xspi::CR), xspi::CR_MANUAL_SS | xspi::CR_INHIBIT);
    assert_eq!(rd(xspi::SSR), xspi::SSR_NONE);
    assert_eq!(rd(xspi::SR), xspi::SR_RX_EMPTY | xspi::SR_TX_EMPTY);
    assert_eq!(rd(xspi::TX_OCCUPANCY), 0);
    let spi = Spi::new(&sim);
    assert_eq!(spi.read(addr, 256), vec![0xFF; 256]);
    assert_eq!(
        spi.status(),
        nor::bottom_protection(flash_start(&sim)).unwrap()
    );
    assert_eq!(spi.flag_status(), nor::FSR_READY);
    assert_eq!(sim.snapshot().boot, "regular");
}

#[test]
fn controller_reset_releases_select_and_the_chip_acts() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let addr = flash_start(&sim) + 0x60_0000;
    spi.erase_4k(addr);
    spi.cmd(&[nor::WREN]);
    let mut out = addr4(nor::PP_4B, addr).to_vec();
    out.extend_from_slice(&[0x11; 4]);
    spi.shift(&out);
    // SRR drives slave select high: to the chip that is the end of the command.
    spi.wr(xspi::SRR, xspi::SRR_RESET);
    let spi = Spi::new(&sim);
    spi.wait_ready();
    assert_eq!(spi.read(addr, 5), [0x11, 0x11, 0x11, 0x11, 0xFF]);
}

#[test]
fn reflash_through_spi_falls_back_to_golden_then_boots_the_new_image() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let start = flash_start(&sim);
    assert_eq!(image_register(&sim), DEFAULT_FIRMWARE_VERSION);

    // An interrupted update: the header block is gone.
    spi.erase_4k(start);
    sim.inject(&Fault::ResetFpga);
    let snap = sim.snapshot();
    assert_eq!(snap.boot, "golden-fallback");
    assert!(!snap.regular_image);
    assert_eq!(snap.image_version, GOLDEN_VERSION);
    assert_eq!(image_register(&sim), GOLDEN_VERSION);

    // The golden image still drives the flash: write a new image.
    let spi = Spi::new(&sim);
    let new_version = 0x0000_8015;
    let img = image(Board::Meta, new_version);
    spi.write(start, &img);
    assert_eq!(spi.read(start, img.len()), img);
    sim.inject(&Fault::ResetFpga);
    let snap = sim.snapshot();
    assert_eq!(snap.boot, "regular");
    assert!(snap.regular_image);
    assert_eq!(snap.image_version, new_version);
    assert_eq!(image_register(&sim), new_version);

    // An image for another board does not boot.
    let spi = Spi::new(&sim);
    spi.write(start, &image(Board::AdvaX1, 0x0000_8016));
    sim.inject(&Fault::ResetFpga);
    assert_eq!(sim.snapshot().boot, "golden-fallback");
}

#[test]
fn spi_cannot_brick_the_card_but_the_back_door_can() {
    let sim = sim_for(Board::Meta);
    let spi = Spi::new(&sim);
    let start = flash_start(&sim);
    // Everything SPI allows against the golden image, then kill the regular one.
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::WRSR, 0]);
    spi.wait_ready();
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::CHIP_ERASE]);
    spi.wait_ready();
    for a in (0..start).step_by(nor::SECTOR) {
        spi.cmd(&[nor::WREN]);
        spi.cmd(&addr4(nor::SE_64K_4B, a));
        spi.wait_ready();
    }
    spi.erase_4k(start);
    sim.inject(&Fault::ResetFpga);
    assert_eq!(sim.snapshot().boot, "golden-fallback");
    assert_eq!(image_register(&sim), GOLDEN_VERSION);

    // The back door (a flash programmer on the board) destroys the golden image.
    sim.with(|_, mut flash| flash.erase_sector(0).unwrap());
    sim.inject(&Fault::ResetFpga);
    let snap = sim.snapshot();
    assert_eq!(snap.boot, "no-image");
    assert!(!snap.regular_image);
    let layout = sim.snapshot_board().layout();
    assert_eq!(image_register(&sim), u32::MAX);
    assert_eq!(sim.read32(layout.clock), u32::MAX);
    let base = layout.spi_flash.unwrap();
    for off in [xspi::CR, xspi::SR, xspi::SSR, xspi::DRR] {
        assert_eq!(sim.read32(base + off), u32::MAX);
    }
    // Writes are lost too: no RDID answer can be had.
    sim.write32(base + xspi::CR, CR_IDLE & !xspi::CR_INHIBIT);
    sim.write32(base + xspi::SSR, xspi::SSR_FLASH);
    sim.write32(base + xspi::DTR, nor::RDID.into());
    sim.write32(base + xspi::DTR, 0);
    assert_eq!(sim.read32(base + xspi::DRR), u32::MAX);
}

#[test]
fn removed_card_spi_block_reads_all_ones() {
    let sim = sim_for(Board::Meta);
    let base = sim.snapshot_board().layout().spi_flash.unwrap();
    sim.inject(&Fault::CardRemoved);
    assert_eq!(sim.read32(base + xspi::CR), u32::MAX);
    sim.write32(base + xspi::SRR, xspi::SRR_RESET);
    sim.inject(&Fault::CardRestored);
    let spi = Spi::new(&sim);
    assert_eq!(spi.xfer(&[nor::RDID], 3), [0x20, 0xBA, 0x19]);
}

#[test]
fn chip_erase_works_once_protection_is_off() {
    // A card whose status register was cleared before assembly (the back door
    // stands for the programmer): chip erase then erases everything.
    let sim = sim_for(Board::Meta);
    sim.with(|c, _| c.card.spi.chip = timecard_sim::spi::NorChip::new(0));
    let spi = Spi::new(&sim);
    assert_eq!(spi.status(), 0);
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::CHIP_ERASE_ALT]);
    assert_eq!(spi.wait_ready(), BUSY_CHIP_ERASE);
    assert_eq!(spi.read(0, 4), [0xFF; 4]);
    assert_eq!(spi.read(flash_start(&sim), 4), [0xFF; 4]);
    // And WRSR works while SRWD is clear: set protection, then it sticks.
    let prot = nor::bottom_protection(flash_start(&sim)).unwrap();
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::WRSR, prot]);
    spi.wait_ready();
    assert_eq!(spi.status(), prot);
    spi.cmd(&[nor::WREN]);
    spi.cmd(&[nor::WRSR, 0]);
    assert_eq!(spi.status(), prot);
}

#[test]
fn shared_memory_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.bar");
    let a = Sim::create_file(
        &path,
        &SimConfig {
            start_tai_ns: Some(T0),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let b = Sim::open_file(&path).unwrap();
    let spi_a = Spi::new(&a);
    assert_eq!(spi_a.xfer(&[nor::RDID], 3), [0x20, 0xBA, 0x19]);
    let start = flash_start(&a);
    let img = image(Board::Meta, 0x0000_8021);
    spi_a.write(start, &img);
    // The other handle (another process, in real use) reads it back.
    let spi_b = Spi::new(&b);
    assert_eq!(spi_b.read(start, img.len()), img);
    assert_eq!(spi_b.read(0, 16), image(Board::Meta, GOLDEN_VERSION)[..16]);
    spi_b.erase_4k(0);
    assert_ne!(spi_a.flag_status() & nor::FSR_PROTECTION_ERROR, 0);
    b.inject(&Fault::ResetFpga);
    assert_eq!(a.snapshot().image_version, 0x0000_8021);
    assert_eq!(image_register(&a), 0x0000_8021);
}
