//! BAR0 block layouts, one [`Layout`] per board family.
//!
//! Every Time Card block lives in the single memory BAR (BAR0). A [`Layout`]
//! gives the byte offset of each block the Linux `ptp_ocp` driver knows, or
//! `None` when that board's resource table has no such block. The register
//! maps *inside* each block are in [`crate::regs`].
//!
//! UART offsets already include the `+0x1000` at which the 16550 register
//! file starts on the boards whose resource table says so (fb, ADVA, ADVA
//! X1); the ART card's MAC UART has no such shift.
//!
//! Sources: `ptp_ocp.c` resource tables (`ocp_fb_resource`,
//! `ocp_art_resource`, and the ADVA / ADVA X1 tables of newer driver
//! revisions).

/// Initial gains the driver loads into the clock's PI servo registers.
///
/// Values are 16.16 fixed point (`0x1_0000` = 1.0), written to
/// [`crate::regs::clock::SERVO_OFFSET_P`] and friends, then latched with
/// [`crate::regs::clock::CTRL_ADJUST_SERVO`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServoGains {
    /// Offset loop proportional factor.
    pub offset_p: u32,
    /// Offset loop integral factor.
    pub offset_i: u32,
    /// Drift loop proportional factor.
    pub drift_p: u32,
    /// Drift loop integral factor.
    pub drift_i: u32,
}

/// Where each block of one board family sits in BAR0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Adjustable Clock (`ocp_reg`, see [`crate::regs::clock`]).
    pub clock: u32,
    /// Signal timestampers TS0..TS4 (`ts_reg`, see [`crate::regs::ts`]);
    /// index = external-timestamp channel.
    pub ts: [Option<u32>; 5],
    /// Timestamper of the card's own PPS ("TS5", external channel 5).
    pub pps_ts: Option<u32>,
    /// PPS generator driving the PHC SMA output (`pps_reg`, see [`crate::regs::pps`]).
    pub pps_to_ext: Option<u32>,
    /// PPS slave feeding the clock servo (`pps_reg`); its supervision
    /// error is the driver's "GNSS lost" signal.
    pub pps_to_clk: Option<u32>,
    /// TOD slave parsing the GNSS receiver (`tod_reg`, see [`crate::regs::tod`]).
    pub tod: Option<u32>,
    /// TOD master / NMEA output (same `tod_reg` layout).
    pub nmea_out: Option<u32>,
    /// IRIG-B slave (see [`crate::regs::irig`]).
    pub irig_in: Option<u32>,
    /// IRIG-B master.
    pub irig_out: Option<u32>,
    /// DCF77 slave (see [`crate::regs::dcf`]).
    pub dcf_in: Option<u32>,
    /// DCF77 master.
    pub dcf_out: Option<u32>,
    /// Signal generators GEN1..GEN4 (`signal_reg`, see [`crate::regs::signal`]).
    pub signal: [Option<u32>; 4],
    /// Frequency counters FREQ1..FREQ4 (see [`crate::regs::freq`]).
    pub freq: [Option<u32>; 4],
    /// FPGA image version word (see [`crate::regs::image`]).
    pub image: Option<u32>,
    /// Clock detector, which the driver calls `pps_select` (GPIO layout).
    pub pps_select: Option<u32>,
    /// SMA selector slave 1 (GPIO layout, see [`crate::regs::sma`]).
    pub sma_map1: Option<u32>,
    /// SMA selector slave 2 (GPIO layout).
    pub sma_map2: Option<u32>,
    /// I2C controller (EEPROM with board ID and serial number).
    pub i2c: Option<u32>,
    /// 16550 register file of the GNSS1 receiver UART.
    pub gnss_uart: Option<u32>,
    /// 16550 register file of the GNSS2 receiver UART.
    pub gnss2_uart: Option<u32>,
    /// 16550 register file of the atomic-clock (MAC) UART.
    pub mac_uart: Option<u32>,
    /// 16550 register file of the NMEA output UART.
    pub nmea_uart: Option<u32>,
    /// SPI flash controller holding the FPGA bitstream.
    pub spi_flash: Option<u32>,
    /// Byte address in SPI-NOR where a firmware update is written.
    pub flash_start: u32,
    /// Servo gains the driver loads at clock init.
    pub servo: ServoGains,
    /// Size of BAR0 in bytes (a simulator choice, large enough for every block).
    pub bar_len: u64,
}

