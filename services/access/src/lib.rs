//! API access for the timecard services: who may change state.
//!
//! Every state-changing call — a counter add or clear, a published event, a
//! read or delivery mark, a device registration, reading the capture stream
//! (it holds request bodies) — must carry `Authorization: Bearer TOKEN` (HTTP
//! header or gRPC metadata), where TOKEN is one of the lines of the service's
//! `--api-token-file`. A service given neither a token file nor `--insecure`
//! refuses to start: accepting anyone has to be said out loud.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time.
//! Nothing here logs, prints or `Debug`-formats a token: [`Access`] and
//! [`ClientToken`] print `<redacted>`.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest as _, Sha256};

/// The environment variable naming the token file (servers and clients).
pub const TOKEN_FILE_ENV: &str = "TIMECARD_API_TOKEN_FILE";
/// Shortest token accepted in a token file, in characters.
pub const MIN_TOKEN_LEN: usize = 16;
/// Largest token file read, in bytes.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Why a token file or a policy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Neither `--api-token-file` nor `--insecure`.
    #[error(
        "{service}: state-changing calls need a token: give --api-token-file PATH (one token per line, \
         at least {MIN_TOKEN_LEN} characters; e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > PATH; chmod 600 PATH`) \
         or --insecure to accept calls from anyone who can reach the listeners"
    )]
    NoPolicy {
        /// The service refusing to start.
        service: String,
    },
    /// The token file cannot be read.
    #[error("API token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file is readable or writable by every user.
    #[error(
        "API token file {path} is accessible to every user (mode {mode:o}): `chmod o-rwx {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file is larger than any token file should be.
    #[error("API token file {path} is larger than {MAX_TOKEN_FILE} bytes: is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A token is too short or not printable ASCII.
    #[error(
        "API token file {path} line {line}: a token must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces"
    )]
    BadToken {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A token file this process would have created exists already, owned
    /// by another user.
    #[error(
        "API token file {path} belongs to user {owner}, not to this process's user: remove it or give another --api-token-file"
    )]
    NotOwned {
        /// The file.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
    },
    /// The token file holds no token.
    #[error("API token file {path} holds no token (only blank or # lines)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The flags of a service: `--api-token-file PATH` or `--insecure`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessArgs {
    /// File of API tokens, one per line (blank and `#` lines ignored; at
    /// least 16 characters each; not readable by other users). Every
    /// state-changing call must send one as `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "PATH", env = TOKEN_FILE_ENV, conflicts_with = "insecure")]
    pub api_token_file: Option<PathBuf>,
    /// Accept state-changing calls without a token. Only for tests and
    /// single-user machines: anyone who can reach the listeners can then
    /// change state.
    #[arg(long)]
    pub insecure: bool,
}

impl AccessArgs {
    /// Arguments that accept anyone (tests, benchmarks).
    #[must_use]
    pub fn insecure() -> Self {
        Self {
            api_token_file: None,
            insecure: true,
        }
    }

    /// Arguments that require a token from `path`.
    #[must_use]
    pub fn token_file(path: impl Into<PathBuf>) -> Self {
        Self {
            api_token_file: Some(path.into()),
            insecure: false,
        }
    }

    /// The policy these arguments describe, for `service` (named in errors).
    ///
    /// # Errors
    /// Neither flag given, or the token file is unreadable, exposed or holds
    /// no valid token.
    pub fn access(&self, service: &str) -> Result<Access, AccessError> {
        match (&self.api_token_file, self.insecure) {
            (Some(path), _) => Access::from_file(path),
            (None, true) => Ok(Access::open()),
            (None, false) => Err(AccessError::NoPolicy {
                service: service.to_owned(),
            }),
        }
    }
}

/// Who may call state-changing APIs: anyone ([`Access::open`]) or holders
/// of one of a set of tokens. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    /// SHA-256 of each accepted token; `None` accepts anyone.
    digests: Option<Vec<[u8; 32]>>,
    refused: AtomicU64,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.digests {
            None => f.write_str("Access(open)"),
            Some(d) => write!(f, "Access({} tokens <redacted>)", d.len()),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header or metadata.
    #[error(
        "this call changes state and needs `Authorization: Bearer TOKEN` (the service's --api-token-file)"
    )]
    Missing,
    /// An `Authorization` that is not `Bearer TOKEN`.
    #[error("the Authorization header must be `Bearer TOKEN`")]
    Malformed,
    /// A token that is not one of the service's.
    #[error("the API token is not accepted by this service")]
    Wrong,
}

