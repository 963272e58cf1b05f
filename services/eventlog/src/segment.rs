//! The embedded event log: append-only segment files on local disk.
//!
//! Records get consecutive sequence numbers from 1. Each segment file
//! (`<first seq, 20 digits>.seg`) holds the records appended during one time
//! bucket ([`SegmentOptions::span`], wall clock) or up to
//! [`SegmentOptions::max_bytes`]; whole segments are dropped by
//! [`SegmentLog::trim_before`] once their records are no longer needed, so
//! no file grows without bound.
//!
//! Framing: `len u32 | crc32 u32 | seq u64 | envelope` (little endian; `len`
//! and the CRC cover `seq | envelope`).
//!
//! Appends go to one writer thread that gathers every request waiting into
//! one `write` (group commit) and, with [`SegmentOptions::fsync`], one
//! `fdatasync`, before any of them is acknowledged. Written data is in the
//! page cache, so it survives `kill -9` even without fsync; fsync adds power
//! loss. On open, every segment is scanned: a torn record at the end of the
//! last segment (a crash mid-write) is cut off with a warning; a bad record
//! anywhere else is corruption and opening fails rather than silently
//! dropping data.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::envelope::Envelope;
use crate::log::{LogError, Stored};

const HEADER: usize = 8;
/// Largest framed record body (seq + envelope), bytes.
const MAX_BODY: usize = 8 + 1024 * 1024;
/// One sparse index entry per this many records.
const INDEX_EVERY: u64 = 1024;
/// Requests gathered into one write at most.
const MAX_GROUP: usize = 4096;

/// How the embedded log is written.
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    /// `fdatasync` each group commit before acknowledging (power-loss safe).
    pub fsync: bool,
    /// Time bucket of a segment.
    pub span: Duration,
    /// Size at which a segment is closed early.
    pub max_bytes: u64,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            span: Duration::from_secs(60),
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// `(seq, byte offset)` every [`INDEX_EVERY`] records, first included.
    index: Vec<(u64, u64)>,
    bucket: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Shared {
    segments: Vec<Segment>,
    /// Next sequence number; everything below is fully written.
    end: u64,
}

struct Request {
    envelopes: Vec<Envelope>,
    done: oneshot::Sender<Result<u64, LogError>>,
}

/// The embedded log (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct SegmentLog {
    dir: PathBuf,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<Request>,
    appended: Arc<tokio::sync::Notify>,
    fsync: bool,
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentLog({})", self.dir.display())
    }
}

fn io(path: &Path, e: std::io::Error) -> LogError {
    LogError::Io(format!("{}: {e}", path.display()))
}

