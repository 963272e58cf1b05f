//! `ptp-loadgen`: many simulated unicast PTP clients against one server.
//!
//! Each client has its own PortIdentity and negotiates, with one Signaling
//! message of three REQUEST_UNICAST_TRANSMISSION TLVs, Announce (log 1 by
//! default), Sync (log 0) and Delay_Resp; then it sends one Delay_Req per
//! second, spread evenly over the second across all clients. Clients live on
//! consecutive IPv4 addresses from `--first-ip` (127.1.0.1 by default; every
//! 127/8 address is local on `lo`), `--per-ip` clients per address.
//!
//! Sockets: a few wildcard sockets on `--client-event-port` (where the server
//! sends Sync) and `--client-general-port` (where Announce, Follow_Up,
//! Delay_Resp and Signaling come back), one pair per receive thread, joined
//! with `SO_REUSEPORT`. The destination address of every datagram
//! (`IP_PKTINFO`) tells which client address it is for, and every send sets
//! its source address the same way. So one process can stand for 100 000
//! client addresses without 200 000 sockets — and it must be able to: ptp4l's
//! unicast service keys clients by IP address alone, so against ptp4l every
//! client needs its own address (`--per-ip 1`). Sockets set `SO_REUSEADDR`
//! too, so they can share ports 319/320 with a wildcard-bound ptp4l. (That
//! is also why they are made here with libc rather than with
//! `ptp_server::net::PtpSocket`, which sets its options at bind time without
//! `SO_REUSEADDR`; packets are built and parsed with `ptp_proto`.)
//!
//! Measured over a steady window of `--duration` seconds after `--warmup`:
//! - Sync received per client per second, counted per client address (Sync
//!   does not say which client it is for) against `per_ip × window ×
//!   rate`; missed = expected − received;
//! - Follow_Up latency: kernel RX time (`SO_TIMESTAMPNS`, CLOCK_REALTIME) of
//!   the Follow_Up minus its preciseOriginTimestamp converted to UTC (−37 s
//!   for a PTP-timescale server, 0 for an ARB one; `--utc-offset auto` picks
//!   whichever is within 5 s). Both are CLOCK_REALTIME-based on one host with
//!   software timestamps, so this is Sync TX timestamp → Follow_Up arrival;
//! - Delay_Resp answered ratio and round-trip time (Delay_Req send → Delay_Resp
//!   kernel RX);
//! - the load generator's own kernel receive-queue drops (`SO_RXQ_OVFL`): if
//!   they are not 0 the load generator, not the server, lost packets.
//!
//! Output: one JSON line on stdout, a human summary on stderr. Runtime is
//! bounded (a watchdog ends the process) and so is the client count.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ptp_proto::{
    Body, CancelUnicastTransmission, ClockIdentity, Message, MessageType, PortIdentity,
    RequestUnicastTransmission, Timestamp, TypedTlv, write_with_tlvs,
};

/// Simulate many unicast PTP clients (ptp4l-style negotiation) against a
/// server and measure what they get.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "\
Examples:
  # our server on loopback with non-standard ports (no 319/320 needed);
  # server.toml: event_port = 3319, general_port = 3320, client_event_port = 4319
  ptp-server --config server.toml &
  ptp-loadgen --server 127.0.0.1 --server-event-port 3319 --server-general-port 3320 \\
      --client-event-port 4319 --client-general-port 4320 --clients 5000 --per-ip 100

  # against ptp4l (which keys clients by IP and sends to 319/320): one client per address
  ptp-loadgen --server 10.250.0.1 --first-ip 10.251.0.1 --per-ip 1 --clients 20000"
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1")]
    server: Ipv4Addr,
    /// Server event port (Delay_Req goes there).
    #[arg(long, default_value_t = 319)]
    server_event_port: u16,
    /// Server general port (Signaling goes there).
    #[arg(long, default_value_t = 320)]
    server_general_port: u16,
    /// Number of simulated clients (at most 2 000 000).
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Clients per source address.
    #[arg(long, default_value_t = 100)]
    per_ip: u32,
    /// First client address; client c uses first-ip + c / per-ip.
    #[arg(long, default_value = "127.1.0.1")]
    first_ip: Ipv4Addr,
    /// Local port where Sync arrives (the server's `client_event_port`).
    #[arg(long, default_value_t = 319)]
    client_event_port: u16,
    /// Local port of the clients' general sockets (Signaling is sent from it).
    #[arg(long, default_value_t = 320)]
    client_general_port: u16,
    /// Measurement window, seconds (1..=600).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of steady traffic before the window.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Negotiation requests per second (one Signaling per client).
    #[arg(long, default_value_t = 20_000)]
    request_rate: u32,
    /// Requested Sync interval, log2 s.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    log_sync: i8,
    /// Requested Announce interval, log2 s.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    log_announce: i8,
    /// Receive threads (each with its own socket pair).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// TAI − UTC to subtract from preciseOriginTimestamp: `auto`, or seconds.
    #[arg(long, default_value = "auto")]
    utc_offset: String,
    /// PTP domain.
    #[arg(long, default_value_t = 0)]
    domain: u8,
    /// Distinguishes the PortIdentities of successive runs.
    #[arg(long, default_value_t = 1)]
    id_seed: u8,
    /// Label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// Pass criterion: largest missed-Sync ratio.
    #[arg(long, default_value_t = 0.001)]
    max_missed: f64,
    /// Pass criterion: largest p99 Follow_Up latency, ms.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
}

