//! The command line: every subcommand, flag and help text (clap derive).
//!
//! Parsing only; the commands live in [`crate::cmd`]. Values are validated
//! here when clap can say what is wrong (durations, presets, numbers), so a
//! mistake exits with code 2 and a message before anything is opened.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use timecard_driver::DeviceSpec;
use timecard_hw::pci::Board;
use timecard_sim::oscillator::Preset;

use crate::duration::{parse_duration, parse_positive_duration};

/// `timecard --help`: what the tool is for.
const LONG_ABOUT: &str = "\
timecard: the operator's tool for an OCP Time Card (a PCIe card with a GNSS receiver, an \
FPGA clock and an atomic or OCXO oscillator for holdover).

It finds cards on the PCI bus, shows a card's identity, time and status with the names \
Linux's Time Card driver (ptp_ocp) uses in sysfs, follows a card live with the \
driver's 1 Hz supervisor, and runs a simulated card (with ground truth) for machines \
without one. `timecard up` runs the whole appliance in one process.

Without --device every command uses a simulator embedded in the command itself, so all \
of it works on any laptop.";

/// `timecard --help`: examples, device forms and exit codes.
const AFTER_HELP: &str = "\
Examples:
  timecard list                                  Time Cards on this machine's PCI bus
  timecard up                                    run a simulated appliance; Ctrl-C stops it
  timecard status                                status of a fresh embedded simulator
  timecard status --device pci:0000:01:00.0      a real card bound to vfio-pci
  timecard sim --bar /tmp/card.bar &             a simulated card other processes can open
  timecard watch --device sim:/tmp/card.bar      follow it live
  timecard sim fault --bar /tmp/card.bar gnss-loss

Devices (--device):
  pci:0000:01:00.0   a real card bound to vfio-pci (`timecard list` shows the address)
  sim:PATH           a simulator started with `timecard sim --bar PATH`
  sim                a simulator inside this command (the default)

Exit codes:
  0    success
  1    runtime error
  2    usage error (bad flags or arguments)
  69   the device is missing, cannot be opened, or does not respond (EX_UNAVAILABLE)";

/// The `timecard` command line.
#[derive(Debug, Parser)]
#[command(
    name = "timecard",
    version,
    about = "Find, inspect, follow and simulate OCP Time Cards, and run the time appliance",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
)]
pub struct Cli {
    /// Which card: `pci:0000:01:00.0` (bound to vfio-pci), `sim:PATH` (a running
    /// `timecard sim --bar PATH`) or `sim` (a simulator inside this command) [default: sim]
    #[arg(long, global = true, value_name = "DEV")]
    pub device: Option<DeviceSpec>,