/// BAR0 size used for every board: 32 MiB.
///
/// No source states the real BAR size; the highest fb block ends below
/// `0x0124_0000` and the FPGA core list sits at `0x0130_0000`, so 32 MiB
/// covers everything.
const BAR_LEN: u64 = 0x0200_0000;

/// Gains the driver uses on fb and ART cards: offset P 1/8, offset I 1/16,
/// no drift correction.
const SERVO_FB: ServoGains = ServoGains {
    offset_p: 0x2000,
    offset_i: 0x1000,
    drift_p: 0,
    drift_i: 0,
};

/// Gains the driver uses on ADVA cards: offset P 3/4, offset I 1/16.
const SERVO_ADVA: ServoGains = ServoGains {
    offset_p: 0xC000,
    offset_i: 0x1000,
    drift_p: 0,
    drift_i: 0,
};

/// ART card: SMA GPIO block (4 entries of one `u32` on a 0x10 stride).
///
/// It has its own format (function in bits 7:0, supported mask in bits
/// 23:16), so it is not one of the [`Layout`] SMA fields.
pub const ART_SMA: u32 = 0x003C_0000;

/// ART card: board configuration block; word 0 is `mro50_serial_activate`.
pub const ART_BOARD_CONFIG: u32 = 0x0021_0000;

/// Meta ("fb") reference card, also used for the Celestica card.
pub const FB: Layout = Layout {
    clock: 0x0100_0000,
    ts: [
        Some(0x0101_0000),
        Some(0x0102_0000),
        Some(0x0106_0000),
        Some(0x0111_0000),
        Some(0x0112_0000),
    ],
    pps_ts: Some(0x010C_0000),
    pps_to_ext: Some(0x0103_0000),
    pps_to_clk: Some(0x0104_0000),
    tod: Some(0x0105_0000),
    nmea_out: Some(0x010B_0000),
    irig_in: Some(0x0107_0000),
    irig_out: Some(0x0108_0000),
    dcf_in: Some(0x0109_0000),
    dcf_out: Some(0x010A_0000),
    signal: [
        Some(0x010D_0000),
        Some(0x010E_0000),
        Some(0x010F_0000),
        Some(0x0110_0000),
    ],
    freq: [
        Some(0x0120_0000),
        Some(0x0121_0000),
        Some(0x0122_0000),
        Some(0x0123_0000),
    ],
    image: Some(0x0002_0000),
    pps_select: Some(0x0013_0000),
    sma_map1: Some(0x0014_0000),
    sma_map2: Some(0x0022_0000),
    i2c: Some(0x0015_0000),
    gnss_uart: Some(0x0016_1000),
    gnss2_uart: Some(0x0017_1000),
    mac_uart: Some(0x0018_1000),
    nmea_uart: Some(0x0019_1000),
    spi_flash: Some(0x0031_0000),
    flash_start: 0x0040_0000,
    servo: SERVO_FB,
    bar_len: BAR_LEN,
};

/// Orolia ART card.
///
/// It has no image block (firmware version comes from the clock's version
/// register), no TOD/PPS/signal/frequency blocks, and SMA routing through
/// [`ART_SMA`] instead of the fb SMA selector.
pub const ART: Layout = Layout {
    clock: 0x0100_0000,
    ts: [
        Some(0x0036_0000),
        Some(0x0038_0000),
        Some(0x0039_0000),
        Some(0x003A_0000),
        Some(0x003B_0000),
    ],
    pps_ts: Some(0x0033_0000),
    pps_to_ext: None,
    pps_to_clk: None,
    tod: None,
    nmea_out: None,
    irig_in: None,
    irig_out: None,
    dcf_in: None,
    dcf_out: None,
    signal: [None; 4],
    freq: [None; 4],
    image: None,
    pps_select: None,
    sma_map1: None,
    sma_map2: None,
    i2c: Some(0x0035_0000),
    gnss_uart: Some(0x0016_1000),
    gnss2_uart: None,
    mac_uart: Some(0x0019_0000),
    nmea_uart: None,
    spi_flash: Some(0x0031_0000),
    flash_start: 0x0100_0000,
    servo: SERVO_FB,
    bar_len: BAR_LEN,
};

