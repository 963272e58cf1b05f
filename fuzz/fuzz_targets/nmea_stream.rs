//! The GNSS receiver's UART: any byte stream, in any chunking, goes through
//! the driver's line reassembly and NMEA parser without panicking; the
//! chunking changes nothing (same times, same counters as one write), and
//! every time reported is a real UTC instant (a date that exists, second 60
//! only at 23:59).
#![no_main]

use libfuzzer_sys::fuzz_target;
use timecard_driver::gnss::NmeaStream;
use timecard_hw::civil::UtcDateTime;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut chunked = NmeaStream::default();
    let mut times = Vec::new();
    for part in bytes.chunks(chunk) {
        times.extend(chunked.push(part));
    }
    let mut whole = NmeaStream::default();
    assert_eq!(whole.push(bytes), times);
    assert_eq!(whole.stats(), chunked.stats());
    for t in times {
        let u = t.utc;
        assert_eq!(
            UtcDateTime::from_unix_leap(u.to_unix(), u.nanos, u.second == 60),
            u,
            "not a real UTC instant: {u}"
        );
    }
    // The sentence parser on its own, line by line.
    for line in String::from_utf8_lossy(bytes).lines() {
        let _ = timecard_hw::nmea::parse(line);
    }
});