    /// `--log-level` (default warn) and `--log-format`.
    #[command(flatten)]
    pub log: operate::logging::LogArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the Time Cards on this machine's PCI bus
    #[command(
        long_about = "List the Time Cards on this machine's PCI bus (a sysfs scan: no device is opened).\n\n\
            For each card: PCI address, board, PCI ID, the kernel driver bound to it, its IOMMU \
            group, and, when Linux's ptp_ocp drives it, its class device (ocpN), GNSS tty and \
            the driver's sysfs attributes. A card must be bound to vfio-pci for \
            `--device pci:ADDRESS` to open it.",
        after_help = "Examples:\n  timecard list\n  timecard list --json | jq '.[].address'"
    )]
    List(ListArgs),

    /// Check this machine for running timecard: card, drivers, ports, clocks
    #[command(
        long_about = "Preflight checks, one line each with a fix when something is wrong: a Time \
            Card on the PCI bus, bound to vfio-pci with a viable IOMMU group (or to the kernel's \
            ptp_ocp), its GNSS lock (through ptp_ocp), /dev/vfio usable, UDP 319/320 free for the \
            PTP server, hardware timestamping on the network interfaces (ethtool's timestamping \
            information: hardware TX/RX and a PTP hardware clock), fbclockd's shared memory \
            fresh, and the clocks agreeing: the card's (with --card) and PTP's TrueTime \
            against the system clock. Read-only: sysfs, one ioctl per interface, and with \
            --card a time latch on that card. Exit status 1 when a check fails.",
        after_help = "Examples:\n  timecard doctor\n  timecard doctor --card sim:/tmp/card.bar\n  \
            timecard doctor --json | jq '.[] | select(.status == \"fail\")'\n\n\
            Clock thresholds: card vs system ok within 1 ms, WARN up to 1 s, FAIL beyond; \
            PTP vs system ok when the system time is inside TrueTime's [earliest, latest], \
            WARN up to 1 s outside, FAIL beyond."
    )]
    Doctor(DoctorArgs),

    /// Check daemon config files (ptp-server, fbclockd, counter, notify, push)
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Feed chronyd from the card: chrony's SOCK refclock, one sample a second
    #[command(
        long_about = "Feed chronyd from the card through chrony's SOCK refclock, so chronyd \
            disciplines this host's clock from the Time Card. chronyd creates the socket \
            (`refclock SOCK PATH` in chrony.conf); once a second this command latches the \
            card's time with a host bracket and sends chronyd the card's UTC minus the system \
            time, with the card's leap-second announcement.\n\n\
            The card keeps TAI; its own TAI-UTC (from GNSS) converts it to UTC, and no sample \
            is sent while it is unknown. Samples are sent while the card is locked to GNSS, \
            and in holdover for at most --max-holdover after this process last saw it locked; \
            never while acquiring, uninitialised, unreadable or across a leap second. Each \
            change of what it does is printed as one line.\n\n\
            It only reads the card: a separate service, restarted independently, ordered \
            after chronyd, for a card no other process holds open, or beside a simulator \
            file another process owns (`timecard sim` driven by `timecard watch`). A card \
            behind vfio-pci has one owner: there the process that owns it feeds chronyd \
            (`ptp-server --chrony-sock PATH` or `chrony_sock` in its config, `timecard up \
            --chrony-sock PATH`), with the same samples and rules.",
        after_help = "Examples:\n  timecard chrony --device sim:/tmp/card.bar --sock /run/chrony/timecard.sock\n  \
            ptp-server --device pci:0000:01:00.0 --chrony-sock /run/chrony/timecard.sock   (a card on vfio-pci)\n\n\
            chrony.conf:\n  refclock SOCK /run/chrony/timecard.sock refid TCRD poll 2 precision 1e-6 prefer\n\n\
            Exits with 69 (EX_UNAVAILABLE) when the device is missing or cannot be opened."
    )]
    Chrony(ChronyArgs),

    /// Show a card's identity, time and status (sysfs names), once
    #[command(
        long_about = "Show a card's identity (board, PCI ID, firmware, capabilities), its time \
            (TAI and UTC, with the host's clock bracketing the read) and its status, named as \
            ptp_ocp names its sysfs attributes: gnss_sync, clock_source, \
            available_clock_sources, utc_tai_offset, clock_status_offset, clock_status_drift, \
            ts_window_adjust, plus sync/holdover, leap second, antenna, satellites and TOD \
            protocol.\n\n\
            For a simulated card a \"simulator ground truth\" section follows (true time, the \
            card's error, injected faults): that part does not exist on real hardware.\n\n\
            The embedded simulator (--device sim, the default) is created and initialised by \
            this command, so it shows a card that has just been powered on: GNSS still \
            acquiring, not in sync. Other devices are only read, never changed.",
        after_help = "Examples:\n  timecard status\n  timecard status --json | jq .firmware\n  \
            timecard status --device sim:/tmp/card.bar\n  timecard status --device pci:0000:01:00.0\n\n\
            Exits with 69 (EX_UNAVAILABLE) when the device is missing or does not respond."
    )]
    Status(StatusArgs),

    /// Follow a card live: time, offset to the host, sync, GNSS, supervisor events
    #[command(
        long_about = "Follow a card live. Every interval prints one line (a redrawn block when \
            stdout is a terminal): card time, card minus host clock, sync state (UNSYNCED, IN \
            SYNC, HOLDOVER), clock source, GNSS state, servo offset, and what the driver's \
            supervisor noticed (GNSS lost/back, UTC offset changes, rejected time jumps).\n\n\
            The supervisor is the driver's 1 Hz watchdog; it runs about once a second whatever \
            the interval, and reads the GNSS receiver's NMEA when the card's serial port is \
            known. A card whose clock source is NONE (the FPGA's reset state: nothing has \
            initialised it since power-on) is initialised first, as ptp_ocp's probe would.\n\n\
            Stops after --count lines, or on Ctrl-C.",
        after_help = "Examples:\n  timecard watch\n  timecard watch --device sim:/tmp/card.bar --interval 200ms\n  \
            timecard watch --count 10 --json > samples.ndjson\n\n\
            Exits with 69 (EX_UNAVAILABLE) when the device is missing or stops responding."
    )]
    Watch(WatchArgs),

    /// Run a simulated Time Card as its own process, or control one
    #[command(
        long_about = "Run a simulated Time Card as its own process. The card lives in a \
            shared-memory file (--bar) that other processes open with `--device sim:PATH`, \
            and its GNSS receiver writes NMEA to a pseudo-terminal (symlinked at --gnss-link) \
            that `cat`, gpsd or the driver can read. Runs until Ctrl-C, SIGTERM or \
            --duration, then removes both files.\n\n\
            The card comes up as after power-on: free-running from 1970, clock source NONE, \
            GNSS acquiring. A driver brings it up (`timecard watch --device sim:PATH` does).\n\n\
            `timecard sim fault` injects faults into a running simulator; `timecard sim \
            truth` prints its ground truth.",
        after_help = "Examples:\n  timecard sim --bar /tmp/card.bar\n  \
            timecard sim --bar /tmp/card.bar --preset ocxo --acceleration 10 --duration 1h\n  \
            timecard sim fault --bar /tmp/card.bar gnss-loss\n  \
            timecard sim fault --bar /tmp/card.bar leap-second --delta +1 --at 2026-12-31\n  \
            timecard sim truth --bar /tmp/card.bar --json"
    )]
    Sim(SimArgs),

    /// Run the appliance: a card (simulated by default), the driver and its supervisor, live
    #[command(
        long_about = "Run the time appliance in this process, with live status like `timecard \
            watch`, until Ctrl-C or --duration.\n\n\
            By default the card is a real-time simulator started here (with its GNSS \
            pseudo-terminal); with --bar it lives in a shared-memory file so other processes \
            can attach (`timecard status --device sim:PATH`, `timecard sim fault --bar PATH`). \
            With --device pci:ADDRESS or sim:PATH an existing card is used instead. The driver \
            initialises the card as ptp_ocp's probe does and the supervisor watches it.\n\n\
            A fresh simulated card starts UNSYNCED with GNSS acquiring, gets a fix after --ttff, \
            and then the FPGA's PPS servo pulls the card's phase in until IN SYNC (4 PPS edges \
            within 20 ns). With ptp_ocp's servo gains that takes about a minute at real time; \
            --acceleration 20 shows it in a few seconds. --preset, --board, --seed, \
            --acceleration and --ttff shape the simulator and do not apply to --device.\n\n\
            Beside the text view, `up` serves a live web dashboard on http://127.0.0.1:7380/ \
            (--dashboard ADDR to move it, --no-dashboard to turn it off).",
        after_help = "Examples:\n  timecard up\n  timecard up --preset ocxo --duration 2m\n  \
            timecard up --bar /tmp/card.bar          # then, elsewhere: timecard sim fault --bar /tmp/card.bar gnss-loss\n  \
            timecard up --device pci:0000:01:00.0\n  \
            timecard up --dashboard 0.0.0.0:7380     # then open http://THIS-HOST:7380/ from another machine\n\n\
            Exits with 69 (EX_UNAVAILABLE) when the device is missing or stops responding."
    )]
    Up(Box<UpArgs>),

    /// Check TrueTime against ground truth: N simulated hosts, faults, commit-wait
    #[command(
        long_about = "Run the TrueTime linearizability harness: N simulated hosts, each with its own \
            drifting clock and its own fbclockd estimator, sync to a grandmaster on a simulated Time \
            Card over a simulated network; applications read TrueTime and run commit-wait \
            transactions. Every interval is checked against the simulator's true time (TAI and UTC) \
            and the commit order against real-time order, under faults: GNSS loss (card holdover, \
            class 7), grandmaster restart, packet loss and delay spikes, asymmetric paths, client \
            frequency steps, a leap second. Deterministic for a seed; no sockets, no sleeping.",
        after_help = "Examples:\n  timecard linearizability\n  timecard linearizability --scenario gnss-loss-10min --hosts 8\n  \
            timecard linearizability --json | jq '.violations'\n\n\
            Exits with 1 if any interval missed true time or any commit order was violated in a \
            scenario inside the documented assumptions (freq-step+60ppm exceeds them on purpose)."
    )]
    Linearizability(LinearizabilityArgs),

    /// The distributed counter: serve it, or add/get/clear on a running one
    #[command(
        subcommand,
        long_about = "The distributed counter (Netflix Distributed Counter style), ordered by \
            TrueTime. Namespaces have a type: best-effort (memcached, TTL, no durability), \
            eventual (every add is an event in the log; reads return the last rollup) or \
            accurate (last rollup + the not-yet-rolled-up delta). Retries and hedged requests \
            with the same idempotency token (EVENT_TIME_NS:NONCE) count once.\n\n\
            `timecard up` runs the service (gRPC on 127.0.0.1:7340, HTTP/JSON on :7341); \
            `timecard counter serve` runs it alone. Adds and clears need the API token \
            (--api-token-file, or TIMECARD_API_TOKEN_FILE; `up` makes \
            $TMPDIR/timecard-data/api-token).",
        after_help = "Examples:\n  export TIMECARD_API_TOKEN_FILE=/tmp/timecard-data/api-token\n  \
            timecard counter add likes video42 1 --get\n  timecard counter get views video42\n  \
            timecard counter serve --backend nats://127.0.0.1:4222 --namespace views=eventual --api-token-file /etc/timecard/api-token\n  \
            curl -s -XPOST -H \"Authorization: Bearer $(cat $TIMECARD_API_TOKEN_FILE)\" 127.0.0.1:7341/v1/counters/likes/video42/add -d '{\"delta\": 1}'"
    )]
    Counter(counter::cli::Command),

    /// The notification pipeline: serve it, or publish/pull/state/register on a running one
    #[command(
        subcommand,
        long_about = "Rapid event notification (Netflix RENO style), ordered by TrueTime. \
            Events are durable per priority (high, medium, low) and member shard before they \
            are acknowledged; gates drop stale events (by TrueTime age against the type's \
            threshold) and duplicates (same idempotency key CREATION_TIME_NS:NONCE); every \
            notification is stored per member for devices to pull, and pushed to online \
            devices through one bulkhead per channel (APNs, FCM, the push edge).\n\n\
            `timecard up` runs it (gRPC on 127.0.0.1:7350, HTTP/JSON and /metrics on :7351); \
            `timecard notify serve` runs it alone. Publish, register and mark need the API \
            token (--api-token-file, or TIMECARD_API_TOKEN_FILE).",
        after_help = "Examples:\n  export TIMECARD_API_TOKEN_FILE=/tmp/timecard-data/api-token\n  \
            timecard notify register m1 tv1 --type tv\n  \
            timecard notify publish --type new-episode --member m1 --body '{\"show\":\"Dark\"}'\n  \
            timecard notify pull m1\n  timecard notify state m1\n  \
            curl -s -H \"Authorization: Bearer $(cat $TIMECARD_API_TOKEN_FILE)\" 127.0.0.1:7351/v1/events -d '{\"type\":\"live-event\",\"member\":\"m1\",\"body\":{}}'"
    )]
    Notify(notify::cli::Command),
}