/// ADVA Time Card: an fb subset with three timestampers, two signal
/// generators, two frequency counters and an Altera SPI controller.
pub const ADVA: Layout = Layout {
    clock: 0x0100_0000,
    ts: [
        Some(0x0101_0000),
        Some(0x0102_0000),
        Some(0x0106_0000),
        None,
        None,
    ],
    pps_ts: Some(0x010C_0000),
    pps_to_ext: Some(0x0103_0000),
    pps_to_clk: Some(0x0104_0000),
    tod: Some(0x0105_0000),
    nmea_out: None,
    irig_in: None,
    irig_out: None,
    dcf_in: None,
    dcf_out: None,
    signal: [Some(0x010D_0000), Some(0x010E_0000), None, None],
    freq: [Some(0x0120_0000), Some(0x0121_0000), None, None],
    image: Some(0x0002_0000),
    pps_select: Some(0x0013_0000),
    sma_map1: Some(0x0014_0000),
    sma_map2: Some(0x0022_0000),
    i2c: Some(0x0015_0000),
    gnss_uart: Some(0x0016_1000),
    gnss2_uart: None,
    mac_uart: Some(0x0018_1000),
    nmea_uart: None,
    spi_flash: Some(0x0031_0400),
    flash_start: 0x00A0_0000,
    servo: SERVO_ADVA,
    bar_len: BAR_LEN,
};

/// ADVA Time Card X1: fb layout without GNSS2, NMEA, IRIG and DCF.
///
/// Taken from a secondary transcription of a newer driver; not verified
/// against the kernel tree.
pub const ADVA_X1: Layout = Layout {
    clock: 0x0100_0000,
    ts: FB.ts,
    pps_ts: Some(0x010C_0000),
    pps_to_ext: Some(0x0103_0000),
    pps_to_clk: Some(0x0104_0000),
    tod: Some(0x0105_0000),
    nmea_out: None,
    irig_in: None,
    irig_out: None,
    dcf_in: None,
    dcf_out: None,
    signal: FB.signal,
    freq: FB.freq,
    image: Some(0x0002_0000),
    pps_select: Some(0x0013_0000),
    sma_map1: Some(0x0014_0000),
    sma_map2: Some(0x0022_0000),
    i2c: Some(0x0015_0000),
    gnss_uart: Some(0x0016_1000),
    gnss2_uart: None,
    mac_uart: Some(0x0018_1000),
    nmea_uart: None,
    spi_flash: Some(0x0031_0000),
    flash_start: 0x0100_0000,
    servo: SERVO_ADVA,
    bar_len: BAR_LEN,
};

