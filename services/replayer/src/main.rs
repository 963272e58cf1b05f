//! `timecard-replay`: replays traffic captured by a service (`--capture`)
//! against a candidate deployment and records the differences.
//!
//! ```text
//! timecard-replay run --source http://127.0.0.1:7341 --candidate http://127.0.0.1:7441 --rules counter
//! timecard-replay export --source http://127.0.0.1:7341 --out capture.ndjson
//! timecard-replay run --source capture.ndjson --candidate http://127.0.0.1:7441 --rules counter
//! timecard-replay diffs --outcome mismatch
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use replay::normalize::Rules;
use replay::record::Lineage;
use replayer::client::HttpClient;
use replayer::report::{Summary, rows};
use replayer::run::{ReplayConfig, run};
use replayer::source::Source;
use replayer::table::{DiffRow, DiffTable};
use tokio::io::AsyncWriteExt as _;

/// Replay testing: send captured production traffic to a candidate
/// deployment, compare its answers after normalization, and write the
/// differences to an Apache Iceberg table (readable by pyiceberg, Spark,
/// Trino…).
///
/// Capture first: start the service with `--capture` (counter, notify);
/// the candidate is another instance (new version or config) with its own
/// data directory. Reads are always replayed; writes only when the
/// lineages say the candidate's store is another one and it shares none of
/// the external systems production writes to (memcached, push providers).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    // --log-level (default warn) and --log-format.
    #[command(flatten)]
    log: operate::logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a capture against a candidate and report the differences.
    Run(RunArgs),
    /// Copy a service's capture stream into an NDJSON file (to replay later
    /// or elsewhere).
    Export(ExportArgs),
    /// List the differences recorded in the diff table.
    Diffs(DiffsArgs),
}

#[derive(clap::Args)]
struct DiffsArgs {
    /// Directory of the diff table (as given to `run --warehouse`).
    #[arg(long, default_value = "timecard-data/replay")]
    warehouse: PathBuf,
    /// Only this run.
    #[arg(long)]
    run_id: Option<String>,
    /// Only this outcome (mismatch, candidate_timeout, candidate_error,
    /// candidate_garbage, corrupt_record, schema_drift).
    #[arg(long)]
    outcome: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The capture: a capturing service's base URL (http://HOST:PORT, its
    /// HTTP API) or an NDJSON file from `export`.
    #[arg(long)]
    source: String,
    /// The candidate's base URL.
    #[arg(long)]
    candidate: String,
    /// Normalization rules: `counter` or `notify` (built in), or a JSON
    /// file {"timestamps": [...], "ids": [...], "unordered": [...],
    /// "ignore": [...], "float_tolerance": 1e-9} of path patterns such as
    /// /changes/*/stored. Without: answers must be equal.
    #[arg(long)]
    rules: Option<String>,
    /// Largest request rate to the candidate, per second (0: unlimited).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Keep the original spacing of the requests, sped up by this factor
    /// (2 = twice as fast; 0 = only the rate limit paces).
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
    /// Reads in flight at once (writes always go one at a time, in order).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Deadline of one candidate call, ms.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
    /// Never replay writes, even to an isolated candidate.
    #[arg(long)]
    reads_only: bool,
    /// First capture sequence number to replay.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Keep following the capture stream (until Ctrl-C) instead of stopping
    /// at its end.
    #[arg(long)]
    follow: bool,
    /// Directory of the diff table: SQLite catalog `catalog.db` (catalog
    /// name `timecard`) and the warehouse; table `replay.diffs`.
    #[arg(long, default_value = "timecard-data/replay")]
    warehouse: PathBuf,
    /// Do not write the diff table (report only).
    #[arg(long)]
    no_table: bool,
    /// Run id stored with every row (default: run-<unix time>).
    #[arg(long)]
    run_id: Option<String>,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit with status 3 if anything did not match.
    #[arg(long)]
    fail_on_diff: bool,
    /// Most diff rows written to the table in one run; beyond, rows are
    /// counted only.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: usize,
    /// fbclock shared memory for TrueTime around candidate calls (else the
    /// system clock with --system-clock-bound-us).
    #[arg(long)]
    fbclock: Option<PathBuf>,
    /// Assumed error of the system clock, µs.
    #[arg(long, default_value_t = 10_000)]
    system_clock_bound_us: i64,
    /// API token for reading the source's capture (sent to the source only).
    #[command(flatten)]
    auth: access::ClientArgs,
    /// File whose first token is sent to the candidate (for its writes;
    /// default: no token).
    #[arg(long, value_name = "PATH")]
    candidate_api_token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The capturing service's base URL.
    #[arg(long)]
    source: String,
    /// First sequence number.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// API token for reading the capture.
    #[command(flatten)]
    auth: access::ClientArgs,
}

