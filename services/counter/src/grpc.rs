//! The gRPC API: service `timecard.counter.v1.Counter` (`proto/counter.proto`).
//!
//! Errors map to gRPC codes with [`code_for`]: unknown namespace →
//! `NOT_FOUND`; bad names, tokens and out-of-window tokens →
//! `INVALID_ARGUMENT`; overflow → `OUT_OF_RANGE`; backend trouble →
//! `UNAVAILABLE` (safe to retry with the same token). Requests above
//! [`MAX_MESSAGE`] bytes are refused by tonic with `OUT_OF_RANGE`.

use std::future::Future;

use access::Access;
use eventlog::IdempotencyToken;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use crate::pb::counter_server::{Counter, CounterServer};
use crate::pb::{AddCountRequest, ClearCountRequest, CountReply, GetCountRequest};
use crate::service::{CounterError, CounterService, Reply};

/// Largest request accepted, bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// The gRPC code for a service error.
#[must_use]
pub fn code_for(e: &CounterError) -> Code {
    match e {
        CounterError::UnknownNamespace(..) => Code::NotFound,
        CounterError::BadName { .. }
        | CounterError::BadToken(_)
        | CounterError::TokenOutOfWindow(_) => Code::InvalidArgument,
        CounterError::Overflow { .. } | CounterError::OutOfRange(_) => Code::OutOfRange,
        CounterError::Unavailable(_) => Code::Unavailable,
    }
}

fn status(e: &CounterError) -> Status {
    Status::new(code_for(e), e.to_string())
}

fn token(t: Option<crate::pb::IdempotencyToken>) -> Result<Option<IdempotencyToken>, Status> {
    t.map(|t| {
        IdempotencyToken::parse_nonce(&t.nonce)
            .map(|nonce| IdempotencyToken {
                event_time_ns: t.event_time_ns,
                nonce,
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))
    })
    .transpose()
}

fn reply(r: Reply) -> Response<CountReply> {
    Response::new(CountReply {
        has_count: r.count.is_some(),
        count: r.count.unwrap_or(0),
        consistency: r.consistency.to_owned(),
        as_of_ns: r.as_of_ns.unwrap_or(0),
        duplicate: r.duplicate,
        token: r.token.unwrap_or_default(),
    })
}

/// The tonic service over a [`CounterService`]; AddCount, AddAndGetCount and
/// ClearCount need a token from the [`Access`].
#[derive(Clone)]
pub struct Grpc {
    service: CounterService,
    access: Access,
}

impl Grpc {
    /// The gRPC face of `service`, guarded by `access`.
    #[must_use]
    pub fn new(service: CounterService, access: Access) -> Self {
        Self { service, access }
    }

    /// The tonic server, with the message size limit.
    #[must_use]
    pub fn into_server(self) -> CounterServer<Self> {
        CounterServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

#[tonic::async_trait]
impl Counter for Grpc {
    async fn add_count(&self, r: Request<AddCountRequest>) -> Result<Response<CountReply>, Status> {
        self.access.check_grpc(&r)?;
        let r = r.into_inner();
        let t = token(r.idempotency_token)?;
        self.service
            .add(&r.namespace, &r.counter, r.delta, t, false)
            .await
            .map(reply)
            .map_err(|e| status(&e))
    }

    async fn add_and_get_count(
        &self,
        r: Request<AddCountRequest>,
    ) -> Result<Response<CountReply>, Status> {
        self.access.check_grpc(&r)?;
        let r = r.into_inner();
        let t = token(r.idempotency_token)?;
        self.service
            .add(&r.namespace, &r.counter, r.delta, t, true)
            .await
            .map(reply)
            .map_err(|e| status(&e))
    }

    async fn get_count(&self, r: Request<GetCountRequest>) -> Result<Response<CountReply>, Status> {
        let r = r.into_inner();
        self.service
            .get(&r.namespace, &r.counter)
            .await
            .map(reply)
            .map_err(|e| status(&e))
    }

    async fn clear_count(
        &self,
        r: Request<ClearCountRequest>,
    ) -> Result<Response<CountReply>, Status> {
        self.access.check_grpc(&r)?;
        let r = r.into_inner();
        let t = token(r.idempotency_token)?;
        self.service
            .clear(&r.namespace, &r.counter, t)
            .await
            .map(reply)
            .map_err(|e| status(&e))
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    svc: CounterService,
    access: Access,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(Grpc::new(svc, access).into_server(), incoming, shutdown)
        .await
}