/// Flags of `timecard linearizability`.
#[derive(Debug, Args)]
pub struct LinearizabilityArgs {
    /// Scenario to run (repeatable) [default: all]
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,

    /// Simulated hosts
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub hosts: u64,

    /// Simulated seconds per scenario
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(i64).range(60..=86_400))]
    pub seconds: i64,

    /// Random seed
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,

    /// One JSON object per scenario instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `timecard config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate config files with line-precise errors
    #[command(
        long_about = "Validate daemon config files the way the daemons read them, printing \
            `FILE:LINE:COL: message` for each problem (TOML syntax, unknown keys with a \
            suggestion, wrong value types, values the daemon's flag parser rejects) and \
            `FILE: ok` for a good file. Exit status 1 when a file has a problem.\n\n\
            The daemon is inferred from the file name (ptp-server.toml, fbclockd.toml, \
            counter.toml, notify.toml, push.toml) unless --for names it. ptp-server files hold \
            ptp-server's own settings (snake_case keys); the others hold the daemon's long \
            flag names as keys (`interval = \"250ms\"`, `arb-is-utc = true`, arrays for \
            repeated flags), as `--config FILE` reads them.",
        after_help = "Examples:\n  timecard config check /etc/timecard/*.toml\n  \
            timecard config check --for counter ./staging-counter.toml"
    )]
    Check(ConfigCheckArgs),
}