/// Built-in rules by name, else a file.
fn load_rules(spec: Option<&str>) -> anyhow::Result<Rules> {
    let text = match spec {
        None => return Ok(Rules::default()),
        Some("counter") => include_str!("../rules/counter.json").to_owned(),
        Some("notify") => include_str!("../rules/notify.json").to_owned(),
        Some(path) => std::fs::read_to_string(path).with_context(|| {
            format!("--rules {path}: not `counter`, `notify` or a readable file")
        })?,
    };
    Rules::from_json(&text).with_context(|| format!("--rules {}", spec.unwrap_or_default()))
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://")
}

async fn open_source(
    spec: &str,
    from: u64,
    follow: bool,
    token: Option<access::ClientToken>,
) -> anyhow::Result<Source> {
    if is_url(spec) {
        Ok(Source::http(spec, from, follow, token).await?)
    } else if spec.contains("://") {
        bail!("--source {spec}: only http:// URLs and files are supported");
    } else {
        if follow {
            bail!("--follow needs a service URL as --source, not a file");
        }
        Ok(Source::file(PathBuf::from(spec)).await?)
    }
}

/// The candidate's lineage from its `/v1/lineage`.
async fn candidate_lineage(client: &HttpClient, base: &str) -> Result<Lineage, String> {
    let url = format!("{}/v1/lineage", base.trim_end_matches('/'));
    let answer = client
        .get_ok(&url, Duration::from_secs(5))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_str(&answer.body).map_err(|e| format!("{url}: not a lineage: {e}"))
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

async fn run_replay(args: RunArgs) -> anyhow::Result<bool> {
    if !is_url(&args.candidate) {
        bail!(
            "--candidate {}: give the candidate's base URL, http://HOST:PORT",
            args.candidate
        );
    }
    if !(args.rate == 0.0 || (0.001..=1e9).contains(&args.rate)) {
        bail!(
            "--rate {}: 0 (unlimited) or between 0.001 and 1e9 per second",
            args.rate
        );
    }
    if !(args.speed == 0.0 || (0.001..=1e6).contains(&args.speed)) {
        bail!(
            "--speed {}: 0 (rate only) or between 0.001 and 1e6",
            args.speed
        );
    }
    if args.concurrency == 0 || args.timeout_ms == 0 {
        bail!("--concurrency and --timeout-ms must be positive");
    }
    let rules = load_rules(args.rules.as_deref())?;
    let source_token = args.auth.token()?;
    // Production's token never goes to the candidate unless asked for.
    let candidate_token = args
        .candidate_api_token_file
        .as_deref()
        .map(access::ClientToken::from_file)
        .transpose()?;
    let client = HttpClient::new()
        .marking_replays()
        .with_token(candidate_token);
    let lineage = match candidate_lineage(&client, &args.candidate).await {
        Ok(l) => Some(l),
        Err(e) if args.reads_only => {
            tracing::warn!("candidate lineage unknown ({e}); replaying reads only");
            None
        }
        Err(e) => bail!(
            "cannot read the candidate's lineage ({e}); without it there is no telling whether writes would reach production's store: pass --reads-only to replay reads only"
        ),
    };
    let clock = eventlog::TimeSource::fbclock_or_system(
        args.fbclock.as_deref(),
        args.system_clock_bound_us.saturating_mul(1000),
    );
    let table = if args.no_table {
        None
    } else {
        Some(DiffTable::open(&args.warehouse, "replay", "diffs").await?)
    };
    let mut source = open_source(&args.source, args.from, args.follow, source_token).await?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("run-{}", unix_us() / 1_000_000));
    let candidate_json = lineage.as_ref().and_then(|l| serde_json::to_string(l).ok());
    let mut summary = Summary {
        run_id: run_id.clone(),
        source: args.source.clone(),
        candidate: args.candidate.clone(),
        candidate_lineage: lineage.clone(),
        ..Summary::default()
    };
    let config = ReplayConfig {
        candidate: args.candidate.clone(),
        rules,
        rate: args.rate,
        speed: args.speed,
        concurrency: args.concurrency,
        timeout: Duration::from_millis(args.timeout_ms),
        reads_only: args.reads_only,
        candidate_lineage: lineage,
    };
    let started = Instant::now();
    let table_label = table
        .as_ref()
        .map(|t| format!("{} table {}", t.catalog_uri(), t.identifier()));
    // Rows go to the table as the run goes (every FLUSH_ROWS rows or
    // FLUSH_EVERY), so a long or followed run keeps little in memory and
    // loses little if it dies.
    let (row_tx, row_rx) = tokio::sync::mpsc::unbounded_channel::<DiffRow>();
    let writer = table.map(|t| tokio::spawn(write_rows(t, row_rx)));
    let mut rows_written = 0usize;
    let mut rows_dropped = 0usize;
    let writing = writer.is_some();
    let replay = run(&mut source, config, &client, &clock, |c| {
        summary.add(&c);
        if !writing {
            return;
        }
        for row in rows(&run_id, &c, candidate_json.as_deref(), unix_us()) {
            if rows_written < args.max_rows {
                rows_written += 1;
                let _ = row_tx.send(row);
            } else {
                rows_dropped += 1;
            }
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // The summary and the rows so far are kept whatever ends the run.
    let (interrupted, source_error) = tokio::select! {
        r = replay => (false, r.err()),
        _ = tokio::signal::ctrl_c() => (true, None),
        _ = terminate.recv() => (true, None),
    };
    drop(row_tx);
    summary.seconds = started.elapsed().as_secs_f64();
    let table_error = match writer {
        Some(w) => match w.await {
            Ok(Ok(())) => {
                summary.table = table_label;
                None
            }
            Ok(Err(e)) => Some(anyhow::Error::from(e)),
            Err(e) => Some(anyhow::anyhow!("the table writer failed: {e}")),
        },
        None => None,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    if interrupted {
        eprintln!("interrupted: the results so far are above");
    }
    if rows_dropped > 0 {
        eprintln!("{rows_dropped} diff rows over --max-rows were counted but not written");
    }
    if let Some(e) = source_error {
        return Err(
            anyhow::Error::from(e).context("the capture stream failed (results so far are above)")
        );
    }
    if let Some(e) = table_error {
        return Err(e.context("writing the diff table (the summary above is complete)"));
    }
    Ok(summary.total.problems() == 0)
}

/// Rows appended to the diff table per commit.
const FLUSH_ROWS: usize = 10_000;
/// Longest rows wait before a commit.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Appends rows from `rx` to `table` in commits of up to [`FLUSH_ROWS`], at
/// least every [`FLUSH_EVERY`], and the rest when `rx` closes.
async fn write_rows(
    mut table: DiffTable,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<DiffRow>,
) -> Result<(), replayer::table::TableError> {
    let mut pending = Vec::new();
    let mut last = Instant::now();
    loop {
        let open = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(row)) => {
                pending.push(row);
                true
            }
            Ok(None) => false,
            Err(_) => true,
        };
        let due =
            pending.len() >= FLUSH_ROWS || (!pending.is_empty() && last.elapsed() >= FLUSH_EVERY);
        if due || !open {
            table.append(&pending).await?;
            pending.clear();
            last = Instant::now();
        }
        if !open {
            return Ok(());
        }
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    if !is_url(&args.source) {
        bail!(
            "--source {}: give the capturing service's base URL, http://HOST:PORT",
            args.source
        );
    }
    let mut source = Source::http(&args.source, args.from, false, args.auth.token()?).await?;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &args.out {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut n = 0usize;
    loop {
        let lines = source.next_lines().await?;
        if lines.is_empty() {
            break;
        }
        n += lines.len();
        for l in lines {
            out.write_all(l.as_bytes()).await?;
            out.write_all(b"\n").await?;
        }
    }
    out.flush().await?;
    eprintln!("exported {n} records");
    Ok(())
}

async fn diffs(args: DiffsArgs) -> anyhow::Result<()> {
    if !args.warehouse.join("catalog.db").is_file() {
        bail!(
            "no diff table in {} (no catalog.db; `run --warehouse` writes one)",
            args.warehouse.display()
        );
    }
    let table = DiffTable::open(&args.warehouse, "replay", "diffs").await?;
    let mut rows: Vec<DiffRow> = table
        .read_all()
        .await?
        .into_iter()
        .filter(|r| args.run_id.as_ref().is_none_or(|id| *id == r.run_id))
        .filter(|r| args.outcome.as_ref().is_none_or(|o| *o == r.outcome))
        .collect();
    rows.sort_by(|a, b| (&a.run_id, a.seq).cmp(&(&b.run_id, b.seq)));
    for r in &rows {
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "run_id": r.run_id, "seq": r.seq, "exchange_id": r.exchange_id,
                    "captured_at_us": r.captured_at_us, "endpoint": r.endpoint,
                    "method": r.method, "path": r.path, "outcome": r.outcome,
                    "diff_path": r.diff_path, "diff_kind": r.diff_kind,
                    "original": r.original, "candidate": r.candidate,
                    "original_status": r.original_status, "candidate_status": r.candidate_status,
                    "detail": r.detail,
                })
            );
        } else {
            let what = match (&r.diff_path, &r.detail) {
                (Some(p), _) => format!(
                    "{p} ({}): {} → {}",
                    r.diff_kind.as_deref().unwrap_or("?"),
                    r.original.as_deref().unwrap_or("—"),
                    r.candidate.as_deref().unwrap_or("—")
                ),
                (None, Some(d)) => d.clone(),
                (None, None) => String::new(),
            };
            println!(
                "{} #{} {} {} {}: {what}",
                r.run_id,
                r.seq,
                r.method.as_deref().unwrap_or("-"),
                r.path.as_deref().unwrap_or(&r.endpoint),
                r.outcome
            );
        }
    }
    eprintln!(
        "{} rows in {} ({})",
        rows.len(),
        table.identifier(),
        table.catalog_uri()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.log.init("warn") {
        eprintln!("timecard-replay: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => {
            let fail_on_diff = args.fail_on_diff;
            run_replay(args).await.map(|clean| clean || !fail_on_diff)
        }
        Command::Export(args) => export(args).await.map(|()| true),
        Command::Diffs(args) => diffs(args).await.map(|()| true),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(3),
        Err(e) => {
            eprintln!("timecard-replay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
