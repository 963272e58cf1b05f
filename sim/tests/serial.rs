//! Interoperability: the simulator's GNSS UART (a pseudo-terminal) read through
//! the real `serialport` crate, the way a driver reads a receiver's tty.
//!
//! Runs in real time (about 4 s): the runner writes RMC, GGA, GSA and ZDA once
//! per second, each sentence's checksum is recomputed here, ZDA is compared with
//! ground truth, and a GNSS loss must turn the next RMC's status to `V`.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, SerialPort};
use timecard_sim::pty::GnssPty;
use timecard_sim::runner::Runner;
use timecard_sim::{ClockMode, Fault, Sim, SimConfig, TAI_UTC_NOW};

const NS_PER_S: i64 = 1_000_000_000;
/// Runner tick: NMEA for a second leaves at most this long after the second begins.
const TICK: Duration = Duration::from_millis(20);

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm),
/// written out here so the test does not trust the crate's own calendar code.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Truth as UTC ns since the Unix epoch.
fn truth_utc_ns(sim: &Sim) -> i64 {
    sim.truth_tai_ns() - i64::from(TAI_UTC_NOW) * NS_PER_S
}

/// Checks framing and the XOR checksum; returns the body between `$` and `*`.
fn verify_checksum(line: &str) -> Result<&str, String> {
    let s = line
        .strip_suffix("\r\n")
        .ok_or_else(|| format!("no CR LF terminator: {line:?}"))?;
    let s = s
        .strip_prefix('$')
        .ok_or_else(|| format!("no leading '$': {line:?}"))?;
    let (body, ck) = s
        .rsplit_once('*')
        .ok_or_else(|| format!("no '*' checksum delimiter: {line:?}"))?;
    if ck.len() != 2 || !ck.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("checksum field is not two hex digits: {line:?}"));
    }
    let want = u8::from_str_radix(ck, 16).map_err(|e| format!("{e}: {line:?}"))?;
    let got = body.bytes().fold(0u8, |acc, b| acc ^ b);
    if got != want {
        return Err(format!(
            "checksum mismatch: computed {got:02X}, sentence says {ck}: {line:?}"
        ));
    }
    Ok(body)
}

/// `hhmmss[.ss]` → seconds of the day (fraction dropped).
fn parse_hms(f: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| f.get(r)?.parse::<i64>().ok();
    let (h, m, s) = (num(0..2)?, num(2..4)?, num(4..6)?);
    (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s)
}

/// ZDA body (`GNZDA,hhmmss.ss,dd,mm,yyyy,zh,zm`) → Unix seconds.
fn zda_unix_s(body: &str) -> Option<i64> {
    let f: Vec<&str> = body.split(',').collect();
    let tod = parse_hms(f.get(1)?)?;
    let day: i64 = f.get(2)?.parse().ok()?;
    let month: i64 = f.get(3)?.parse().ok()?;
    let year: i64 = f.get(4)?.parse().ok()?;
    Some(days_from_civil(year, month, day) * 86_400 + tod)
}

/// RMC body (`GNRMC,hhmmss.ss,S,lat,N,lon,E,sog,cog,ddmmyy,...`) → (status, Unix seconds).
fn rmc_status_and_time(body: &str) -> Option<(char, i64)> {
    let f: Vec<&str> = body.split(',').collect();
    let tod = parse_hms(f.get(1)?)?;
    let status = f.get(2)?.chars().next()?;
    let date = f.get(9)?;
    let num = |r: std::ops::Range<usize>| date.get(r)?.parse::<i64>().ok();
    let (day, month, yy) = (num(0..2)?, num(2..4)?, num(4..6)?);
    Some((
        status,
        days_from_civil(2000 + yy, month, day) * 86_400 + tod,
    ))
}

/// Sentence type without talker (`GNRMC` → `RMC`).
fn sentence_type(body: &str) -> &str {
    let addr = body.split(',').next().unwrap_or("");
    addr.get(2..).unwrap_or(addr)
}

/// Line splitter over a serial port with a read timeout, bounded by a deadline.
struct Lines {
    port: Box<dyn SerialPort>,
    buf: Vec<u8>,
}

impl Lines {
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 512];
            match self.port.read(&mut chunk) {
                Ok(0) => std::thread::sleep(TICK),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("reading the GNSS pty failed: {e}"),
            }
        }
    }
}