/// Flags of `timecard config check`.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Config files to check
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The daemon the files are for [default: from each file's name]
    #[arg(long = "for", value_enum, value_name = "DAEMON")]
    pub daemon: Option<Daemon>,
}

/// A daemon with a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Daemon {
    /// ptp-server's TOML settings
    PtpServer,
    /// fbclockd's flags
    Fbclockd,
    /// `timecard-counter serve`'s flags
    Counter,
    /// `timecard-notify serve`'s flags
    Notify,
    /// `timecard-push serve`'s flags
    Push,
}

/// Flags of `timecard doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,

    /// fbclockd's shared memory file
    #[arg(long, value_name = "PATH", default_value = fbclock::DEFAULT_PATH)]
    pub fbclock: std::path::PathBuf,

    /// Compare this card's clock with the system's: `pci:ADDRESS` (bound to
    /// vfio-pci; opened, only read) or `sim:PATH` (a running simulator)
    #[arg(long, value_name = "DEV")]
    pub card: Option<DeviceSpec>,
}

/// Flags of `timecard chrony`.
#[derive(Debug, Args)]
pub struct ChronyArgs {
    /// chronyd's socket: the PATH of `refclock SOCK PATH` in chrony.conf
    #[arg(long, value_name = "PATH")]
    pub sock: PathBuf,

    /// Keep feeding chronyd this long after the card was last seen locked to
    /// GNSS (holdover); 0 stops at once
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub max_holdover: Duration,

    /// Stop after this long, e.g. 30s, 10m [default: until Ctrl-C or SIGTERM]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
}

/// Flags of `timecard list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Flags of `timecard status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// How a live view runs (shared by `watch` and `up`).
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Time between samples, e.g. 200ms, 1s, 5s
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// Print one JSON object per sample (newline-delimited) instead of text
    #[arg(long)]
    pub json: bool,
}

/// Flags of `timecard watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Sampling and output.
    #[command(flatten)]
    pub live: LiveArgs,

    /// Stop after this many samples [default: run until Ctrl-C]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// Oscillator presets of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// High-quality OCXO: about ±22 µs after 24 h of holdover
    Ocxo,
    /// Rubidium atomic clock (SA5X, mRO-50 class): about ±1 µs after 24 h
    Rubidium,
    /// Chip-scale atomic clock (SA.45s class): about ±3 µs after 24 h
    Csac,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Ocxo => Preset::Ocxo,
            PresetArg::Rubidium => Preset::Rubidium,
            PresetArg::Csac => Preset::Csac,
        }
    }
}

/// Boards the simulator implements (those with the Meta/fb register layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BoardArg {
    /// Meta OCP Time Card (1d9b:0400), the reference design
    Meta,
    /// Celestica Time Card (18d4:1008)
    Celestica,
    /// ADVA Time Card X1 (ad5a:0410)
    AdvaX1,
}

impl From<BoardArg> for Board {
    fn from(b: BoardArg) -> Self {
        match b {
            BoardArg::Meta => Board::Meta,
            BoardArg::Celestica => Board::Celestica,
            BoardArg::AdvaX1 => Board::AdvaX1,
        }
    }
}

