//! The edge channel: pushes to devices connected to the push edge
//! (`timecard-push`: WebSocket/SSE, registry, routing). A push names the
//! device and, as its token, the edge node the registry had for it; the
//! message processor hands the frame to that node (in this process, or over
//! NATS). The bulkhead in front of it is the same as for APNs and FCM.

use outbound::{Adapter, Channel, Push, SendError};
use push::frame::{Frame, Message};
use push::processor::Processor;
use serde_json::value::RawValue;

/// The edge channel's adapter (cheap to clone).
#[derive(Clone, Debug)]
pub struct EdgeRouter {
    processor: Processor,
}

impl EdgeRouter {
    /// An adapter routing through `processor`.
    #[must_use]
    pub fn new(processor: Processor) -> Self {
        Self { processor }
    }

    async fn deliver(self, push: Push) -> Result<(), SendError> {
        let body = std::str::from_utf8(&push.body)
            .ok()
            .and_then(|b| RawValue::from_string(b.to_owned()).ok())
            .ok_or_else(|| SendError::Rejected("body is not JSON".into()))?;
        let frame = Frame::Push(Message {
            id: push.notification_id,
            kind: push.kind.to_string(),
            durable: true,
            sent_ns: push::frame::unix_now_ns(),
            body,
        })
        .encode();
        let routed = self
            .processor
            .unicast(&push.member, Some(&push.device_id), &frame)
            .await;
        if routed.local + routed.forwarded > 0 {
            Ok(())
        } else {
            // Disconnected since the lookup: it catches up by pulling.
            Err(SendError::Rejected("device no longer connected".into()))
        }
    }
}

impl Adapter for EdgeRouter {
    fn channel(&self) -> Channel {
        Channel::Edge
    }

    fn send(&self, push: &Push) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        self.clone().deliver(push.clone())
    }
}
