//! Parsers for command-line values: PCI IDs, hex numbers, board names,
//! image versions and byte sizes. Each error says what a good value looks like.

use timecard_hw::pci::{Board, PciId};

/// The short name a board goes by on the command line and in JSON.
#[must_use]
pub const fn board_key(board: Board) -> &'static str {
    match board {
        Board::Meta => "meta",
        Board::Celestica => "celestica",
        Board::OroliaArt => "orolia-art",
        Board::Adva => "adva",
        Board::AdvaX1 => "adva-x1",
    }
}

/// The board a short name (see [`board_key`]) stands for.
#[must_use]
pub fn board_from_key(key: &str) -> Option<Board> {
    Board::ALL.into_iter().find(|b| board_key(*b) == key)
}

/// `0x1d9b` or `1d9b` (hexadecimal, 1 to 4 digits).
///
/// # Errors
/// A message saying what was expected.
pub fn parse_hex_u16(s: &str) -> Result<u16, String> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a 16-bit hexadecimal ID; write it like 0x1d9b or 1d9b"
        ));
    }
    u16::from_str_radix(digits, 16).map_err(|e| format!("{s:?}: {e}"))
}

/// `VVVV:DDDD`, both hexadecimal (as `lspci -n` prints them).
///
/// # Errors
/// A message saying what was expected.
pub fn parse_pci_id(s: &str) -> Result<PciId, String> {
    let (v, d) = s.split_once(':').ok_or_else(|| {
        format!("{s:?} is not a PCI ID; write vendor:device in hex, like 1d9b:0400")
    })?;
    Ok(PciId::new(parse_hex_u16(v)?, parse_hex_u16(d)?))
}

/// A 16-bit number in decimal (`3`) or hexadecimal (`0x0a`).
///
/// # Errors
/// A message saying what was expected.
pub fn parse_u16(s: &str) -> Result<u16, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a number from 0 to 65535 (decimal, or hex like 0x0a)"))
}

/// An image-version register value: `0x8015` (raw, hex), `1.21` (tag.version,
/// giving `(tag << 15) | version`), or a decimal raw value.
///
/// The result is refused if it would decode as a loader (golden) image (low
/// 16 bits zero), since a regular image never does.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_image_version(s: &str) -> Result<u32, String> {
    let raw = if let Some((tag, version)) = s.split_once('.') {
        let tag: u32 = tag
            .parse()
            .ok()
            .filter(|t| *t <= 0x1_FFFF)
            .ok_or_else(|| format!("{s:?}: the tag before the dot must be 0 to 131071"))?;
        let version: u32 = version
            .parse()
            .ok()
            .filter(|v| *v <= 0x7FFF)
            .ok_or_else(|| format!("{s:?}: the version after the dot must be 0 to 32767"))?;
        (tag << 15) | version
    } else if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).map_err(|_| {
            format!(
                "{s:?} is not an image version; write tag.version (1.21) or a raw hex word (0x8015)"
            )
        })?
    } else {
        s.parse().map_err(|_| {
            format!(
                "{s:?} is not an image version; write tag.version (1.21) or a raw hex word (0x8015)"
            )
        })?
    };
    if raw & 0xFFFF == 0 {
        return Err(format!(
            "{s:?} gives 0x{raw:08x}, whose low 16 bits are zero: the card would report it as the \
             golden loader image, not a regular one"
        ));
    }
    Ok(raw)
}

/// A byte count: `4096`, `64K`/`64KiB`, `1M`/`1MiB` (binary multiples).
///
/// # Errors
/// A message saying what was expected.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("{s:?} is not a size; write bytes (4096) or with K/M (64K, 1M, 1MiB)");
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB").or_else(|| t.strip_suffix(['K', 'k']))
    {
        (n, 1usize << 10)
    } else if let Some(n) = t.strip_suffix("MiB").or_else(|| t.strip_suffix('M')) {
        (n, 1 << 20)
    } else {
        (t, 1)
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_with_or_without_prefix() {
        assert_eq!(parse_hex_u16("0x1d9b"), Ok(0x1d9b));
        assert_eq!(parse_hex_u16("1D9B"), Ok(0x1d9b));
        assert_eq!(parse_hex_u16("400"), Ok(0x400));
        assert!(parse_hex_u16("0x12345").is_err());
        assert!(parse_hex_u16("").is_err());
        assert!(parse_hex_u16("-1").unwrap_err().contains("0x1d9b"));
        assert_eq!(parse_pci_id("1d9b:0400"), Ok(Board::Meta.id()));
        assert_eq!(parse_pci_id("0x18d4:0x1008"), Ok(Board::Celestica.id()));
        assert!(parse_pci_id("1d9b").is_err());
    }

    #[test]
    fn board_keys_round_trip() {
        for b in Board::ALL {
            assert_eq!(board_from_key(board_key(b)), Some(b));
        }
        assert_eq!(board_from_key("intel"), None);
    }

    #[test]
    fn image_versions() {
        assert_eq!(parse_image_version("0x8015"), Ok(0x8015));
        assert_eq!(parse_image_version("1.21"), Ok(0x8015));
        assert_eq!(parse_image_version("1.20"), Ok(0x8014));
        assert_eq!(parse_image_version("32789"), Ok(0x8015));
        assert!(parse_image_version("2.0x").is_err());
        assert!(parse_image_version("1.40000").is_err());
        assert!(
            parse_image_version("0x10000")
                .unwrap_err()
                .contains("loader")
        );
        assert!(parse_image_version("fw").is_err());
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(parse_u16("3"), Ok(3));
        assert_eq!(parse_u16("0x0a"), Ok(10));
        assert!(parse_u16("70000").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
    }
}