impl Layout {
    /// Every block present on this board as `(name, offset)`, in field order.
    ///
    /// Names follow the field names, with an index suffix for arrays
    /// (`"ts0"`, `"signal3"`, `"freq1"`).
    #[must_use]
    pub fn blocks(&self) -> Vec<(&'static str, u32)> {
        const TS: [&str; 5] = ["ts0", "ts1", "ts2", "ts3", "ts4"];
        const SIGNAL: [&str; 4] = ["signal0", "signal1", "signal2", "signal3"];
        const FREQ: [&str; 4] = ["freq0", "freq1", "freq2", "freq3"];
        let mut out = vec![("clock", self.clock)];
        out.extend(TS.iter().zip(self.ts).filter_map(|(n, o)| Some((*n, o?))));
        let singles_a = [
            ("pps_ts", self.pps_ts),
            ("pps_to_ext", self.pps_to_ext),
            ("pps_to_clk", self.pps_to_clk),
            ("tod", self.tod),
            ("nmea_out", self.nmea_out),
            ("irig_in", self.irig_in),
            ("irig_out", self.irig_out),
            ("dcf_in", self.dcf_in),
            ("dcf_out", self.dcf_out),
        ];
        out.extend(singles_a.iter().filter_map(|(n, o)| Some((*n, (*o)?))));
        out.extend(
            SIGNAL
                .iter()
                .zip(self.signal)
                .filter_map(|(n, o)| Some((*n, o?))),
        );
        out.extend(
            FREQ.iter()
                .zip(self.freq)
                .filter_map(|(n, o)| Some((*n, o?))),
        );
        let singles_b = [
            ("image", self.image),
            ("pps_select", self.pps_select),
            ("sma_map1", self.sma_map1),
            ("sma_map2", self.sma_map2),
            ("i2c", self.i2c),
            ("gnss_uart", self.gnss_uart),
            ("gnss2_uart", self.gnss2_uart),
            ("mac_uart", self.mac_uart),
            ("nmea_uart", self.nmea_uart),
            ("spi_flash", self.spi_flash),
        ];
        out.extend(singles_b.iter().filter_map(|(n, o)| Some((*n, (*o)?))));
        out
    }

    /// Number of signal generators present.
    #[must_use]
    pub fn signal_count(&self) -> usize {
        self.signal.iter().flatten().count()
    }