/// What the simulated card is made of (shared by `sim` and `up`).
#[derive(Debug, Clone, Args)]
pub struct SimParams {
    /// Oscillator on the simulated card
    #[arg(long, value_enum, default_value_t = PresetArg::Rubidium)]
    pub preset: PresetArg,

    /// Board model to simulate
    #[arg(long, value_enum, default_value_t = BoardArg::Meta)]
    pub board: BoardArg,

    /// Noise seed: the same seed gives the same oscillator and PPS noise
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Simulated seconds per wall-clock second (1 = real time; up to 10000)
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = parse_acceleration)]
    pub acceleration: f64,

    /// GNSS time to first fix, in seconds
    #[arg(long, value_name = "S", default_value_t = 2.0, value_parser = parse_ttff)]
    pub ttff: f64,
}

/// Accepts an acceleration factor in (0, 10000].
fn parse_acceleration(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| {
        format!("{s:?} is not a number; e.g. 1 (real time) or 60 (a minute per second)")
    })?;
    if x.is_finite() && x > 0.0 && x <= 10_000.0 {
        Ok(x)
    } else {
        Err(format!(
            "{s} is out of range: the acceleration must be above 0 and at most 10000"
        ))
    }
}

/// Accepts a time to first fix in [0, 86400] seconds.
fn parse_ttff(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds; e.g. 2 or 0.5"))?;
    if x.is_finite() && (0.0..=86_400.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!(
            "{s} is out of range: the time to first fix must be 0 to 86400 seconds"
        ))
    }
}

/// `timecard sim`: run a simulator, or control one with a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SimArgs {
    /// Control a running simulator instead of starting one.
    #[command(subcommand)]
    pub action: Option<SimAction>,

    /// Flags for running a simulator.
    #[command(flatten)]
    pub run: SimRunArgs,
}

/// Flags for running a simulator.
#[derive(Debug, Args)]
pub struct SimRunArgs {
    /// Shared-memory file to create for the card (replaced if it exists; removed on exit)
    #[arg(long, value_name = "PATH", required = true)]
    pub bar: Option<PathBuf>,

    /// Symlink to create to the GNSS pseudo-terminal [default: PATH with extension .gnss]
    #[arg(long, value_name = "PATH")]
    pub gnss_link: Option<PathBuf>,

    /// What the card is made of.
    #[command(flatten)]
    pub params: SimParams,

    /// Stop after this long (wall clock), e.g. 30s, 10m [default: until Ctrl-C or SIGTERM]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Subcommands of `timecard sim`.
#[derive(Debug, Subcommand)]
pub enum SimAction {
    /// Inject a fault into a running simulator
    #[command(
        long_about = "Inject a fault into a running simulator (started with `timecard sim --bar \
            PATH` or `timecard up --bar PATH`). It takes effect at once; follow the card with \
            `timecard watch --device sim:PATH` to see the driver react.",
        after_help = "Examples:\n  timecard sim fault --bar /tmp/card.bar gnss-loss\n  \
            timecard sim fault --bar /tmp/card.bar time-jump --seconds 5\n  \
            timecard sim fault --bar /tmp/card.bar leap-second --delta -1 --at 2026-06-30\n  \
            timecard sim fault --bar /tmp/card.bar external-pps --offset-ns 250"
    )]
    Fault(FaultArgs),

    /// Print a running simulator's ground truth
    #[command(
        long_about = "Print a running simulator's ground truth: true TAI time, the card's error \
            against it, sync state, oscillator, GNSS receiver faults. None of this is visible on \
            real hardware.",
        after_help = "Examples:\n  timecard sim truth --bar /tmp/card.bar\n  \
            timecard sim truth --bar /tmp/card.bar --json | jq .card_error_ns"
    )]
    Truth(TruthArgs),
}

/// Flags of `timecard sim fault`.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Shared-memory file of the running simulator
    #[arg(long, value_name = "PATH", global = true)]
    pub bar: Option<PathBuf>,

    /// The fault.
    #[command(subcommand)]
    pub fault: FaultCommand,
}

