//! Adapters facing servers that answer junk: no panics, sensible errors.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Outcomes, bounded, hex_token, push, wait_until};
use http::{Response, Uri};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outbound::{
    Adapter, ApnsAdapter, ApnsConfig, BreakerState, Bulkhead, BulkheadConfig, FcmAdapter,
    FcmConfig, Outcome, SendError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn endpoint(addr: SocketAddr) -> Uri {
    format!("http://{addr}").parse().unwrap()
}

fn apns(addr: SocketAddr) -> ApnsAdapter {
    ApnsAdapter::new(ApnsConfig {
        endpoint: endpoint(addr),
        topic: "t".into(),
        bearer_token: None,
        connections: 1,
    })
    .unwrap()
}

fn fcm(addr: SocketAddr) -> FcmAdapter {
    FcmAdapter::new(FcmConfig {
        endpoint: endpoint(addr),
        project_id: "p".into(),
        bearer_token: Some("t".into()),
        connections: 1,
    })
    .unwrap()
}

/// A TCP server writing `junk` to every connection, then closing it.
async fn junk_server(junk: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(50), tcp.read(&mut buf)).await;
                let _ = tcp.write_all(junk).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// An HTTP/2 server answering every request with `status` and `body`.
async fn h2_server(status: u16, body: Bytes) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = Response::new(Full::new(body));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn is_transient<T: std::fmt::Debug>(r: &Result<T, SendError>) -> bool {
    matches!(r, Err(SendError::Transient(_)))
}

#[tokio::test]
async fn junk_bytes_are_transient() {
    bounded(async {
        for junk in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..],
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\xff\xfe\xfd garbage frames \xff\xff\xff\xff",
            b"",
        ] {
            let addr = junk_server(junk).await;
            let r = apns(addr).send(&push(1, &hex_token(1))).await;
            assert!(is_transient(&r), "{r:?}");
            let r = fcm(addr).send(&push(1, "tok")).await;
            assert!(is_transient(&r), "{r:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn nothing_listening_is_transient() {
    bounded(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = apns(addr).send(&push(1, &hex_token(1))).await;
        assert!(is_transient(&r), "{r:?}");
    })
    .await;
}

#[tokio::test]
async fn garbage_bodies_are_classified_by_status() {
    bounded(async {
        let huge = Bytes::from(vec![b'x'; 1 << 20]);
        let addr = h2_server(500, huge.clone()).await;
        assert_eq!(
            apns(addr).send(&push(1, &hex_token(1))).await,
            Err(SendError::Transient("HTTP 500".into()))
        );
        assert_eq!(
            fcm(addr).send(&push(1, "tok")).await,
            Err(SendError::Transient("HTTP 500".into()))
        );
        let addr = h2_server(200, huge).await;
        assert_eq!(apns(addr).send(&push(1, &hex_token(1))).await, Ok(()));
        assert_eq!(fcm(addr).send(&push(1, "tok")).await, Ok(()));
        let addr = h2_server(400, Bytes::from_static(b"{\"reason\": 17, ")).await;
        assert_eq!(
            apns(addr).send(&push(1, &hex_token(1))).await,
            Err(SendError::Rejected("HTTP 400".into()))
        );
        assert_eq!(
            fcm(addr).send(&push(1, "tok")).await,
            Err(SendError::Rejected("HTTP 400".into()))
        );
        let addr = h2_server(410, Bytes::from_static(b"\xff\xfe")).await;
        assert_eq!(
            apns(addr).send(&push(1, &hex_token(1))).await,
            Err(SendError::Unregistered)
        );
        let addr = h2_server(302, Bytes::new()).await;
        assert!(is_transient(
            &apns(addr).send(&push(1, &hex_token(1))).await
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_in_front_of_junk_opens_its_breaker() {
    bounded(async {
        let addr = junk_server(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        let out = Outcomes::default();
        let b = Bulkhead::start(
            apns(addr),
            BulkheadConfig {
                queue_capacity: 100,
                concurrency: 4,
                timeout: Duration::from_secs(5),
                failure_threshold: 3,
                open_for: Duration::from_secs(3600),
            },
            out.sink(),
        );
        let mut accepted = 0;
        for i in 0..50 {
            if b.try_submit(push(i, &hex_token(i))).is_ok() {
                accepted += 1;
            }
        }
        wait_until("outcomes", Duration::from_secs(30), || {
            out.total() == accepted
        })
        .await;
        assert_eq!(b.stats().breaker, BreakerState::Open);
        assert_eq!(out.count(|o| *o == Outcome::Delivered), 0);
        assert!(out.count(|o| matches!(o, Outcome::Failed(SendError::Transient(_)))) >= 3);
        b.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