    /// Number of frequency counters present.
    #[must_use]
    pub fn freq_count(&self) -> usize {
        self.freq.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn fb_offsets_match_resource_table() {
        let l = FB;
        assert_eq!(l.clock, 0x0100_0000);
        assert_eq!(
            l.ts,
            [
                Some(0x0101_0000),
                Some(0x0102_0000),
                Some(0x0106_0000),
                Some(0x0111_0000),
                Some(0x0112_0000)
            ]
        );
        assert_eq!(l.pps_to_ext, Some(0x0103_0000));
        assert_eq!(l.pps_to_clk, Some(0x0104_0000));
        assert_eq!(l.tod, Some(0x0105_0000));
        assert_eq!(l.irig_in, Some(0x0107_0000));
        assert_eq!(l.irig_out, Some(0x0108_0000));
        assert_eq!(l.dcf_in, Some(0x0109_0000));
        assert_eq!(l.dcf_out, Some(0x010A_0000));
        assert_eq!(l.nmea_out, Some(0x010B_0000));
        assert_eq!(l.pps_ts, Some(0x010C_0000));
        assert_eq!(
            l.signal,
            [
                Some(0x010D_0000),
                Some(0x010E_0000),
                Some(0x010F_0000),
                Some(0x0110_0000)
            ]
        );
        assert_eq!(
            l.freq,
            [
                Some(0x0120_0000),
                Some(0x0121_0000),
                Some(0x0122_0000),
                Some(0x0123_0000)
            ]
        );
        assert_eq!(l.image, Some(0x0002_0000));
        assert_eq!(l.pps_select, Some(0x0013_0000));
        assert_eq!(l.sma_map1, Some(0x0014_0000));
        assert_eq!(l.sma_map2, Some(0x0022_0000));
        assert_eq!(l.i2c, Some(0x0015_0000));
        assert_eq!(l.gnss_uart, Some(0x0016_0000 + 0x1000));
        assert_eq!(l.gnss2_uart, Some(0x0017_0000 + 0x1000));
        assert_eq!(l.mac_uart, Some(0x0018_0000 + 0x1000));
        assert_eq!(l.nmea_uart, Some(0x0019_0000 + 0x1000));
        assert_eq!(l.spi_flash, Some(0x0031_0000));
        assert_eq!(l.flash_start, 1024 * 4096);
        assert_eq!(
            l.servo,
            ServoGains {
                offset_p: 0x2000,
                offset_i: 0x1000,
                drift_p: 0,
                drift_i: 0
            }
        );
        assert_eq!(l.bar_len, 32 << 20);
        assert_eq!(l.blocks().len(), 33);
    }

    #[test]
    fn art_offsets_match_resource_table() {
        let l = ART;
        assert_eq!(l.clock, 0x0100_0000);
        assert_eq!(
            l.ts,
            [
                Some(0x0036_0000),
                Some(0x0038_0000),
                Some(0x0039_0000),
                Some(0x003A_0000),
                Some(0x003B_0000)
            ]
        );
        assert_eq!(l.pps_ts, Some(0x0033_0000));
        assert_eq!(l.spi_flash, Some(0x0031_0000));
        assert_eq!(l.i2c, Some(0x0035_0000));
        assert_eq!(l.gnss_uart, Some(0x0016_1000));
        assert_eq!(l.mac_uart, Some(0x0019_0000));
        assert_eq!(l.gnss2_uart, None);
        assert_eq!(l.nmea_uart, None);
        assert_eq!(l.image, None);
        assert_eq!(l.tod, None);
        assert_eq!(l.sma_map1, None);
        assert_eq!(l.signal_count(), 0);
        assert_eq!(l.freq_count(), 0);
        assert_eq!(l.flash_start, 0x0100_0000);
        assert_eq!(l.servo, SERVO_FB);
        assert_eq!(ART_SMA, 0x003C_0000);
        assert_eq!(ART_BOARD_CONFIG, 0x0021_0000);
    }

    #[test]
    fn adva_offsets_match_patch() {
        let l = ADVA;
        assert_eq!(
            l.ts,
            [
                Some(0x0101_0000),
                Some(0x0102_0000),
                Some(0x0106_0000),
                None,
                None
            ]
        );
        assert_eq!(l.pps_ts, Some(0x010C_0000));
        assert_eq!(l.signal_count(), 2);
        assert_eq!(l.freq_count(), 2);
        assert_eq!(l.spi_flash, Some(0x0031_0400));
        assert_eq!(l.i2c, Some(0x0015_0000));
        assert_eq!(l.gnss_uart, Some(0x0016_1000));
        assert_eq!(l.mac_uart, Some(0x0018_1000));
        assert_eq!((l.gnss2_uart, l.nmea_uart, l.nmea_out), (None, None, None));
        assert_eq!(
            (l.irig_in, l.irig_out, l.dcf_in, l.dcf_out),
            (None, None, None, None)
        );
        assert_eq!(l.flash_start, 0x00A0_0000);
        assert_eq!(l.servo.offset_p, 0xC000);
        assert_eq!(l.servo.offset_i, 0x1000);
    }

    #[test]
    fn adva_x1_is_fb_without_gnss2_nmea_irig_dcf() {
        let l = ADVA_X1;
        let fb: HashSet<_> = FB.blocks().into_iter().collect();
        let x1: HashSet<_> = l.blocks().into_iter().collect();
        let missing: HashSet<&str> = fb.difference(&x1).map(|(n, _)| *n).collect();
        let expected: HashSet<&str> = [
            "gnss2_uart",
            "nmea_uart",
            "nmea_out",
            "irig_in",
            "irig_out",
            "dcf_in",
            "dcf_out",
        ]
        .into_iter()
        .collect();
        assert_eq!(missing, expected);
        assert!(x1.is_subset(&fb));
        assert_eq!(l.flash_start, 0x0100_0000);
        assert_eq!(l.servo, SERVO_ADVA);
    }

    #[test]
    fn blocks_fit_the_bar_and_do_not_collide() {
        for l in [FB, ART, ADVA, ADVA_X1] {
            assert_eq!(l.bar_len, 0x0200_0000);
            let blocks = l.blocks();
            let offsets: HashSet<u32> = blocks.iter().map(|(_, o)| *o).collect();
            assert_eq!(
                offsets.len(),
                blocks.len(),
                "duplicate offset in {blocks:?}"
            );
            for (name, off) in blocks {
                assert_eq!(off % 0x400, 0, "{name} misaligned");
                assert!(u64::from(off) + 0x1000 <= l.bar_len, "{name} outside BAR");
            }
        }
    }
}