/// Flags of `timecard sim truth`.
#[derive(Debug, Args)]
pub struct TruthArgs {
    /// Shared-memory file of the running simulator
    #[arg(long, value_name = "PATH")]
    pub bar: PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Faults `timecard sim fault` can inject.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum FaultCommand {
    /// GNSS signals lost: no PPS, NMEA reports no fix (the card goes into holdover)
    GnssLoss,
    /// GNSS signals back; the receiver reacquires within a second
    GnssRestore,
    /// Antenna open circuit: like a loss, and the antenna status says so
    AntennaFault,
    /// Antenna repaired
    AntennaRestore,
    /// Spoofing: the receiver's time of day jumps by whole seconds
    TimeJump {
        /// Seconds added to the reported time of day (negative: into the past; at most ±1e9)
        #[arg(long, allow_negative_numbers = true, value_parser = parse_jump_seconds)]
        seconds: i64,
    },
    /// Spoofing: every PPS edge moves by a phase offset
    PpsPhaseJump {
        /// Phase offset of the PPS edges from true seconds, ns (below one second)
        #[arg(long, allow_negative_numbers = true, value_parser = parse_phase_ns)]
        ns: i64,
    },
    /// Spoofing ends: time of day and PPS phase true again
    ClearSpoofing,
    /// Announce a leap second at the end of a UTC day
    LeapSecond {
        /// +1 inserts 23:59:60, -1 deletes 23:59:59
        #[arg(long, allow_negative_numbers = true, value_parser = parse_leap_delta)]
        delta: i32,
        /// The UTC day (YYYY-MM-DD) whose last minute gets the leap [default: the
        /// simulated card's current UTC day]
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        at: Option<Date>,
    },
    /// Step the oscillator's frequency (shows in holdover)
    FrequencyStep {
        /// Fractional frequency change, e.g. 1e-9 (at most ±1e-3)
        #[arg(long, allow_hyphen_values = true, value_parser = parse_fractional)]
        fractional: f64,
    },
    /// The card drops off the bus: every register reads 0xFFFFFFFF
    CardRemoved,
    /// The card answers again
    CardRestored,
    /// An external PPS appears on the SMA inputs (timestampers 1-4), or goes away
    ExternalPps {
        /// Offset of the external PPS from true seconds, ns (below one second) [default: 0]
        #[arg(long, allow_negative_numbers = true, conflicts_with = "off", value_parser = parse_phase_ns)]
        offset_ns: Option<i64>,
        /// Remove the external PPS
        #[arg(long)]
        off: bool,
    },
    /// PCIe reset of the FPGA: registers reset, the image boots again from flash
    ResetFpga,
}

/// A calendar date given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    /// Year.
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
    /// Day 1..=31 (valid for the month).
    pub day: u8,
}

/// Parses `YYYY-MM-DD` and checks that the day exists.
fn parse_date(s: &str) -> Result<Date, String> {
    let bad = || format!("{s:?} is not a date; write YYYY-MM-DD, e.g. 2026-12-31");
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return Err(bad());
    }
    let date = Date {
        year: y.parse().map_err(|_| bad())?,
        month: m.parse().map_err(|_| bad())?,
        day: d.parse().map_err(|_| bad())?,
    };
    let days = timecard_hw::civil::days_from_civil(date.year, date.month, date.day);
    if (1..=12).contains(&date.month)
        && timecard_hw::civil::civil_from_days(days) == (date.year, date.month, date.day)
    {
        Ok(date)
    } else {
        Err(format!("{s} is not a day of the calendar"))
    }
}

/// Accepts `+1`, `1` or `-1`.
fn parse_leap_delta(s: &str) -> Result<i32, String> {
    match s {
        "+1" | "1" => Ok(1),
        "-1" => Ok(-1),
        _ => Err(format!(
            "{s:?}: a leap second is +1 (insert 23:59:60) or -1 (delete 23:59:59)"
        )),
    }
}

/// Accepts a time-of-day jump of at most ±1e9 s (about 31 years).
fn parse_jump_seconds(s: &str) -> Result<i64, String> {
    let seconds: i64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of seconds"))?;
    if seconds.unsigned_abs() <= 1_000_000_000 {
        Ok(seconds)
    } else {
        Err(format!(
            "{s} s is out of range: a time-of-day jump is at most ±1000000000 s"
        ))
    }
}

/// Accepts a PPS phase offset below one second.
fn parse_phase_ns(s: &str) -> Result<i64, String> {
    let ns: i64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of nanoseconds"))?;
    if ns.unsigned_abs() < 1_000_000_000 {
        Ok(ns)
    } else {
        Err(format!(
            "{s} ns is a second or more: a PPS offset is below one second \
             (for whole seconds of spoofing use `time-jump --seconds`)"
        ))
    }
}

/// Accepts a finite fractional frequency step of at most 1e-3.
fn parse_fractional(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number; e.g. 1e-9 or -5e-10"))?;
    if x.is_finite() && x.abs() <= 1e-3 {
        Ok(x)
    } else {
        Err(format!(
            "{s} is out of range: at most ±1e-3 (real oscillators step by parts in 1e9)"
        ))
    }
}

/// Flags of `timecard up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// What the simulated card is made of (ignored with --device pci:… or sim:PATH).
    #[command(flatten)]
    pub params: SimParams,

    /// Put the simulated card in this shared-memory file so other processes can
    /// attach (`--device sim:PATH`); removed on exit
    #[arg(long, value_name = "PATH")]
    pub bar: Option<PathBuf>,

    /// Stop after this long, e.g. 30s, 10m [default: until Ctrl-C or SIGTERM]
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Sampling and output of the live view.
    #[command(flatten)]
    pub live: LiveArgs,

    /// The PTP server `up` runs on the card.
    #[command(flatten)]
    pub ptp: PtpArgs,

    /// Do not start fbclockd (TrueTime from the PTP server)
    #[arg(long)]
    pub no_fbclock: bool,

    /// Where fbclockd publishes TrueTime for `fbclock` clients
    #[arg(long, value_name = "PATH", default_value = fbclock::DEFAULT_PATH)]
    pub fbclock_shm: PathBuf,

    /// fbclockd's gRPC API (GetTime, WaitUntil, Status, Watch; read-only);
    /// `off` disables (port in use: an ephemeral port, and `up` says so)
    #[arg(long, value_name = "ADDR", default_value = fbclockd::cli::DEFAULT_GRPC)]
    pub fbclock_grpc: operate::metrics::http::ListenAddr,

    /// The distributed counter `up` runs.
    #[command(flatten)]
    pub counter: CounterArgs,

    /// The notification pipeline `up` runs.
    #[command(flatten)]
    pub notify: NotifyArgs,

    /// Who may change state in the counter and notify: a token file (created
    /// with a fresh token if missing; default $TMPDIR/timecard-data/api-token)
    /// or --insecure.
    #[command(flatten)]
    pub access: access::AccessArgs,

    /// The live web dashboard `up` serves.
    #[command(flatten)]
    pub dashboard: DashboardArgs,
}

