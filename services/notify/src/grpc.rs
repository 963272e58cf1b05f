//! The gRPC API: service `timecard.notify.v1.Notify` (`proto/notify.proto`).
//!
//! `Publish` answers per event (an accepted event or an error string with
//! its kind), so one bad event does not fail a batch. Request-level errors
//! map to codes with [`code_for`]: invalid input → `INVALID_ARGUMENT`,
//! overload → `RESOURCE_EXHAUSTED`, unknown notification → `NOT_FOUND`,
//! backend trouble → `UNAVAILABLE`. Messages above [`MAX_MESSAGE`] bytes and
//! batches above [`MAX_EVENTS`] events are refused.

use std::future::Future;
use std::sync::Arc;

use access::Access;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use crate::pb::notify_server::{Notify, NotifyServer};
use crate::pb::{self, publish_result};
use crate::registry::Registration;
use crate::service::{IncomingEvent, NotifyError, NotifyService};
use crate::store::Change;

/// Largest request, bytes.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Most events in one publish.
pub const MAX_EVENTS: usize = 1_000;

/// The gRPC code for a service error.
#[must_use]
pub fn code_for(e: &NotifyError) -> Code {
    match e {
        NotifyError::Invalid(_)
        | NotifyError::BadKey(_)
        | NotifyError::Registry(_)
        | NotifyError::ChannelOff(_) => Code::InvalidArgument,
        NotifyError::Overloaded(..) => Code::ResourceExhausted,
        NotifyError::NotFound(_) => Code::NotFound,
        NotifyError::Unavailable(_) => Code::Unavailable,
        NotifyError::Config(_) => Code::FailedPrecondition,
    }
}

/// A short machine-readable kind of a service error.
#[must_use]
pub fn kind_of(e: &NotifyError) -> &'static str {
    match code_for(e) {
        Code::ResourceExhausted => "overloaded",
        Code::Unavailable => "unavailable",
        Code::NotFound => "not-found",
        _ => "invalid",
    }
}

fn status(e: &NotifyError) -> Status {
    Status::new(code_for(e), e.to_string())
}

/// The protobuf form of a member event.
#[must_use]
pub fn change_to_pb(e: &crate::store::MemberEvent) -> pb::Change {
    let mut c = pb::Change {
        seq: e.seq,
        change: e.change_name().into(),
        notification_id: e.notification_id(),
        stored_earliest_ns: e.at.earliest_ns,
        stored_latest_ns: e.at.latest_ns,
        ..Default::default()
    };
    if let Change::Notified {
        kind,
        priority,
        created_ns,
        body,
        ..
    } = &e.change
    {
        c.r#type = kind.clone();
        c.priority = priority.as_str().into();
        c.created_ns = *created_ns;
        c.body = body.clone();
    }
    c
}

/// The tonic service over a [`NotifyService`]; Publish, RegisterDevice and
/// Mark need a token from the [`Access`].
#[derive(Clone, Debug)]
pub struct Grpc {
    service: Arc<NotifyService>,
    access: Access,
}

impl Grpc {
    /// The gRPC face of `service`, guarded by `access`.
    #[must_use]
    pub fn new(service: Arc<NotifyService>, access: Access) -> Self {
        Self { service, access }
    }

    /// The tonic server, with the message size limits.
    #[must_use]
    pub fn into_server(self) -> NotifyServer<Self> {
        NotifyServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl Notify for Grpc {
    async fn publish(
        &self,
        r: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        self.access.check_grpc(&r)?;
        let events = r.into_inner().events;
        if events.len() > MAX_EVENTS {
            return Err(invalid(format!(
                "{} events in one request; send at most {MAX_EVENTS}",
                events.len()
            )));
        }
        let events = events
            .into_iter()
            .map(|e| IncomingEvent {
                kind: e.r#type,
                priority: Some(e.priority),
                member: e.member,
                targets: e.targets,
                body: e.body,
                idempotency_key: Some(e.idempotency_key),
            })
            .collect();
        let results = self
            .service
            .publish(events)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(a) => pb::PublishResult {
                    outcome: Some(publish_result::Outcome::Accepted(pb::Accepted {
                        idempotency_key: a.idempotency_key,
                        priority: a.priority.into(),
                        shard: u32::from(a.shard),
                    })),
                    error_kind: String::new(),
                },
                Err(e) => pb::PublishResult {
                    outcome: Some(publish_result::Outcome::Error(e.to_string())),
                    error_kind: kind_of(&e).into(),
                },
            })
            .collect();
        Ok(Response::new(pb::PublishReply { results }))
    }

    async fn pull(&self, r: Request<pb::PullRequest>) -> Result<Response<pb::PullReply>, Status> {
        let r = r.into_inner();
        let device = match r.device_type.as_str() {
            "" => None,
            t => Some(t.parse().map_err(invalid)?),
        };
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let p = self
            .service
            .pull(&r.member, r.since, limit, device)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::PullReply {
            changes: p.changes.iter().map(change_to_pb).collect(),
            cursor: p.cursor,
            more: p.more,
        }))
    }

    async fn state_at(
        &self,
        r: Request<pb::StateAtRequest>,
    ) -> Result<Response<pb::StateAtReply>, Status> {
        let r = r.into_inner();
        let s = self
            .service
            .state_at(&r.member, r.at_ns)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::StateAtReply {
            at_ns: s.at_ns,
            notifications: s
                .notifications
                .into_iter()
                .map(|n| pb::NotificationState {
                    id: n.id,
                    r#type: n.kind,
                    priority: n.priority.into(),
                    created_ns: n.created_ns,
                    status: serde_json::to_value(n.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    body: n.body,
                })
                .collect(),
            uncertain: s.uncertain,
        }))
    }

    async fn register_device(
        &self,
        r: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceReply>, Status> {
        self.access.check_grpc(&r)?;
        let r = r.into_inner();
        let token = if r.token.is_empty() {
            r.device_id.clone()
        } else {
            r.token
        };
        let registration = Registration {
            id: r.device_id,
            device_type: r.device_type.parse().map_err(invalid)?,
            channel: r.channel.parse().map_err(invalid)?,
            token,
        };
        self.service
            .register_device(&r.member, registration)
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::RegisterDeviceReply {
            ttl_s: self.service.registry().ttl().as_secs() as u32,
        }))
    }

    async fn mark(&self, r: Request<pb::MarkRequest>) -> Result<Response<pb::MarkReply>, Status> {
        self.access.check_grpc(&r)?;
        let r = r.into_inner();
        let seq = self
            .service
            .mark(&r.member, r.notification_id, r.dismiss)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::MarkReply { seq }))
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    svc: Arc<NotifyService>,
    access: Access,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(Grpc::new(svc, access).into_server(), incoming, shutdown)
        .await
}