const NS: i64 = 1_000_000_000;
const BATCH: usize = 64;
const BUF: usize = 256;
const CTRL: usize = 128;
const MAX_CLIENTS: u32 = 2_000_000;

fn realtime_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Client identities and addresses.

#[derive(Debug, Clone, Copy)]
struct Clients {
    n: u32,
    per_ip: u32,
    first_ip: u32,
    seed: u8,
}

impl Clients {
    fn ips(&self) -> u32 {
        self.n.div_ceil(self.per_ip)
    }
    fn ip(&self, c: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.first_ip + c / self.per_ip)
    }
    fn ip_index(&self, ip: Ipv4Addr) -> Option<u32> {
        u32::from(ip)
            .checked_sub(self.first_ip)
            .filter(|i| *i < self.ips())
    }
    fn port_identity(&self, c: u32) -> PortIdentity {
        let b = c.to_be_bytes();
        PortIdentity::new(
            ClockIdentity([b'L', b'G', self.seed, b[0], b[1], b[2], b[3], 0]),
            1,
        )
    }
    fn client_of(&self, p: &PortIdentity) -> Option<u32> {
        let id = p.clock_identity.0;
        if id[0] != b'L' || id[1] != b'G' || id[2] != self.seed {
            return None;
        }
        let c = u32::from_be_bytes([id[3], id[4], id[5], id[6]]);
        (c < self.n).then_some(c)
    }
}

// ---------------------------------------------------------------------------
// Sockets: plain libc, because they need SO_REUSEADDR before bind (to share
// a port with ptp4l's wildcard socket), IP_PKTINFO and batch calls.

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> i32 {
    // SAFETY: `v` lives across the call and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A wildcard UDP socket on `port` with the options every client socket needs.
fn client_socket(port: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let r = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let fd = check(r, "socket")?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    for (level, name, what) in [
        (libc::SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR"),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT"),
        (libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO"),
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, "SO_TIMESTAMPNS"),
        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, "SO_RXQ_OVFL"),
    ] {
        check(setsockopt_int(fd, level, name, 1), what)?;
    }
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, 16 << 20) < 0 {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, 16 << 20);
        }
    }
    let sa = sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    // SAFETY: `sa` is a valid sockaddr_in of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    check(r, &format!("bind 0.0.0.0:{port}"))?;
    Ok(owned)
}

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    len: usize,
    dst: Option<Ipv4Addr>,
    rx_ns: Option<i64>,
    drops: Option<u32>,
}

/// Walks a control buffer: (level, type, data).
fn cmsgs(ctrl: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::size_of::<usize>();
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + hdr > ctrl.len() {
            return None;
        }
        let len = usize::from_ne_bytes(ctrl[off..off + align].try_into().ok()?);
        let level = i32::from_ne_bytes(ctrl[off + align..off + align + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(ctrl[off + align + 4..off + align + 8].try_into().ok()?);
        if len < hdr || off + len > ctrl.len() {
            return None;
        }
        let data = &ctrl[off + hdr..off + len];
        off += len.div_ceil(align) * align;
        Some((level, kind, data))
    })
}

fn parse_meta(len: usize, ctrl: &[u8]) -> Meta {
    let mut m = Meta {
        len,
        ..Meta::default()
    };
    for (level, kind, data) in cmsgs(ctrl) {
        if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO && data.len() >= 12 {
            // in_pktinfo { ifindex: i32, spec_dst: in_addr, addr: in_addr }: addr = header dst.
            m.dst = Some(Ipv4Addr::new(data[8], data[9], data[10], data[11]));
        } else if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS && data.len() >= 16 {
            let s = i64::from_ne_bytes(data[0..8].try_into().unwrap_or_default());
            let ns = i64::from_ne_bytes(data[8..16].try_into().unwrap_or_default());
            m.rx_ns = Some(s * NS + ns);
        } else if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL && data.len() >= 4 {
            m.drops = Some(u32::from_ne_bytes(
                data[0..4].try_into().unwrap_or_default(),
            ));
        }
    }
    m
}