/// Flags of the web dashboard inside `timecard up`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Do not serve the web dashboard
    #[arg(long, conflicts_with = "addr")]
    pub no_dashboard: bool,

    /// Serve the live web dashboard here: open http://ADDR/ in a browser. It
    /// shows the card, the PTP server, TrueTime's window of uncertainty, the
    /// counter and notifications, pushed twice a second over WebSocket (SSE
    /// as fallback). Loopback only by default; 0.0.0.0:7380 serves other
    /// machines too (port in use: an ephemeral port, and `up` says so)
    #[arg(long = "dashboard", value_name = "ADDR", default_value = crate::dashboard::DEFAULT_ADDR)]
    pub addr: std::net::SocketAddr,
}

/// Flags of the notification pipeline inside `timecard up`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// Do not start the notification pipeline
    #[arg(long)]
    pub no_notify: bool,

    /// Notify event logs and member store: embedded:DIR or nats://HOST:PORT[,…]
    /// [default: embedded:$TMPDIR/timecard-data]
    #[arg(long, value_name = "SPEC")]
    pub notify_backend: Option<String>,

    /// Notify gRPC address (port in use: an ephemeral port, and `up` says so)
    #[arg(long, value_name = "ADDR", default_value = notify::cli::DEFAULT_GRPC)]
    pub notify_grpc: std::net::SocketAddr,

    /// Notify HTTP/JSON address (also /metrics)
    #[arg(long, value_name = "ADDR", default_value = notify::cli::DEFAULT_HTTP)]
    pub notify_http: std::net::SocketAddr,

    /// Capture notify's HTTP API for replay testing (`timecard-replay run
    /// --source http://<notify HTTP>`)
    #[arg(long)]
    pub notify_capture: bool,
}

/// Flags of the counter service inside `timecard up`.
#[derive(Debug, Args)]
pub struct CounterArgs {
    /// Do not start the counter service
    #[arg(long)]
    pub no_counter: bool,

    /// Counter event log and checkpoints: embedded:DIR or nats://HOST:PORT[,…]
    /// [default: embedded:$TMPDIR/timecard-data]
    #[arg(long, value_name = "SPEC")]
    pub counter_backend: Option<String>,

    /// Counter gRPC address (port in use: an ephemeral port, and `up` says so)
    #[arg(long, value_name = "ADDR", default_value = counter::cli::DEFAULT_GRPC)]
    pub counter_grpc: std::net::SocketAddr,

    /// Counter HTTP/JSON address
    #[arg(long, value_name = "ADDR", default_value = counter::cli::DEFAULT_HTTP)]
    pub counter_http: std::net::SocketAddr,

    /// memcached for best-effort counter namespaces
    #[arg(long, value_name = "HOST:PORT")]
    pub counter_memcached: Option<std::net::SocketAddr>,

    /// Capture the counter's HTTP API for replay testing (`timecard-replay
    /// run --source http://<counter HTTP>`)
    #[arg(long)]
    pub counter_capture: bool,
}

/// Flags of the PTP server inside `timecard up`.
#[derive(Debug, Args)]
pub struct PtpArgs {
    /// Do not start the PTP server
    #[arg(long)]
    pub no_ptp: bool,

    /// Address the PTP server listens on (loopback unless you mean otherwise)
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub ptp_ip: std::net::IpAddr,

    /// PTP event port; the general port is this + 1. 319 needs root; without it
    /// `up` falls back to 3319/3320 and says so
    #[arg(long, value_name = "PORT", default_value_t = 319)]
    pub ptp_port: u16,

    /// PTP server monitoring (JSON on /, Prometheus on /metrics); `off` disables
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8888")]
    pub ptp_monitoring: String,

    /// Seconds of card history behind the announced clockClass (c4u uses 600;
    /// the class is the 99th percentile, so it turns 6 once 99 % of the window is locked)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub ptp_quality_window: usize,

    /// PTP server configuration file (TOML); the flags above override it
    #[arg(long, value_name = "FILE")]
    pub ptp_config: Option<PathBuf>,

    /// Feed chronyd from the card, beside the PTP server (the card's one
    /// owner): the PATH of `refclock SOCK PATH` in chrony.conf. What it sends
    /// and when: `timecard chrony --help`
    #[arg(long, value_name = "PATH", conflicts_with = "no_ptp")]
    pub chrony_sock: Option<PathBuf>,