impl Access {
    /// Accepts every call (`--insecure`).
    #[must_use]
    pub fn open() -> Self {
        Self::with(None)
    }

    fn with(digests: Option<Vec<[u8; 32]>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                digests,
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Requires one of the tokens in `path` (see [`AccessArgs`]).
    ///
    /// # Errors
    /// See [`AccessArgs::access`].
    pub fn from_file(path: &Path) -> Result<Self, AccessError> {
        let tokens = read_token_file(path)?;
        Ok(Self::with(Some(tokens.iter().map(|t| digest(t)).collect())))
    }

    /// Whether every call is accepted.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.inner.digests.is_none()
    }

    /// Calls refused so far.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Checks an `Authorization` value (`None` when absent).
    ///
    /// # Errors
    /// The [`Refusal`]; it is also counted.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(digests) = &self.inner.digests else {
            return Ok(());
        };
        let verdict = match authorization {
            None => Err(Refusal::Missing),
            // The scheme is case-insensitive (RFC 9110 §11.1).
            Some(value) => match value
                .split_at_checked(7)
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            {
                None => Err(Refusal::Malformed),
                Some((_, token)) => {
                    let presented = digest(token.trim_ascii());
                    // Every digest is compared, in constant time each.
                    let matched = digests
                        .iter()
                        .fold(false, |any, d| any | constant_time_eq(d, &presented));
                    if matched { Ok(()) } else { Err(Refusal::Wrong) }
                }
            },
        };
        if let Err(refusal) = verdict {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%refusal, "refused a state-changing call");
        }
        verdict
    }

    /// Checks an HTTP request's headers.
    ///
    /// # Errors
    /// See [`Access::check`].
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    }

    /// Checks a gRPC request's metadata; the error is the `Status` to answer.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` with the reason.
    pub fn check_grpc<T>(&self, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let value = request
            .metadata()
            .get("authorization")
            .map(tonic::metadata::MetadataValue::as_bytes);
        self.check(value)
            .map_err(|r| tonic::Status::unauthenticated(r.to_string()))
    }

    /// `router` with every route requiring a token (a `route_layer`: paths
    /// the router does not have still answer 404, not 401).
    pub fn guard<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        if self.is_open() {
            return router;
        }
        let access = self.clone();
        router.route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let access = access.clone();
                async move {
                    match access.check_headers(request.headers()) {
                        Ok(()) => next.run(request).await,
                        Err(refusal) => refusal_response(refusal),
                    }
                }
            },
        ))
    }
}

