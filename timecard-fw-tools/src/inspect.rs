//! `inspect`: everything an image's header says, checked against its payload.
//!
//! [`InspectReport::new`] needs only a parsable header; size and CRC problems
//! are reported in the verdict, not as errors. Hex-ish values (PCI IDs, CRCs,
//! the raw version word) are strings in JSON; sizes and the revision are numbers.

use std::io::{self, Write};

use serde::Serialize;
use timecard_hw::firmware::{self, ImageError, ImageHeader};
use timecard_hw::pci::{Board, PciId};
use timecard_hw::regs::image::{Capabilities, FirmwareVersion};
use timecard_sim::card::bitstream_version;

use crate::parse::board_key;

/// The decoded header and what the payload turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InspectReport {
    /// The file, as named on the command line.
    pub file: String,
    /// Its length in bytes, header included.
    pub file_size: u64,
    /// The magic (always `OCPC`: without it there is no report).
    pub magic: String,
    /// `vvvv:dddd` from the header.
    pub pci_id: String,
    /// Vendor ID, `0x1d9b` style.
    pub vendor: String,
    /// Device ID, `0x0400` style.
    pub device: String,
    /// The board's short name (`meta`, …), `null` for an unknown device.
    pub board: Option<&'static str>,
    /// The board's full name, or `unknown device`.
    pub board_name: &'static str,
    /// Payload size: header field vs actual bytes after the header.
    pub payload_size: SizeField,
    /// Hardware revision from the header (the driver ignores it).
    pub hw_revision: u16,
    /// CRC-16: header field vs computed over the actual payload.
    pub crc: CrcField,
    /// Present when the payload is a simulator bitstream.
    pub simulator_bitstream: Option<SimBitstream>,
    /// Whether the image passes every check except compatibility.
    pub valid: bool,
    /// `size` or `crc` when a check failed, else `null`.
    pub failed_check: Option<&'static str>,
    /// One-line verdict.
    pub verdict: String,
}

/// The header's payload size and the actual one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SizeField {
    /// `image_size` in the header.
    pub header: u32,
    /// Bytes after the header in the file.
    pub actual: u64,
    /// Whether they agree.
    pub matches: bool,
}

/// The header's CRC and the computed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CrcField {
    /// CRC in the header, `0x1234` style.
    pub header: String,
    /// CRC-16/MODBUS of the bytes after the header.
    pub computed: String,
    /// Whether they agree.
    pub matches: bool,
}

/// What a simulated card would boot from this payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimBitstream {
    /// The image-version register value it carries, `0x00008014` style.
    pub raw: String,
    /// `fw`, or `loader` for a golden-image version word.
    pub kind: &'static str,
    /// `<tag>.<version>` as devlink shows it.
    pub version: String,
    /// `fw 1.20` style: what `devlink dev info` / `timecard status` would show.
    pub boots: String,
    /// Driver features this version enables.
    pub capabilities: Capabilities,
}

impl SimBitstream {
    /// Decodes a simulator bitstream's version word.
    #[must_use]
    pub fn from_raw(raw: u32) -> Self {
        let v = FirmwareVersion::decode_fb(raw);
        let kind = if v.loader { "loader" } else { "fw" };
        Self {
            raw: format!("0x{raw:08x}"),
            kind,
            version: v.to_string(),
            boots: format!("{kind} {v}"),
            capabilities: v.capabilities(),
        }
    }
}

/// Capabilities in words: `basic, signal generators, frequency counters`.
#[must_use]
pub fn capability_words(c: Capabilities) -> String {
    let mut words = vec!["basic"];
    if c.signal {
        words.push("signal generators");
    }
    if c.freq {
        words.push("frequency counters");
    }
    words.join(", ")
}

/// `Meta OCP Time Card` or `unknown device`.
#[must_use]
pub fn board_name(id: PciId) -> &'static str {
    Board::from_id(id).map_or("unknown device", Board::name)
}

/// `valid OCPC image for Meta OCP Time Card`, or for an unknown ID.
#[must_use]
pub fn valid_verdict(id: PciId) -> String {
    match Board::from_id(id) {
        Some(b) => format!("valid OCPC image for {}", b.name()),
        None => format!("valid OCPC image for unknown device {id} (not a Time Card ptp_ocp knows)"),
    }
}