#[test]
fn gnss_pty_speaks_nmea_through_serialport() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("gnss0");
    let sim = Sim::new(&SimConfig {
        mode: ClockMode::Realtime { acceleration: 1.0 },
        ..SimConfig::default()
    })
    .expect("sim");
    let pty = GnssPty::open(Some(&link)).expect("open pty");
    let runner = Runner::spawn(sim.clone(), pty, TICK);

    let port = serialport::new(link.to_str().expect("utf-8 temp path"), 115_200)
        .timeout(Duration::from_millis(200))
        .open()
        .unwrap_or_else(|e| panic!("serialport could not open {}: {e}", link.display()));
    // Anything queued before we opened is old; start from current output.
    port.clear(ClearBuffer::Input).expect("flush input");
    let mut lines = Lines {
        port,
        buf: Vec::new(),
    };

    // Phase 1: ~3 s of normal output (longer only if the fix is not there yet).
    let mut seen = BTreeSet::new();
    let mut zda_checked = 0;
    let mut rmc_valid = 0;
    let phase1 = Instant::now();
    let hard_deadline = phase1 + Duration::from_secs(10);
    while phase1.elapsed() < Duration::from_secs(3) || rmc_valid == 0 {
        let Some(line) = lines.next_line(hard_deadline) else {
            panic!(
                "timed out after {:?}: seen {seen:?}, {rmc_valid} valid RMC",
                phase1.elapsed()
            );
        };
        // Truth is sampled as soon as the line is in hand.
        let truth_ns = truth_utc_ns(&sim);
        let body = verify_checksum(&line).unwrap_or_else(|e| panic!("{e}"));
        let kind = sentence_type(body).to_string();
        match kind.as_str() {
            "ZDA" => {
                let zda_s = zda_unix_s(body).unwrap_or_else(|| panic!("unparsable ZDA: {line:?}"));
                let diff_ns = truth_ns - zda_s * NS_PER_S;
                assert!(
                    diff_ns.abs() < NS_PER_S,
                    "ZDA {line:?} is {:.3} s from truth UTC",
                    diff_ns as f64 / 1e9
                );
                zda_checked += 1;
            }
            "RMC" => {
                let (status, _) =
                    rmc_status_and_time(body).unwrap_or_else(|| panic!("unparsable RMC: {line:?}"));
                assert!(matches!(status, 'A' | 'V'), "RMC status {status}: {line:?}");
                if status == 'A' {
                    rmc_valid += 1;
                }
            }
            _ => {}
        }
        seen.insert(kind);
    }
    for kind in ["RMC", "GGA", "GSA", "ZDA"] {
        assert!(
            seen.contains(kind),
            "no {kind} sentence in 3 s; seen {seen:?}"
        );
    }
    assert!(zda_checked >= 2, "only {zda_checked} ZDA sentences in 3 s");

    // Phase 2: lose GNSS. Sentences for TAI second S are generated once truth
    // reaches S, so every second after `after_tai_ns` is generated after the
    // fault; lines already queued for earlier seconds may still say 'A'.
    sim.inject(&Fault::GnssLoss);
    let after_tai_ns = sim.truth_tai_ns();
    let deadline = Instant::now() + Duration::from_secs(4);
    let status = loop {
        let Some(line) = lines.next_line(deadline) else {
            panic!("no RMC generated after the GNSS loss within 4 s");
        };
        let body = verify_checksum(&line).unwrap_or_else(|e| panic!("{e}"));
        if sentence_type(body) != "RMC" {
            continue;
        }
        let (status, utc_s) =
            rmc_status_and_time(body).unwrap_or_else(|| panic!("unparsable RMC: {line:?}"));
        let tai_s = utc_s + i64::from(TAI_UTC_NOW);
        if tai_s * NS_PER_S > after_tai_ns {
            break status;
        }
    };
    assert_eq!(status, 'V', "RMC after GnssLoss must report status V");

    drop(lines);
    let pty = runner.stop().expect("runner returns the pty");
    drop(pty);
    assert!(!link.exists(), "pty link removed on drop");
    eprintln!(
        "serial interop ok: {seen:?}, {zda_checked} ZDA checked against truth, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn checksum_helper_rejects_corruption() {
    let good = "$GNZDA,120000.00,25,11,2026,00,00*7A\r\n";
    assert_eq!(
        verify_checksum(good).unwrap(),
        "GNZDA,120000.00,25,11,2026,00,00"
    );
    assert!(verify_checksum("$GNZDA,120000.00,25,11,2026,00,01*7A\r\n").is_err());
    assert!(verify_checksum("$GNZDA,120000.00,25,11,2026,00,00*7A").is_err());
    assert_eq!(
        zda_unix_s("GNZDA,120000.00,25,11,2026,00,00"),
        Some(days_from_civil(2026, 11, 25) * 86_400 + 43_200)
    );
    // 2026-11-25 is 20_782 days after the epoch (cross-checked with `date -d`).
    assert_eq!(days_from_civil(2026, 11, 25), 20_782);
}