/// The HTTP answer to a refused call: 401, `WWW-Authenticate: Bearer`, and
/// the services' JSON error shape.
fn refusal_response(refusal: Refusal) -> Response {
    let challenge = match refusal {
        Refusal::Missing => r#"Bearer realm="timecard""#,
        Refusal::Malformed => r#"Bearer realm="timecard", error="invalid_request""#,
        Refusal::Wrong => r#"Bearer realm="timecard", error="invalid_token""#,
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, challenge),
            (header::CONTENT_TYPE, "application/json"),
        ],
        serde_json::json!({"error": refusal.to_string(), "code": "unauthenticated"}).to_string(),
    )
        .into_response()
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Reads the tokens of a token file, checking its permissions and lines.
fn read_token_file(path: &Path) -> Result<Vec<Vec<u8>>, AccessError> {
    let read = |source| AccessError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        return Err(AccessError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_TOKEN_FILE {
        return Err(AccessError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read(path).map_err(read)?;
    let mut tokens = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if line.len() < MIN_TOKEN_LEN || !line.iter().all(u8::is_ascii_graphic) {
            return Err(AccessError::BadToken {
                path: path.to_owned(),
                line: i + 1,
            });
        }
        tokens.push(line.to_vec());
    }
    if tokens.is_empty() {
        return Err(AccessError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(tokens)
}

/// Creates a token file holding one fresh random token (32 bytes from the
/// kernel's random source, hex), readable by its owner only, unless `path`
/// exists already; either way returns the file's policy. For all-in-one
/// commands (`timecard up`) that hand the file to their clients.
///
/// # Errors
/// The file cannot be created or an existing one is not a valid token file.
pub fn ensure_token_file(path: &Path) -> Result<Access, AccessError> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| AccessError::Read {
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(io)?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => writeln!(f, "{hex}").map_err(io)?,
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    // In a shared directory such as /tmp another user could have planted
    // the file with a token they know.
    use std::os::unix::fs::MetadataExt as _;
    let owner = std::fs::symlink_metadata(path).map_err(io)?.uid();
    let me = std::fs::metadata("/proc/self").map_err(io)?.uid();
    if owner != me {
        return Err(AccessError::NotOwned {
            path: path.to_owned(),
            owner,
        });
    }
    Access::from_file(path)
}

/// The flag of a client command: `--api-token-file PATH`, whose first token
/// is sent.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// File whose first token is sent as `Authorization: Bearer TOKEN` on
    /// state-changing calls (the service's own token file works).
    #[arg(long, value_name = "PATH", env = TOKEN_FILE_ENV)]
    pub api_token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The token to send, if a file was given.
    ///
    /// # Errors
    /// The file is unreadable, exposed or holds no valid token.
    pub fn token(&self) -> Result<Option<ClientToken>, AccessError> {
        self.api_token_file
            .as_deref()
            .map(ClientToken::from_file)
            .transpose()
    }

    /// Adds the token (if a file was given) to a gRPC request.
    ///
    /// # Errors
    /// See [`ClientArgs::token`].
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<(), AccessError> {
        if let Some(token) = self.token()? {
            token.authorize(request);
        }
        Ok(())
    }
}

/// A token a client sends. `Debug` does not show it.
#[derive(Clone)]
pub struct ClientToken {
    header: HeaderValue,
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken(<redacted>)")
    }
}

impl ClientToken {
    /// The first token of a token file.
    ///
    /// # Errors
    /// See [`ClientArgs::token`].
    pub fn from_file(path: &Path) -> Result<Self, AccessError> {
        let first = read_token_file(path)?.swap_remove(0);
        Self::new(&first).ok_or(AccessError::BadToken {
            path: path.to_owned(),
            line: 1,
        })
    }

    /// A token given as bytes; `None` unless it is printable ASCII.
    #[must_use]
    pub fn new(token: &[u8]) -> Option<Self> {
        if !token.iter().all(u8::is_ascii_graphic) || token.is_empty() {
            return None;
        }
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(token);
        let mut header = HeaderValue::from_bytes(&value).ok()?;
        header.set_sensitive(true);
        Some(Self { header })
    }

    /// The `Authorization` header value (marked sensitive).
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// Adds the token to a gRPC request's metadata.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(self.header.as_bytes()) {
            request.metadata_mut().insert("authorization", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt as _;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    fn token_file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn no_flag_refuses_to_start_and_names_both_ways_out() {
        let e = AccessArgs::default().access("counter").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("counter:"), "{msg}");
        assert!(
            msg.contains("--api-token-file") && msg.contains("--insecure"),
            "{msg}"
        );
        assert!(AccessArgs::insecure().access("x").unwrap().is_open());
    }

    #[test]
    fn token_files_are_checked_line_by_line() {
        let f = token_file(
            &format!("# comment\n\n  {GOOD}  \nsecond-token-0123456789\n"),
            0o600,
        );
        let access = Access::from_file(f.path()).unwrap();
        assert!(!access.is_open());
        assert!(
            access
                .check(Some(format!("Bearer {GOOD}").as_bytes()))
                .is_ok()
        );
        assert!(
            access
                .check(Some(b"Bearer second-token-0123456789"))
                .is_ok()
        );
        assert!(
            access
                .check(Some(b"bearer second-token-0123456789"))
                .is_ok()
        );

        let short = token_file(&format!("{GOOD}\nshort\n"), 0o600);
        let e = Access::from_file(short.path()).unwrap_err();
        assert!(matches!(e, AccessError::BadToken { line: 2, .. }), "{e}");

        let spaced = token_file("a token with spaces in it\n", 0o600);
        assert!(matches!(
            Access::from_file(spaced.path()).unwrap_err(),
            AccessError::BadToken { line: 1, .. }
        ));
        let empty = token_file("# nothing\n\n", 0o600);
        assert!(matches!(
            Access::from_file(empty.path()).unwrap_err(),
            AccessError::Empty { .. }
        ));
        let exposed = token_file(GOOD, 0o644);
        let e = Access::from_file(exposed.path()).unwrap_err();
        assert!(e.to_string().contains("chmod o-rwx"), "{e}");
        // Group-readable is fine (systemd credentials, a `timecard` group).
        assert!(Access::from_file(token_file(GOOD, 0o640).path()).is_ok());
        let missing = Access::from_file(Path::new("/nonexistent/token")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/token"),
            "{missing}"
        );
    }

    #[test]
    fn a_generated_token_file_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-token");
        let access = ensure_token_file(&path).unwrap();
        assert!(!access.is_open());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.trim().len(), 64);
        let token = ClientToken::from_file(&path).unwrap();
        assert!(access.check(Some(token.header_value().as_bytes())).is_ok());
        // A second call keeps the token clients already have.
        ensure_token_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        // A file planted by another user is not used (root can plant one).
        let planted = dir.path().join("planted");
        std::fs::write(&planted, GOOD).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
        if std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).is_ok() {
            let e = ensure_token_file(&planted).unwrap_err();
            assert!(
                matches!(e, AccessError::NotOwned { owner: 65534, .. }),
                "{e}"
            );
        }
    }

    #[test]
    fn wrong_missing_and_malformed_are_refused_and_counted() {
        let f = token_file(GOOD, 0o600);
        let access = Access::from_file(f.path()).unwrap();
        assert_eq!(access.check(None), Err(Refusal::Missing));
        assert_eq!(access.check(Some(GOOD.as_bytes())), Err(Refusal::Malformed));
        assert_eq!(
            access.check(Some(b"Bearer 0123456789abcdef0123456789abcdeF")),
            Err(Refusal::Wrong)
        );
        assert_eq!(access.check(Some(b"Bearer ")), Err(Refusal::Wrong));
        assert_eq!(access.refused(), 4);
        assert!(Access::open().check(None).is_ok());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let f = token_file(GOOD, 0o600);
        let access = Access::from_file(f.path()).unwrap();
        let client = ClientToken::from_file(f.path()).unwrap();
        for text in [format!("{access:?}"), format!("{client:?}")] {
            assert!(!text.contains(GOOD) && text.contains("redacted"), "{text}");
        }
        assert!(client.header_value().is_sensitive());
        assert_eq!(
            client.header_value().as_bytes(),
            format!("Bearer {GOOD}").as_bytes()
        );
    }

    #[test]
    fn grpc_metadata_is_checked() {
        let f = token_file(GOOD, 0o600);
        let access = Access::from_file(f.path()).unwrap();
        let status = access.check_grpc(&tonic::Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(());
        ClientToken::from_file(f.path())
            .unwrap()
            .authorize(&mut request);
        assert!(access.check_grpc(&request).is_ok());
    }

    #[tokio::test]
    async fn guarded_routes_answer_401_with_a_bearer_challenge() {
        let f = token_file(GOOD, 0o600);
        let access = Access::from_file(f.path()).unwrap();
        let app: Router = access.guard(Router::new().route("/w", post(|| async { "done" })));
        let call = |auth: Option<&str>, path: &str| {
            let mut b = http::Request::post(path);
            if let Some(a) = auth {
                b = b.header(header::AUTHORIZATION, a);
            }
            app.clone().oneshot(b.body(Body::empty()).unwrap())
        };
        let refused = call(None, "/w").await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(
            refused.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let wrong = call(Some("Bearer not-the-token-at-all"), "/w")
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let ok = call(Some(&format!("Bearer {GOOD}")), "/w").await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        // Unknown paths stay 404 (the guard is a route layer).
        assert_eq!(
            call(None, "/nope").await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }
}