    /// Keep feeding chronyd this long after the card was last seen locked to
    /// GNSS [default: 1h, or chrony_max_holdover_s in --ptp-config]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub chrony_max_holdover: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Parses a command line (without the program name).
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("timecard").chain(args.iter().copied()))
    }

    /// Parses `sim fault --bar /tmp/x.bar ARGS` and returns the fault.
    fn fault(args: &[&str]) -> FaultCommand {
        let mut all = vec!["sim", "fault", "--bar", "/tmp/x.bar"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Sim(SimArgs {
                action: Some(SimAction::Fault(f)),
                ..
            }) => f.fault,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fault_arguments_parse() {
        assert_eq!(fault(&["gnss-loss"]), FaultCommand::GnssLoss);
        assert_eq!(
            fault(&["time-jump", "--seconds", "-5"]),
            FaultCommand::TimeJump { seconds: -5 }
        );
        assert_eq!(
            fault(&["pps-phase-jump", "--ns", "250"]),
            FaultCommand::PpsPhaseJump { ns: 250 }
        );
        assert_eq!(
            fault(&["leap-second", "--delta", "+1", "--at", "2026-12-31"]),
            FaultCommand::LeapSecond {
                delta: 1,
                at: Some(Date {
                    year: 2026,
                    month: 12,
                    day: 31
                })
            }
        );
        assert_eq!(
            fault(&["leap-second", "--delta", "-1"]),
            FaultCommand::LeapSecond {
                delta: -1,
                at: None
            }
        );
        assert_eq!(
            fault(&["frequency-step", "--fractional", "-1e-9"]),
            FaultCommand::FrequencyStep { fractional: -1e-9 }
        );
        assert_eq!(
            fault(&["external-pps", "--offset-ns", "-40"]),
            FaultCommand::ExternalPps {
                offset_ns: Some(-40),
                off: false
            }
        );
        assert_eq!(
            fault(&["external-pps", "--off"]),
            FaultCommand::ExternalPps {
                offset_ns: None,
                off: true
            }
        );
        // --bar may also follow the fault.
        let late = parse(&["sim", "fault", "reset-fpga", "--bar", "/tmp/y.bar"]).unwrap();
        let Command::Sim(SimArgs {
            action: Some(SimAction::Fault(f)),
            ..
        }) = late.command
        else {
            panic!("not a fault");
        };
        assert_eq!(f.bar, Some(PathBuf::from("/tmp/y.bar")));
    }

    #[test]
    fn bad_fault_arguments_are_usage_errors() {
        for args in [
            &["leap-second", "--delta", "2"][..],
            &["leap-second", "--delta", "+1", "--at", "2026-02-30"],
            &["leap-second", "--delta", "+1", "--at", "31.12.2026"],
            &["pps-phase-jump", "--ns", "1000000000"],
            &["frequency-step", "--fractional", "0.5"],
            &["frequency-step", "--fractional", "NaN"],
            &["external-pps", "--off", "--offset-ns", "5"],
            &["time-jump"],
            &["time-jump", "--seconds", "9223372036854775807"],
            &["external-pps", "--offset-ns", "-9223372036854775808"],
            &["meteor-strike"],
        ] {
            let mut all = vec!["sim", "fault", "--bar", "/x"];
            all.extend_from_slice(args);
            let e = parse(&all).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn sim_run_needs_a_bar_but_its_subcommands_do_not_inherit_that() {
        assert!(parse(&["sim"]).is_err());
        assert!(parse(&["sim", "--bar", "/tmp/c.bar", "--preset", "ocxo"]).is_ok());
        assert!(parse(&["sim", "truth", "--bar", "/tmp/c.bar", "--json"]).is_ok());
        assert!(parse(&["sim", "--acceleration", "0", "--bar", "/x"]).is_err());
        assert!(parse(&["sim", "--acceleration", "inf", "--bar", "/x"]).is_err());
        assert!(parse(&["sim", "--ttff", "-1", "--bar", "/x"]).is_err());
    }

    #[test]
    fn devices_and_globals() {
        let cli = parse(&["--device", "sim:/tmp/c.bar", "status", "--json"]).unwrap();
        assert_eq!(cli.device, Some(DeviceSpec::SimFile("/tmp/c.bar".into())));
        let cli = parse(&["watch", "--device", "sim", "--count", "2"]).unwrap();
        assert_eq!(cli.device, Some(DeviceSpec::Embedded));
        let e = parse(&["status", "--device", "usb:1"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("pci:0000:01:00.0"), "{e}");
        assert!(parse(&["watch", "--count", "0"]).is_err());
        assert!(parse(&["watch", "--interval", "0s"]).is_err());
        assert!(parse(&["--log-level", "info", "list"]).is_ok());
        assert!(parse(&["--log-level", "[[[", "list"]).is_err());
    }

    #[test]
    fn dates_are_checked_against_the_calendar() {
        assert!(parse_date("2024-02-29").is_ok());
        assert!(parse_date("2025-02-29").is_err());
        assert!(parse_date("2025-13-01").is_err());
        assert!(parse_date("2025-00-10").is_err());
        assert!(parse_date("2025-1-01").is_err());
        assert!(parse_date("+025-01-01").is_err());
    }
}