impl InspectReport {
    /// Inspects `image` (named `file` in the report).
    ///
    /// # Errors
    /// [`ImageError::TooShort`] or [`ImageError::NoHeader`] when there is no header to report on.
    pub fn new(file: &str, image: &[u8]) -> Result<Self, ImageError> {
        let header = ImageHeader::parse(image)?;
        let body = firmware::payload(image);
        let computed = firmware::crc16(body);
        let id = header.id();
        let (valid, failed_check, verdict) = match firmware::verify(image, None) {
            Ok(_) => (true, None, valid_verdict(id)),
            Err(e) => {
                let check = match e {
                    ImageError::SizeMismatch { .. } | ImageError::PayloadTooLarge { .. } => "size",
                    ImageError::CrcMismatch { .. } => "crc",
                    ImageError::TooShort { .. } | ImageError::NoHeader => "magic",
                    ImageError::Incompatible { .. } => "compatibility",
                };
                (false, Some(check), e.to_string())
            }
        };
        Ok(Self {
            file: file.to_owned(),
            file_size: image.len() as u64,
            magic: String::from_utf8_lossy(&firmware::MAGIC).into_owned(),
            pci_id: id.to_string(),
            vendor: format!("0x{:04x}", header.vendor),
            device: format!("0x{:04x}", header.device),
            board: Board::from_id(id).map(board_key),
            board_name: board_name(id),
            payload_size: SizeField {
                header: header.image_size,
                actual: body.len() as u64,
                matches: u64::from(header.image_size) == body.len() as u64,
            },
            hw_revision: header.hw_revision,
            crc: CrcField {
                header: format!("0x{:04x}", header.crc),
                computed: format!("0x{computed:04x}"),
                matches: computed == header.crc,
            },
            simulator_bitstream: bitstream_version(body).map(SimBitstream::from_raw),
            valid,
            failed_check,
            verdict,
        })
    }

    /// Writes the aligned human-readable form.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        let ok = |m: bool| if m { "match" } else { "MISMATCH" };
        let mut rows: Vec<(&str, String)> = vec![
            ("file", format!("{} ({} bytes)", self.file, self.file_size)),
            ("magic", self.magic.clone()),
            (
                "PCI vendor:device",
                format!("{} ({})", self.pci_id, self.board_name),
            ),
            (
                "payload size",
                format!(
                    "header {} bytes, actual {} bytes: {}",
                    self.payload_size.header,
                    self.payload_size.actual,
                    ok(self.payload_size.matches)
                ),
            ),
            ("hw revision", self.hw_revision.to_string()),
            (
                "CRC-16",
                format!(
                    "header {}, computed {}: {}",
                    self.crc.header,
                    self.crc.computed,
                    ok(self.crc.matches)
                ),
            ),
        ];
        match &self.simulator_bitstream {
            Some(s) => {
                rows.push((
                    "payload",
                    format!("simulator bitstream, boots {} (raw {})", s.boots, s.raw),
                ));
                rows.push(("capabilities", capability_words(s.capabilities)));
            }
            None => rows.push(("payload", "FPGA bitstream (not a simulator one)".into())),
        }
        rows.push(("verdict", self.verdict.clone()));
        write_rows(out, &rows)
    }
}

/// Writes `label  value` rows with the values aligned.
///
/// # Errors
/// Write errors.
pub fn write_rows(out: &mut dyn Write, rows: &[(&str, String)]) -> io::Result<()> {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        writeln!(out, "{label:<width$}  {value}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecard_sim::card::make_bitstream;

    #[test]
    fn reports_a_packed_simulator_image() {
        let img = firmware::pack(&make_bitstream(0x8015, 100), Board::Meta.id(), 7).unwrap();
        let r = InspectReport::new("x.img", &img).unwrap();
        assert_eq!(r.pci_id, "1d9b:0400");
        assert_eq!(r.board, Some("meta"));
        assert_eq!(r.payload_size.actual, 100);
        assert!(r.payload_size.matches && r.crc.matches && r.valid);
        assert_eq!(r.hw_revision, 7);
        let sim = r.simulator_bitstream.as_ref().unwrap();
        assert_eq!(sim.boots, "fw 1.21");
        assert!(sim.capabilities.signal && sim.capabilities.freq);
        assert_eq!(r.verdict, "valid OCPC image for Meta OCP Time Card");
        let mut out = Vec::new();
        r.write_human(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("boots fw 1.21"), "{text}");
        assert!(
            text.contains("verdict            valid OCPC image"),
            "{text}"
        );
    }

    #[test]
    fn reports_bad_crc_and_unknown_devices_without_failing() {
        let mut img = firmware::pack(b"raw fpga bits", PciId::new(0x8086, 0x1533), 0).unwrap();
        *img.last_mut().unwrap() ^= 0x40;
        let r = InspectReport::new("x.img", &img).unwrap();
        assert_eq!(r.board, None);
        assert_eq!(r.board_name, "unknown device");
        assert!(!r.crc.matches && !r.valid);
        assert_eq!(r.failed_check, Some("crc"));
        assert!(r.verdict.contains("CRC check failed"));
        assert!(r.simulator_bitstream.is_none());

        img.push(0);
        let r = InspectReport::new("x.img", &img).unwrap();
        assert_eq!(r.failed_check, Some("size"));

        assert_eq!(
            InspectReport::new("x", b"NOPE and more bytes"),
            Err(ImageError::NoHeader)
        );
    }
}
