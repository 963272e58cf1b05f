//! The gRPC API and its HTTP/JSON mirror over loopback: the operations,
//! idempotent retries and hedges, and clear errors for bad input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use counter::cli::{ServeArgs, start};
use counter::pb::counter_client::CounterClient;
use counter::pb::{AddCountRequest, ClearCountRequest, GetCountRequest, IdempotencyToken};
use eventlog::TimeSource;
use tonic::Code;

fn args(dir: &std::path::Path) -> ServeArgs {
    let mut args = ServeArgs {
        namespaces: vec!["ev=eventual".into(), "acc=accurate".into()],
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        accept_limit_ms: 300,
        grace_ms: 1000,
        rollup_interval_ms: 20,
        ..counter::cli::ServeArgs::defaults()
    };
    args.common.backend = format!("embedded:{}", dir.display());
    args.common.system_clock_bound_us = 1000;
    args.access = access::AccessArgs::insecure();
    args
}

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_as(addr, method, path, body, None)
}

/// One HTTP/1.1 request with an `Authorization` value; returns (status, body).
fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn token() -> IdempotencyToken {
    let t =
        eventlog::IdempotencyToken::fresh(TimeSource::system(1_000_000).now().unwrap().latest_ns);
    IdempotencyToken {
        event_time_ns: t.event_time_ns,
        nonce: format!("{:x}", t.nonce),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_operations_retries_and_hedges_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(&args(dir.path())).await.unwrap();
    let mut c = CounterClient::connect(format!("http://{}", run.grpc))
        .await
        .unwrap();
    let add = |ns: &str, delta: i64, t: Option<IdempotencyToken>| AddCountRequest {
        namespace: ns.into(),
        counter: "x".into(),
        delta,
        idempotency_token: t,
    };
    let t = token();
    // A hedged request: two copies in flight at once, plus a late retry.
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (a, b) = tokio::join!(
        c1.add_count(add("acc", 5, Some(t.clone()))),
        c2.add_count(add("acc", 5, Some(t.clone())))
    );
    a.unwrap();
    b.unwrap();
    let r = c
        .add_and_get_count(add("acc", 5, Some(t)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.has_count, r.count, r.duplicate), (true, 5, true));
    let r = c
        .add_and_get_count(add("acc", -2, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.count, 3);
    assert_eq!(r.consistency, "accurate");
    let r = c
        .clear_count(ClearCountRequest {
            namespace: "acc".into(),
            counter: "x".into(),
            idempotency_token: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.count, 0);
    // Eventual: the add shows once rolled up.
    c.add_count(add("ev", 7, None)).await.unwrap();
    let mut seen = 0;
    for _ in 0..100 {
        seen = c
            .get_count(GetCountRequest {
                namespace: "ev".into(),
                counter: "x".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .count;
        if seen == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 7);

    // Bad input → codes and messages.
    let e = c
        .add_count(AddCountRequest {
            namespace: "nope".into(),
            ..add("acc", 1, None)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .add_count(AddCountRequest {
            counter: "bad name".into(),
            ..add("acc", 1, None)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .add_count(add(
            "acc",
            1,
            Some(IdempotencyToken {
                event_time_ns: 1,
                nonce: "zz".into(),
            }),
        ))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("hex"),
        "{e:?}"
    );
    let e = c
        .add_count(add(
            "acc",
            1,
            Some(IdempotencyToken {
                event_time_ns: 1,
                nonce: "ab".into(),
            }),
        ))
        .await
        .unwrap_err();
    assert!(e.message().contains("older than the accept limit"), "{e:?}");
    let e = c
        .add_count(AddCountRequest {
            counter: "y".repeat(100_000),
            ..add("acc", 1, None)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    c.add_and_get_count(AddCountRequest {
        counter: "big".into(),
        ..add("acc", i64::MAX, None)
    })
    .await
    .unwrap();
    let e = c
        .add_count(AddCountRequest {
            counter: "big".into(),
            ..add("acc", 1, None)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_mirror_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(&args(dir.path())).await.unwrap();
    let h = run.http;
    let tok = {
        let t = token();
        format!("{}:{}", t.event_time_ns, t.nonce)
    };
    let body = format!(r#"{{"delta": 4, "idempotency_token": "{tok}"}}"#);
    let r = tokio::task::spawn_blocking(move || {
        let a = http(h, "POST", "/v1/counters/acc/web/add", Some(&body));
        let b = http(h, "POST", "/v1/counters/acc/web/add-and-get", Some(&body));
        let g = http(h, "GET", "/v1/counters/acc/web", None);
        let cl = http(h, "POST", "/v1/counters/acc/web/clear", None);
        let st = http(h, "GET", "/v1/status", None);
        let errors = [
            http(
                h,
                "POST",
                "/v1/counters/nope/web/add",
                Some(r#"{"delta": 1}"#),
            ),
            http(h, "POST", "/v1/counters/acc/web/add", Some("{not json")),
            http(
                h,
                "POST",
                "/v1/counters/acc/web/add",
                Some(r#"{"delta": "one"}"#),
            ),
            http(
                h,
                "POST",
                "/v1/counters/acc/web/add",
                Some(r#"{"delta": 1, "idempotency_token": "garbage"}"#),
            ),
            http(
                h,
                "POST",
                "/v1/counters/acc/web/add",
                Some(&format!(
                    r#"{{"delta": 1, "pad": "{}"}}"#,
                    "x".repeat(100_000)
                )),
            ),
            http(
                h,
                "POST",
                "/v1/counters/acc/web/add",
                Some(r#"{"delta": 99999999999999999999}"#),
            ),
            http(
                h,
                "POST",
                "/v1/counters/acc/web/clear",
                Some(&"x".repeat(100_000)),
            ),
        ];
        (a, b, g, cl, st, errors)
    })
    .await
    .unwrap();
    let (a, b, g, cl, st, errors) = r;
    assert_eq!(a.0, 200, "{a:?}");
    let b: serde_json::Value = serde_json::from_str(&b.1).unwrap();
    assert_eq!(
        (b["count"].as_i64(), b["duplicate"].as_bool()),
        (Some(4), Some(true)),
        "{b}"
    );
    assert!(g.1.contains(r#""count":4"#), "{g:?}");
    assert!(cl.1.contains(r#""count":0"#), "{cl:?}");
    assert!(
        st.1.contains("ASSUMED") && st.1.contains("\"late\":0"),
        "{st:?}"
    );
    let want = [
        (404, "unknown namespace"),
        (400, ""),
        (400, "delta"),
        (400, "EVENT_TIME_NS:NONCE"),
        (413, ""),
        (400, ""),
        (413, ""),
    ];
    for ((code, body), (wcode, wtext)) in errors.iter().zip(want) {
        assert_eq!(*code, wcode, "{body}");
        assert!(
            body.contains("\"error\"") && body.contains(wtext),
            "{code} {body}"
        );
    }
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_need_the_api_token() {
    let dir = tempfile::tempdir().unwrap();
    // Neither a token file nor --insecure: the service does not start.
    let mut open = args(&dir.path().join("refused"));
    open.access = access::AccessArgs::default();
    let e = start(&open).await.err().expect("started without a policy");
    assert!(
        format!("{e:#}").contains("--api-token-file") && format!("{e:#}").contains("--insecure"),
        "{e:#}"
    );

    let token_path = dir.path().join("api-token");
    access::ensure_token_file(&token_path).unwrap();
    let secret = std::fs::read_to_string(&token_path).unwrap();
    let bearer = format!("Bearer {}", secret.trim());
    let mut a = args(&dir.path().join("data"));
    a.access = access::AccessArgs::token_file(&token_path);
    a.capture.capture = true;
    let run = start(&a).await.unwrap();
    let h = run.http;

    // HTTP: every write and the capture refuse a missing, wrong or
    // malformed token with 401 and a Bearer challenge.
    let writes = [
        ("/v1/counters/acc/x/add", r#"{"delta": 1}"#),
        ("/v1/counters/acc/x/add-and-get", r#"{"delta": 1}"#),
        ("/v1/counters/acc/x/clear", "{}"),
    ];
    for (path, body) in writes {
        for auth in [
            None,
            Some("Bearer not-the-token-0123456789"),
            Some(secret.trim()),
        ] {
            let (s, answer) = http_as(h, "POST", path, Some(body), auth);
            assert_eq!(s, 401, "POST {path} with {auth:?}: {answer}");
            assert!(answer.contains("unauthenticated"), "{answer}");
        }
    }
    assert_eq!(http(h, "GET", "/v1/capture", None).0, 401);
    // Reads stay open; nothing refused was counted.
    let (s, answer) = http(h, "GET", "/v1/counters/acc/x", None);
    assert_eq!(s, 200, "{answer}");
    assert!(answer.contains(r#""count":0"#), "{answer}");
    // With the token: accepted.
    let (s, answer) = http_as(
        h,
        "POST",
        "/v1/counters/acc/x/add-and-get",
        Some(r#"{"delta": 5}"#),
        Some(&bearer),
    );
    assert_eq!(s, 200, "{answer}");
    assert!(answer.contains(r#""count":5"#), "{answer}");
    assert_eq!(
        http_as(h, "GET", "/v1/capture?from=1", None, Some(&bearer)).0,
        200
    );
    // The capture kept the read and the accepted add, none of the refused
    // calls (they would be replayed with the replayer's token).
    let (_, stats) = http(h, "GET", "/v1/capture/stats", None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["captured"], 2, "{stats}");
    assert_eq!(stats["skipped"], 9, "{stats}");

    // gRPC: AddCount, AddAndGetCount and ClearCount answer UNAUTHENTICATED.
    let mut c = CounterClient::connect(format!("http://{}", run.grpc))
        .await
        .unwrap();
    let add = || AddCountRequest {
        namespace: "acc".into(),
        counter: "x".into(),
        delta: 1,
        idempotency_token: None,
    };
    let clear = || ClearCountRequest {
        namespace: "acc".into(),
        counter: "x".into(),
        idempotency_token: None,
    };
    let refused = [
        c.add_count(add()).await.unwrap_err(),
        c.add_and_get_count(add()).await.unwrap_err(),
        c.clear_count(clear()).await.unwrap_err(),
    ];
    for status in refused {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let get = c
        .get_count(GetCountRequest {
            namespace: "acc".into(),
            counter: "x".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(get.count, 5);
    let client_token = access::ClientToken::from_file(&token_path).unwrap();
    let mut request = tonic::Request::new(add());
    client_token.authorize(&mut request);
    assert_eq!(
        c.add_and_get_count(request)
            .await
            .unwrap()
            .into_inner()
            .count,
        6
    );
    run.stop();
}
