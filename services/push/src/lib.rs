//! Zuul Push-style push edge.
//!
//! Devices hold persistent WebSocket or SSE connections to edge nodes
//! ([`edge`]), authenticated by signed expiring tokens ([`token`]). Each
//! connection is recorded in the push registry ([`registry`]: device → edge
//! node, with a TTL so a crashed node leaves no phantom routes). The message
//! processor ([`processor`]) looks a target up there and hands the frame to
//! the node that holds it, in process or over NATS. [`client`] is the
//! device side: reconnect with jittered backoff, resume from the pull store.
//! [`load`] opens many connections for benchmarks.

pub mod cli;
pub mod client;
pub mod edge;
pub mod frame;
pub mod http;
pub mod load;
pub mod net;
pub mod processor;
pub mod registry;
pub mod token;

/// The shard of `key` among `shards` (FNV-1a: stable and cheap).
pub(crate) fn shard_index(key: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

/// This machine's host name: the kernel's, or `/etc/hostname` where
/// `/proc/sys` is hidden (the packaged units' `ProcSubset=pid`); empty if
/// neither is readable.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
        .unwrap_or_default()
}

/// A uniform fraction in `[0, 1)` (for jitter; not secret).
pub(crate) fn unit_random() -> f64 {
    (eventlog::envelope::random_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads a lock, whether or not a holder panicked (the tables stay usable).
pub(crate) fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a lock, whether or not a holder panicked.
pub(crate) fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks a mutex, whether or not a holder panicked.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// This process's resident set size in bytes (Linux `/proc/self/statm`).
#[must_use]
pub fn rss_bytes() -> u64 {
    rss_of("self")
}

/// A process's resident set size in bytes (`pid` or `self`); 0 if unknown.
#[must_use]
pub fn rss_of(pid: &str) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}