/// Buffers for one recvmmsg/sendmmsg batch.
struct Batch {
    bufs: Vec<[u8; BUF]>,
    ctrl: Vec<[u8; CTRL]>,
    addrs: Vec<libc::sockaddr_in>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    lens: Vec<usize>,
}

// SAFETY: the raw pointers inside iovec/mmsghdr only ever point into this
// struct's own vectors and are rebuilt before each use.
unsafe impl Send for Batch {}

impl Batch {
    fn new() -> Self {
        // SAFETY: sockaddr_in, iovec and mmsghdr are plain C structs for which
        // all-zero bytes are a valid value.
        let (addr, iov, hdr) = unsafe {
            (
                std::mem::zeroed::<libc::sockaddr_in>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::mmsghdr>(),
            )
        };
        Self {
            bufs: vec![[0; BUF]; BATCH],
            ctrl: vec![[0; CTRL]; BATCH],
            addrs: vec![addr; BATCH],
            iov: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
            lens: vec![0; BATCH],
        }
    }

    /// Points header `i` at its buffers; `len` bytes of data, `ctrl` bytes of control.
    fn prepare(&mut self, i: usize, len: usize, ctrl: usize) {
        self.iov[i] = libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: len,
        };
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = std::ptr::from_mut(&mut self.iov[i]);
        h.msg_iovlen = 1;
        h.msg_control = self.ctrl[i].as_mut_ptr().cast();
        h.msg_controllen = ctrl as _;
        h.msg_flags = 0;
        self.hdrs[i].msg_len = 0;
    }

    /// Receives up to BATCH datagrams without blocking; returns how many.
    fn recv(&mut self, fd: RawFd) -> usize {
        for i in 0..BATCH {
            self.prepare(i, BUF, CTRL);
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    /// Sets datagram `i`: payload, destination and source address (IP_PKTINFO).
    fn set_send(&mut self, i: usize, payload: &[u8], to: SocketAddrV4, from: Ipv4Addr) {
        let len = payload.len().min(BUF);
        self.bufs[i][..len].copy_from_slice(&payload[..len]);
        self.addrs[i] = sockaddr(to);
        let c = &mut self.ctrl[i];
        c.fill(0);
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let align = std::mem::size_of::<usize>();
        let cmsg_len = hdr + 12;
        c[..align].copy_from_slice(&cmsg_len.to_ne_bytes());
        c[align..align + 4].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        c[align + 4..align + 8].copy_from_slice(&libc::IP_PKTINFO.to_ne_bytes());
        // in_pktinfo { ifindex 0, spec_dst = source, addr 0 }
        c[hdr + 4..hdr + 8].copy_from_slice(&from.octets());
        self.lens[i] = len;
        let space = cmsg_len.div_ceil(align) * align;
        self.prepare(i, len, space);
    }

    /// Sends datagrams 0..n (retrying the rest on partial sends); returns how many left.
    fn send(&mut self, fd: RawFd, n: usize) -> usize {
        let mut done = 0;
        let mut tries = 0;
        while done < n && tries < 100 {
            // SAFETY: headers done..n point at live buffers (set by set_send).
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                done += usize::try_from(r).unwrap_or(0);
            } else {
                tries += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        n - done
    }
}

// ---------------------------------------------------------------------------
// Shared state between the sender and the receivers.

const G_ANN: u8 = 1;
const G_SYNC: u8 = 2;
const G_DR: u8 = 4;
const G_ALL: u8 = 7;

fn grant_bit(t: MessageType) -> u8 {
    match t {
        MessageType::Announce => G_ANN,
        MessageType::Sync => G_SYNC,
        MessageType::DelayResp => G_DR,
        _ => 0,
    }
}

struct Shared {
    clients: Clients,
    stop: AtomicBool,
    grants: Vec<AtomicU8>,
    denied: AtomicU64,
    cancels_rx: AtomicU64,
    /// Realtime ns of the last Delay_Req sent per client (for the RTT).
    dr_sent_ns: Vec<AtomicI64>,
    /// Window, realtime ns [start, end); i64::MAX until known.
    window_start: AtomicI64,
    window_end: AtomicI64,
    /// Delay_Req rounds (= sequenceId) inside the window.
    round_lo: AtomicI64,
    round_hi: AtomicI64,
    /// TAI − UTC, ns, decided from the first Follow_Up (i64::MIN = undecided).
    utc_offset_ns: AtomicI64,
}

#[derive(Debug, Default)]
struct RxStats {
    sync_per_ip: Vec<u32>,
    sync_total: u64,
    announce: u64,
    follow_up: u64,
    fu_lat_ns: Vec<i64>,
    fu_implausible: u64,
    dr_answered: u64,
    dr_rtt_ns: Vec<i64>,
    gm_class: Option<u8>,
    other: u64,
    malformed: u64,
    drops: u64,
}

fn receiver(shared: &Shared, event: &OwnedFd, general: &OwnedFd) -> RxStats {
    let mut st = RxStats {
        sync_per_ip: vec![0; shared.clients.ips() as usize],
        ..RxStats::default()
    };
    let mut batch = Batch::new();
    let mut drops = [0u32; 2];
    let fds = [event.as_raw_fd(), general.as_raw_fd()];
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = [
            libc::pollfd {
                fd: fds[0],
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fds[1],
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `pfd` is a live array of 2 pollfd.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), 2, 50) };
        if r <= 0 {
            continue;
        }
        for (k, p) in pfd.iter().enumerate() {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            // Drain, but give the other socket a turn after a while.
            for _ in 0..16 {
                let n = batch.recv(fds[k]);
                for i in 0..n {
                    let len = batch.hdrs[i].msg_len as usize;
                    // msg_controllen is socklen_t on some libcs, size_t on glibc.
                    #[allow(clippy::unnecessary_cast)]
                    let clen = (batch.hdrs[i].msg_hdr.msg_controllen as usize).min(CTRL);
                    let meta = parse_meta(len.min(BUF), &batch.ctrl[i][..clen]);
                    if let Some(d) = meta.drops {
                        drops[k] = drops[k].max(d);
                    }
                    handle(shared, &mut st, &batch.bufs[i][..meta.len], &meta);
                }
                if n < BATCH {
                    break;
                }
            }
        }
    }
    st.drops = u64::from(drops[0]) + u64::from(drops[1]);
    st
}

