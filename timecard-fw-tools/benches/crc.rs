//! CRC-16/MODBUS throughput over a 16 MiB buffer: the bit-at-a-time
//! reference (baseline), the byte-wise table, slicing-by-8, `crc16` (which
//! picks one), and `verify()` of a 16 MiB image. Best of N runs each; ratios
//! are against the baseline measured in the same run.
//!
//! Run with `cargo bench -p timecard-fw-tools --bench crc`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use timecard_hw::firmware;
use timecard_hw::pci::Board;

/// Buffer size: 16 MiB, half the card's flash.
const LEN: usize = 16 << 20;

/// The fastest of `runs` calls of `f`, and its last result.
fn best_of<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = black_box(f());
        best = best.min(t.elapsed());
        last = Some(r);
    }
    (best, last.expect("at least one run"))
}

/// Throughput in MB/s (10^6 bytes per second).
fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    // Deterministic pseudo-random data (xorshift).
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let image = firmware::pack(&data, Board::Meta.id(), 0).expect("16 MiB fits");

    println!("CRC-16/MODBUS over {} MiB, best of N runs", LEN >> 20);
    let (base_t, base_crc) = best_of(3, || firmware::crc16_bitwise(black_box(&data)));
    let base = mb_per_s(LEN, base_t);
    let row = |name: &str, runs: u32, d: Duration| {
        let mbs = mb_per_s(LEN, d);
        println!(
            "  {name:<26} {mbs:>9.1} MB/s  {:>7.2} ms  x{:>6.2}  (N={runs})",
            d.as_secs_f64() * 1e3,
            mbs / base
        );
    };
    row("bitwise (baseline)", 3, base_t);

    let (t, crc) = best_of(10, || firmware::crc16_bytewise(black_box(&data)));
    assert_eq!(crc, base_crc, "byte table disagrees with the reference");
    row("byte table", 10, t);

    let (t, crc) = best_of(10, || firmware::crc16_slice8(black_box(&data)));
    assert_eq!(crc, base_crc, "slicing-by-8 disagrees with the reference");
    row("slicing-by-8", 10, t);

    let (t, crc) = best_of(10, || firmware::crc16(black_box(&data)));
    assert_eq!(crc, base_crc, "crc16 disagrees with the reference");
    row("crc16 (dispatch)", 10, t);

    let (t, header) = best_of(10, || {
        firmware::verify(black_box(&image), Some(Board::Meta.id())).expect("valid image")
    });
    assert_eq!(header.crc, base_crc);
    row("verify() 16 MiB image", 10, t);
}