fn bucket_now(span: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() / span.as_secs().max(1)
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, recovering as described
    /// in the module docs, and starts its writer thread.
    pub fn open(dir: impl AsRef<Path>, options: SegmentOptions) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock = lock_dir(&dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let path = entry.map_err(|e| io(&dir, e))?.path();
            let Some(stem) = path
                .extension()
                .filter(|x| *x == "seg")
                .and_then(|_| path.file_stem())
                .and_then(|s| s.to_str())
            else {
                continue;
            };
            let first = stem.parse::<u64>().map_err(|_| {
                LogError::Corrupt(format!("{}: not a segment name", path.display()))
            })?;
            names.push((first, path));
        }
        names.sort();
        let mut segments = Vec::with_capacity(names.len());
        let mut end = 1;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            if i > 0 && first != end {
                return Err(LogError::Corrupt(format!(
                    "{}: starts at {first}, expected {end} (a segment is missing)",
                    path.display()
                )));
            }
            let last = i + 1 == count;
            let seg = scan(&path, first, last)?;
            end = first + seg.count;
            segments.push(Segment {
                first_seq: first,
                path,
                index: seg.index,
                bucket: 0,
                bytes: seg.bytes,
            });
        }
        let shared = Arc::new(Mutex::new(Shared { segments, end }));
        let (tx, rx) = mpsc::channel(1024);
        let appended = Arc::new(tokio::sync::Notify::new());
        let fsync = options.fsync;
        let writer = Writer {
            dir: dir.clone(),
            options,
            shared: shared.clone(),
            file: None,
            buf: Vec::new(),
            appended: appended.clone(),
            _lock: lock,
            failed: None,
        };
        std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io(&dir, e))?;
        Ok(Self {
            dir,
            shared,
            tx,
            appended,
            fsync,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `envelopes` (consecutive sequence numbers) and returns the
    /// first one, once written (and synced, with `fsync`).
    pub async fn append(&self, envelopes: Vec<Envelope>) -> Result<u64, LogError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request { envelopes, done })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Waits until the log's end passes `seq` or `timeout` elapses.
    pub async fn wait_past(&self, seq: u64, timeout: Duration) {
        let notified = self.appended.notified();
        if self.end() > seq {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// The next sequence number to be assigned.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Up to `max` records from sequence `from` on (fewer at the end).
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Stored>, LogError> {
        let (segs, end) = {
            let s = self.lock();
            let i = s
                .segments
                .partition_point(|g| g.first_seq <= from)
                .saturating_sub(1);
            (s.segments[i.min(s.segments.len())..].to_vec(), s.end)
        };
        let mut out = Vec::new();
        let mut next = from.max(segs.first().map_or(1, |s| s.first_seq));
        for seg in segs {
            if out.len() >= max || next >= end {
                break;
            }
            let start = seg
                .index
                .iter()
                .rev()
                .find(|(s, _)| *s <= next)
                .map_or(0, |(_, o)| *o);
            let mut f = File::open(&seg.path).map_err(|e| io(&seg.path, e))?;
            f.seek(SeekFrom::Start(start))
                .map_err(|e| io(&seg.path, e))?;
            let mut r = std::io::BufReader::with_capacity(256 * 1024, f);
            while out.len() < max && next < end {
                match read_record(&mut r) {
                    Ok(Some((seq, env))) => {
                        if seq >= next {
                            next = seq + 1;
                            out.push(Stored { seq, envelope: env });
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(LogError::Corrupt(format!("{}: {e}", seg.path.display())));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes every segment all of whose records are below `seq` (the
    /// last segment always stays); returns how many were deleted.
    pub fn trim_before(&self, seq: u64) -> Result<usize, LogError> {
        let doomed: Vec<PathBuf> = {
            let mut s = self.lock();
            let keep_from = s
                .segments
                .iter()
                .skip(1)
                .take_while(|g| g.first_seq <= seq)
                .count();
            s.segments.drain(..keep_from).map(|g| g.path).collect()
        };
        for path in &doomed {
            fs::remove_file(path).map_err(|e| io(path, e))?;
        }
        if self.fsync && !doomed.is_empty() {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&self.dir, e))?;
        }
        Ok(doomed.len())
    }

    /// Number of segment files.
    #[must_use]
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}

/// Takes the directory's `LOCK` file (`flock`), waiting up to 2 s for a
/// previous owner in this process or a dying one to let go.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: `f` is an open file descriptor for the duration of the call.
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r == 0 {
            return Ok(f);
        }
        if std::time::Instant::now() > deadline {
            return Err(LogError::Io(format!(
                "{}: the event log is in use by another process (or another log in this one)",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one framed record; `Ok(None)` at a clean end of file.
fn read_record(r: &mut impl Read) -> Result<Option<(u64, Envelope)>, String> {
    let mut head = [0u8; HEADER];
    match read_full(r, &mut head) {
        Ok(0) => return Ok(None),
        Ok(n) if n < HEADER => return Err("torn record header".into()),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap_or_default());
    if !(8..=MAX_BODY).contains(&len) {
        return Err(format!("bad record length {len}"));
    }
    let mut body = vec![0u8; len];
    match read_full(r, &mut body) {
        Ok(n) if n == len => {}
        Ok(_) => return Err("torn record body".into()),
        Err(e) => return Err(e.to_string()),
    }
    if crc32fast::hash(&body) != crc {
        return Err("record CRC mismatch".into());
    }
    let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
    let env = Envelope::decode(&body[8..]).map_err(|e| e.to_string())?;
    Ok(Some((seq, env)))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What [`scan`] learns about a segment.
struct Scanned {
    /// Sparse `(seq, offset)` index.
    index: Vec<(u64, u64)>,
    /// Records.
    count: u64,
    /// Valid length, bytes.
    bytes: u64,
}

/// Whether the bad record at `offset` is a torn write: it runs past the end
/// of the file (header or declared body incomplete). Anything else — a CRC
/// mismatch with bytes after it, an unknown version — is corruption.
fn torn_at(path: &Path, offset: u64, total: u64) -> Result<bool, LogError> {
    let remaining = total - offset;
    if remaining < HEADER as u64 {
        return Ok(true);
    }
    let mut f = File::open(path).map_err(|e| io(path, e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| io(path, e))?;
    let mut head = [0u8; 4];
    f.read_exact(&mut head).map_err(|e| io(path, e))?;
    let len = u64::from(u32::from_le_bytes(head));
    Ok(len > remaining - HEADER as u64)
}

/// Scans a segment: its sparse index, record count and valid length. In the
/// last segment a bad tail is truncated; elsewhere it is an error.
fn scan(path: &Path, first: u64, last: bool) -> Result<Scanned, LogError> {
    let f = File::open(path).map_err(|e| io(path, e))?;
    let total = f.metadata().map_err(|e| io(path, e))?.len();
    let mut r = std::io::BufReader::with_capacity(256 * 1024, f);
    let mut index = Vec::new();
    let mut offset = 0u64;
    let mut count = 0u64;
    loop {
        match read_record(&mut r) {
            Ok(Some((seq, env))) => {
                if seq != first + count {
                    return Err(LogError::Corrupt(format!(
                        "{}: record {seq} where {} was expected",
                        path.display(),
                        first + count
                    )));
                }
                if count.is_multiple_of(INDEX_EVERY) {
                    index.push((seq, offset));
                }
                offset += (HEADER + 8 + env.encoded_len()) as u64;
                count += 1;
            }
            Ok(None) => break,
            Err(e) if last && torn_at(path, offset, total)? => {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    dropped_bytes = total - offset,
                    "event log: cutting a torn tail ({e}); it was never acknowledged"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| io(path, e))?;
                f.set_len(offset).map_err(|e| io(path, e))?;
                f.sync_all().map_err(|e| io(path, e))?;
                break;
            }
            Err(e) => {
                return Err(LogError::Corrupt(format!(
                    "{} at byte {offset}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(Scanned {
        index,
        count,
        bytes: offset,
    })
}

struct Writer {
    dir: PathBuf,
    options: SegmentOptions,
    shared: Arc<Mutex<Shared>>,
    file: Option<File>,
    buf: Vec<u8>,
    appended: Arc<tokio::sync::Notify>,
    /// Held while the writer runs: one process per log directory.
    _lock: File,
    /// Set when a failed group could not be cut off.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let result = self.commit(&group);
            self.appended.notify_waiters();
            for (req, r) in group.drain(..).zip(result) {
                let _ = req.done.send(r);
            }
        }
    }

    /// Writes one group; returns each request's first sequence number.
    fn commit(&mut self, group: &[Request]) -> Vec<Result<u64, LogError>> {
        let n: usize = group.iter().map(|r| r.envelopes.len()).sum();
        match self.write_group(group, n as u64) {
            Ok(first) => {
                let mut next = first;
                group
                    .iter()
                    .map(|r| {
                        let s = next;
                        next += r.envelopes.len() as u64;
                        Ok(s)
                    })
                    .collect()
            }
            Err(e) => group.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn write_group(&mut self, group: &[Request], n: u64) -> Result<u64, LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Io(format!(
                "{}: the log stopped accepting appends after a write failure ({why}); restart to recover",
                self.dir.display()
            )));
        }
        let (first, rotate) = {
            let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            let bucket = bucket_now(self.options.span);
            let rotate = match s.segments.last() {
                None => true,
                Some(seg) => {
                    self.file.is_none()
                        || seg.bucket != bucket
                        || seg.bytes >= self.options.max_bytes
                }
            };
            (s.end, rotate)
        };
        if rotate {
            self.open_segment(first)?;
        }
        self.buf.clear();
        let mut seq = first;
        let mut index = Vec::new();
        let (base, seg_start) = {
            let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.segments
                .last()
                .map_or((0, first), |g| (g.bytes, g.first_seq))
        };
        for req in group {
            for env in &req.envelopes {
                if (seq - seg_start).is_multiple_of(INDEX_EVERY) {
                    index.push((seq, base + self.buf.len() as u64));
                }
                let start = self.buf.len();
                self.buf.extend_from_slice(&[0u8; HEADER]);
                self.buf.extend_from_slice(&seq.to_le_bytes());
                env.encode_into(&mut self.buf);
                let body = &self.buf[start + HEADER..];
                let len = body.len() as u32;
                let crc = crc32fast::hash(body);
                self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
                self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
                seq += 1;
            }
        }
        let file = self.file.as_mut().ok_or(LogError::Closed)?;
        let written = file.write_all(&self.buf).and_then(|()| {
            if self.options.fsync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Nothing of this group is acknowledged: cut it off so the next
            // group does not land behind a torn record, and reopen.
            if let Err(t) = file.set_len(base) {
                // The torn group cannot be removed: refuse every later
                // append rather than write behind it.
                self.failed = Some(format!("{e}; then truncating failed: {t}"));
            }
            self.file = None;
            return Err(io(&self.dir, e));
        }
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(seg) = s.segments.last_mut() {
            seg.bytes += self.buf.len() as u64;
            seg.index.extend(index);
        }
        s.end = first + n;
        Ok(first)
    }

    fn open_segment(&mut self, first: u64) -> Result<(), LogError> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = bucket_now(self.options.span);
        if let Some(seg) = s.segments.last_mut() {
            // Only an empty last segment is reused (after a restart the
            // next records start a new segment, so buckets stay bounded).
            if seg.bytes == 0 {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| io(&seg.path, e))?;
                seg.bucket = bucket;
                self.file = Some(f);
                return Ok(());
            }
        }
        let path = self.dir.join(format!("{first:020}.seg"));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        if self.options.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&self.dir, e))?;
        }
        s.segments.push(Segment {
            first_seq: first,
            path,
            index: Vec::new(),
            bucket,
            bytes: 0,
        });
        self.file = Some(f);
        Ok(())
    }
}