fn in_window(shared: &Shared, t: i64) -> bool {
    t >= shared.window_start.load(Ordering::Relaxed)
        && t < shared.window_end.load(Ordering::Relaxed)
}

fn handle(shared: &Shared, st: &mut RxStats, buf: &[u8], meta: &Meta) {
    let Ok(msg) = Message::parse(buf) else {
        st.malformed += 1;
        return;
    };
    let rx = meta.rx_ns.unwrap_or_else(realtime_ns);
    let cl = &shared.clients;
    match msg.body {
        Body::Sync(_) => {
            if in_window(shared, rx) {
                st.sync_total += 1;
                if let Some(i) = meta.dst.and_then(|d| cl.ip_index(d)) {
                    st.sync_per_ip[i as usize] += 1;
                }
            }
        }
        Body::FollowUp(f) => {
            let pot = i64::try_from(f.precise_origin_timestamp.to_nanos()).unwrap_or(0);
            let mut off = shared.utc_offset_ns.load(Ordering::Relaxed);
            if off == i64::MIN {
                let guess = if (rx - pot).abs() < 5 * NS {
                    0
                } else if (rx - (pot - 37 * NS)).abs() < 5 * NS {
                    37 * NS
                } else {
                    i64::MIN
                };
                if guess != i64::MIN {
                    let _ = shared.utc_offset_ns.compare_exchange(
                        i64::MIN,
                        guess,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    off = shared.utc_offset_ns.load(Ordering::Relaxed);
                }
            }
            if in_window(shared, rx) {
                st.follow_up += 1;
                let lat = rx - (pot - off);
                if off == i64::MIN || lat.abs() > 5 * NS {
                    st.fu_implausible += 1;
                } else {
                    st.fu_lat_ns.push(lat);
                }
            }
        }
        Body::Announce(a) => {
            st.gm_class = Some(a.grandmaster_clock_quality.clock_class);
            if in_window(shared, rx) {
                st.announce += 1;
            }
        }
        Body::DelayResp(d) => {
            let Some(c) = cl.client_of(&d.requesting_port_identity) else {
                st.other += 1;
                return;
            };
            let seq = i64::from(msg.header.sequence_id);
            let (lo, hi) = (
                shared.round_lo.load(Ordering::Relaxed),
                shared.round_hi.load(Ordering::Relaxed),
            );
            if seq >= lo && seq < hi {
                st.dr_answered += 1;
                let sent = shared.dr_sent_ns[c as usize].load(Ordering::Relaxed);
                if sent > 0 && rx >= sent && rx - sent < 10 * NS {
                    st.dr_rtt_ns.push(rx - sent);
                }
            }
        }
        Body::Signaling(s) => {
            let Some(c) = cl.client_of(&s.target_port_identity) else {
                st.other += 1;
                return;
            };
            for t in msg.tlvs.iter() {
                match t.typed() {
                    Ok(TypedTlv::Grant(g)) if g.duration_s > 0 => {
                        shared.grants[c as usize]
                            .fetch_or(grant_bit(g.message_type), Ordering::Relaxed);
                    }
                    Ok(TypedTlv::Grant(_)) => {
                        shared.denied.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(TypedTlv::Cancel(x)) => {
                        shared.cancels_rx.fetch_add(1, Ordering::Relaxed);
                        shared.grants[c as usize]
                            .fetch_and(!grant_bit(x.message_type), Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
        _ => st.other += 1,
    }
}

// ---------------------------------------------------------------------------
// Sender.

fn signaling(cl: &Clients, c: u32, seq: u16, domain: u8, tlvs: &[TypedTlv<'_>]) -> Vec<u8> {
    let mut m = Message::signaling(cl.port_identity(c), seq, PortIdentity::ALL_ONES);
    m.header.domain_number = domain;
    let mut out = [0u8; 128];
    let n = write_with_tlvs(&mut out, &m, tlvs).expect("signaling fits");
    out[..n].to_vec()
}

struct Sender {
    fd: RawFd,
    batch: Batch,
    n: usize,
    unsent: u64,
}

impl Sender {
    fn push(&mut self, payload: &[u8], to: SocketAddrV4, from: Ipv4Addr) {
        self.batch.set_send(self.n, payload, to, from);
        self.n += 1;
        if self.n == BATCH {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.n > 0 {
            self.unsent += self.batch.send(self.fd, self.n) as u64;
            self.n = 0;
        }
    }
}

/// Sends one Signaling per client in `which`, paced at `rate` per second.
fn send_paced(
    s: &mut Sender,
    cl: &Clients,
    which: &[u32],
    rate: u32,
    to: SocketAddrV4,
    make: &dyn Fn(u32) -> Vec<u8>,
) {
    let t0 = Instant::now();
    for (k, &c) in which.iter().enumerate() {
        s.push(&make(c), to, cl.ip(c));
        if k % BATCH == BATCH - 1 {
            s.flush();
            let due = t0 + Duration::from_secs_f64((k + 1) as f64 / f64::from(rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    s.flush();
}

/// UDP `RcvbufErrors` of this network namespace (`/proc/net/snmp`): datagrams
/// dropped because a socket's receive buffer was full, any socket.
fn udp_rcvbuf_errors() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = t.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn ms(v: Option<i64>) -> String {
    v.map_or("null".into(), |x| format!("{:.3}", x as f64 / 1e6))
}

#[allow(clippy::too_many_lines)]
fn main() -> Result<()> {
    let a = Args::parse();
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        bail!("--clients must be in 1..={MAX_CLIENTS}");
    }
    if a.per_ip == 0 {
        bail!("--per-ip must be at least 1");
    }
    if !(1..=600).contains(&a.duration) || a.warmup > 60 {
        bail!("--duration must be 1..=600 s and --warmup at most 60 s");
    }
    if a.threads == 0 || a.threads > 16 {
        bail!("--threads must be 1..=16");
    }
    if a.request_rate == 0 {
        bail!("--request-rate must be positive");
    }
    let fixed_offset = match a.utc_offset.as_str() {
        "auto" => None,
        s => Some(
            s.parse::<i64>()
                .context("--utc-offset: `auto` or whole seconds")?
                * NS,
        ),
    };
    let cl = Clients {
        n: a.clients,
        per_ip: a.per_ip,
        first_ip: u32::from(a.first_ip),
        seed: a.id_seed,
    };
    if u64::from(cl.first_ip) + u64::from(cl.ips()) > u64::from(u32::MAX) {
        bail!("client addresses overflow IPv4");
    }

    // Timeline (all bounded): negotiation, warmup, window, grace, cancel.
    let negotiation = Duration::from_secs_f64(f64::from(a.clients) / f64::from(a.request_rate))
        + Duration::from_secs(5);
    let grant_s = (negotiation.as_secs() + a.warmup + a.duration + 15).min(3600) as u32;
    let cancel_time =
        Duration::from_secs_f64(f64::from(a.clients) / f64::from(a.request_rate.max(50_000)));
    let budget = negotiation + cancel_time + Duration::from_secs(a.warmup + a.duration + 15);
    {
        std::thread::spawn(move || {
            std::thread::sleep(budget);
            eprintln!("ptp-loadgen: watchdog: still running after {budget:?}, giving up");
            std::process::exit(3);
        });
    }

    let shared = Arc::new(Shared {
        clients: cl,
        stop: AtomicBool::new(false),
        grants: (0..cl.n).map(|_| AtomicU8::new(0)).collect(),
        denied: AtomicU64::new(0),
        cancels_rx: AtomicU64::new(0),
        dr_sent_ns: (0..cl.n).map(|_| AtomicI64::new(0)).collect(),
        window_start: AtomicI64::new(i64::MAX),
        window_end: AtomicI64::new(i64::MAX),
        round_lo: AtomicI64::new(i64::MAX),
        round_hi: AtomicI64::new(i64::MAX),
        utc_offset_ns: AtomicI64::new(fixed_offset.unwrap_or(i64::MIN)),
    });

    let mut socks = Vec::new();
    for _ in 0..a.threads {
        let ev = client_socket(a.client_event_port)
            .with_context(|| format!("event socket on port {}", a.client_event_port))?;
        let ge = client_socket(a.client_general_port)
            .with_context(|| format!("general socket on port {}", a.client_general_port))?;
        socks.push((ev, ge));
    }
    let send_event = socks[0].0.as_raw_fd();
    let send_general = socks[0].1.as_raw_fd();
    let server_event = SocketAddrV4::new(a.server, a.server_event_port);
    let server_general = SocketAddrV4::new(a.server, a.server_general_port);

    let started = Instant::now();
    let result = std::thread::scope(|scope| -> Result<String> {
        let handles: Vec<_> = socks
            .iter()
            .map(|(ev, ge)| {
                let sh = &shared;
                scope.spawn(move || receiver(sh, ev, ge))
            })
            .collect();

        // 1. Negotiation: one Signaling with three requests per client; retry
        //    clients that lack a grant once a second until the deadline.
        let mut s = Sender {
            fd: send_general,
            batch: Batch::new(),
            n: 0,
            unsent: 0,
        };
        let req = |t: MessageType, log: i8| {
            TypedTlv::Request(RequestUnicastTransmission {
                message_type: t,
                log_inter_message_period: log,
                duration_s: grant_s,
            })
        };
        let tlvs = [
            req(MessageType::Announce, a.log_announce),
            req(MessageType::Sync, a.log_sync),
            req(MessageType::DelayResp, a.log_sync),
        ];
        let neg_deadline = started + negotiation;
        let mut pending: Vec<u32> = (0..cl.n).collect();
        let mut attempt: u16 = 0;
        while !pending.is_empty() && Instant::now() < neg_deadline {
            let seq = attempt;
            send_paced(
                &mut s,
                &cl,
                &pending,
                a.request_rate,
                server_general,
                &|c| signaling(&cl, c, seq, a.domain, &tlvs),
            );
            attempt += 1;
            let wait_until = (Instant::now() + Duration::from_secs(1)).min(neg_deadline);
            loop {
                pending.retain(|&c| shared.grants[c as usize].load(Ordering::Relaxed) != G_ALL);
                if pending.is_empty() || Instant::now() >= wait_until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let negotiated = started.elapsed();
        let signaling_unsent = s.unsent;
        let granted_all = cl.n as usize - pending.len();

        // 2. Delay_Req rounds, one per second; round r carries sequenceId r.
        let mut s = Sender {
            fd: send_event,
            batch: Batch::new(),
            n: 0,
            unsent: 0,
        };
        let rounds = a.warmup + a.duration;
        let t0 = realtime_ns() + 10_000_000;
        let w0 = t0 + i64::try_from(a.warmup).unwrap_or(0) * NS;
        shared
            .round_lo
            .store(i64::try_from(a.warmup).unwrap_or(0), Ordering::Relaxed);
        shared
            .round_hi
            .store(i64::try_from(rounds).unwrap_or(0), Ordering::Relaxed);
        shared.window_start.store(w0, Ordering::Relaxed);
        shared.window_end.store(
            w0 + i64::try_from(a.duration).unwrap_or(0) * NS,
            Ordering::Relaxed,
        );
        let mut dr_sent_window = 0u64;
        let mut max_lag_ns = 0i64;
        let mut payload = [0u8; 64];
        // A little slack: the last clients of the last round are due right at the end.
        let rounds_end = shared.window_end.load(Ordering::Relaxed) + 200_000_000;
        let snmp_before = udp_rcvbuf_errors();
        let mut dr_skipped = 0u64;
        for r in 0..rounds {
            let rt = t0 + i64::try_from(r).unwrap_or(0) * NS;
            let mut next = 0u32;
            while next < cl.n {
                // Never run past the window: what is not sent in time is counted.
                if realtime_ns() >= rounds_end {
                    dr_skipped += u64::from(cl.n - next);
                    break;
                }
                let now = realtime_ns();
                let due = if now < rt {
                    0
                } else {
                    (((now - rt) as i128 * i128::from(cl.n)) / i128::from(NS)).min(i128::from(cl.n))
                        as u32
                };
                if due > next {
                    let planned = rt + (i64::from(next) * NS) / i64::from(cl.n);
                    max_lag_ns = max_lag_ns.max(now - planned);
                }
                while next < due {
                    let c = next;
                    let mut m = Message::delay_req(cl.port_identity(c), r as u16, Timestamp::ZERO);
                    m.header.domain_number = a.domain;
                    let len = m.write(&mut payload).expect("delay_req fits");
                    shared.dr_sent_ns[c as usize].store(realtime_ns(), Ordering::Relaxed);
                    s.push(&payload[..len], server_event, cl.ip(c));
                    if r >= a.warmup {
                        dr_sent_window += 1;
                    }
                    next += 1;
                }
                s.flush();
                if next < cl.n {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        // Let the window's last replies arrive.
        let end = shared.window_end.load(Ordering::Relaxed) + NS;
        while realtime_ns() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let snmp_drops = udp_rcvbuf_errors()
            .zip(snmp_before)
            .map(|(a, b)| a.saturating_sub(b));
        shared.stop.store(true, Ordering::Relaxed);
        let stats: Vec<RxStats> = handles
            .into_iter()
            .map(|h| h.join().expect("receiver thread"))
            .collect();
        let unsent_dr = s.unsent + dr_skipped;

        // 3. Cancel every stream so the server stops sending.
        let mut s = Sender {
            fd: send_general,
            batch: Batch::new(),
            n: 0,
            unsent: 0,
        };
        let cancels = [
            TypedTlv::Cancel(CancelUnicastTransmission::new(MessageType::Announce)),
            TypedTlv::Cancel(CancelUnicastTransmission::new(MessageType::Sync)),
            TypedTlv::Cancel(CancelUnicastTransmission::new(MessageType::DelayResp)),
        ];
        let all: Vec<u32> = (0..cl.n).collect();
        send_paced(
            &mut s,
            &cl,
            &all,
            a.request_rate.max(50_000),
            server_general,
            &|c| signaling(&cl, c, 0x8000, a.domain, &cancels),
        );

        // 4. Results.
        let ips = cl.ips() as usize;
        let mut sync_per_ip = vec![0u64; ips];
        let mut fu = Vec::new();
        let mut rtt = Vec::new();
        let (mut sync_total, mut announce, mut follow_up, mut fu_bad) = (0u64, 0u64, 0u64, 0u64);
        let (mut dr_answered, mut other, mut malformed, mut drops) = (0u64, 0u64, 0u64, 0u64);
        let mut gm_class = None;
        for st in stats {
            for (acc, v) in sync_per_ip.iter_mut().zip(&st.sync_per_ip) {
                *acc += u64::from(*v);
            }
            sync_total += st.sync_total;
            announce += st.announce;
            follow_up += st.follow_up;
            fu_bad += st.fu_implausible;
            dr_answered += st.dr_answered;
            other += st.other;
            malformed += st.malformed;
            drops += st.drops;
            gm_class = gm_class.or(st.gm_class);
            fu.extend(st.fu_lat_ns);
            rtt.extend(st.dr_rtt_ns);
        }
        fu.sort_unstable();
        rtt.sort_unstable();
        let per_client_s = 2f64.powi(-i32::from(a.log_sync));
        let window = a.duration as f64;
        let expected_per_client = (window * per_client_s).round() as u64;
        let mut expected = 0u64;
        let mut short_ips = 0u64;
        let mut deficit = 0u64;
        for (i, got) in sync_per_ip.iter().enumerate() {
            let on_ip = u64::from(cl.per_ip.min(cl.n - (i as u32) * cl.per_ip));
            let exp = on_ip * expected_per_client;
            expected += exp;
            if *got < exp {
                short_ips += 1;
                deficit += exp - got;
            }
        }
        let missed = expected.saturating_sub(sync_total);
        let missed_ratio = missed as f64 / expected.max(1) as f64;
        let sync_rate = sync_total as f64 / (f64::from(cl.n) * window);
        let ann_expected =
            (f64::from(cl.n) * window * 2f64.powi(-i32::from(a.log_announce))) as u64;
        let dr_ratio = dr_answered as f64 / dr_sent_window.max(1) as f64;
        let p50 = percentile(&fu, 0.50);
        let p99 = percentile(&fu, 0.99);
        let pmax = fu.last().copied();
        let loadgen_limited = drops > 0
            || signaling_unsent > 0
            || unsent_dr * 1000 > dr_sent_window.max(1)
            || max_lag_ns > 100_000_000;
        let ok = granted_all == cl.n as usize
            && missed_ratio <= a.max_missed
            && dr_ratio >= 1.0 - a.max_missed
            && p99.is_some_and(|p| (p as f64) / 1e6 <= a.max_p99_ms);
        let offset = shared.utc_offset_ns.load(Ordering::Relaxed);
        let json = format!(
            "{{\"label\":\"{label}\",\"clients\":{n},\"per_ip\":{per_ip},\"ips\":{ips},\
\"window_s\":{window},\"negotiation_s\":{neg:.3},\"granted\":{granted_all},\
\"denied\":{denied},\"cancels_rx\":{cancels},\
\"sync_expected\":{expected},\"sync_received\":{sync_total},\"sync_missed\":{missed},\
\"sync_missed_ratio\":{missed_ratio:.6},\"sync_per_client_per_s\":{sync_rate:.4},\
\"ips_short\":{short_ips},\"sync_deficit_per_ip_sum\":{deficit},\
\"announce_expected\":{ann_expected},\"announce_received\":{announce},\
\"follow_up\":{follow_up},\"fu_implausible\":{fu_bad},\
\"fu_latency_p50_ms\":{p50},\"fu_latency_p99_ms\":{p99},\"fu_latency_max_ms\":{pmax},\
\"delay_req_sent\":{dr_sent_window},\"delay_req_unsent\":{unsent_dr},\
\"delay_resp_answered\":{dr_answered},\"delay_resp_ratio\":{dr_ratio:.6},\
\"delay_resp_rtt_p50_ms\":{r50},\"delay_resp_rtt_p99_ms\":{r99},\
\"sender_max_lag_ms\":{lag:.3},\"client_rx_drops\":{drops},\"netns_udp_rcvbuf_errors\":{snmp},\"signaling_unsent\":{signaling_unsent},\"malformed\":{malformed},\
\"other\":{other},\"loadgen_limited\":{loadgen_limited},\"utc_offset_s\":{off},\"gm_clock_class\":{class},\"ok\":{ok}}}",
            label = a.label.replace(['"', '\\'], ""),
            n = cl.n,
            per_ip = cl.per_ip,
            neg = negotiated.as_secs_f64(),
            denied = shared.denied.load(Ordering::Relaxed),
            cancels = shared.cancels_rx.load(Ordering::Relaxed),
            p50 = ms(p50),
            p99 = ms(p99),
            pmax = ms(pmax),
            r50 = ms(percentile(&rtt, 0.5)),
            r99 = ms(percentile(&rtt, 0.99)),
            lag = max_lag_ns as f64 / 1e6,
            off = if offset == i64::MIN {
                "null".into()
            } else {
                (offset / NS).to_string()
            },
            class = gm_class.map_or("null".into(), |c| c.to_string()),
            snmp = snmp_drops.map_or("null".into(), |v| v.to_string()),
        );
        eprintln!(
            "ptp-loadgen {label}: {n} clients on {ips} addresses ({per_ip}/address), window {window} s\n\
             \x20 negotiation  {neg:.1} s, granted {granted_all}/{n}, denied {denied}\n\
             \x20 Sync         {sync_rate:.4}/client/s, missed {missed} of {expected} ({pct:.4} %), {short_ips} addresses short\n\
             \x20 Follow_Up    latency p50 {p50} ms, p99 {p99} ms, max {pmax} ms ({fu_bad} implausible)\n\
             \x20 Delay_Resp   {dr_answered}/{dr_sent_window} answered ({dr_pct:.3} %), RTT p99 {r99} ms\n\
             \x20 Announce     {announce}/{ann_expected}; load generator drops {drops}, sender lag max {lag:.1} ms\n\
             \x20 => {verdict}{limited}",
            label = a.label,
            n = cl.n,
            per_ip = cl.per_ip,
            neg = negotiated.as_secs_f64(),
            denied = shared.denied.load(Ordering::Relaxed),
            pct = missed_ratio * 100.0,
            p50 = ms(p50),
            p99 = ms(p99),
            pmax = ms(pmax),
            dr_pct = dr_ratio * 100.0,
            r99 = ms(percentile(&rtt, 0.99)),
            lag = max_lag_ns as f64 / 1e6,
            verdict = if ok { "SUSTAINED" } else { "NOT sustained" },
            limited = if loadgen_limited {
                " (the load generator itself could not keep up: results are a lower bound)"
            } else {
                ""
            },
        );
        Ok(json)
    })?;
    println!("{result}");
    Ok(())
}
