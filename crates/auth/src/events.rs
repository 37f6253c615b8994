//! Login events on RabbitMQ's `logs_topic` exchange, without ever making a login
//! wait for RabbitMQ.
//!
//! A login hands its event to a bounded in-memory queue ([`Events::submit`]
//! never blocks). One background task publishes queued events with publisher
//! confirms on the runtime's [`ConfirmChannel`] (one long-lived connection,
//! lapin's recovery first, then reconnects with back-off by its supervisor)
//! and removes an event only once RabbitMQ confirmed it. Events that were in
//! flight when the connection broke are published again; their `message_id`
//! stays the same, so consumers can drop the duplicate.
//!
//! While RabbitMQ is unreachable, every waiting event is written to the
//! service's log (warn, with its fields), and events beyond the queue bound are
//! dropped with an error line naming them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::link::Message;
use switchboard_runtime::amqp::{
    AmqpEndpoint, ConfirmChannel, Connector, Link, LinkError, Outcome,
};
use switchboard_runtime::backoff::Backoff;
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::telemetry::{self, SpanKind};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::domain::Email;
use crate::settings;

/// The publisher's view of RabbitMQ, for logs and `/readyz`.
pub use switchboard_runtime::amqp::LinkState as AmqpState;

/// The routing key of login events (wire contract).
pub const ROUTING_KEY: &str = switchboard_wire::events::ROUTING_KEY_INFO;
/// The `name` of login log entries (wire contract).
pub const EVENT_NAME: &str = "authentication";
/// AMQP header carrying the id of the request that logged in.
pub use switchboard_wire::REQUEST_ID_HEADER;

/// Events published per round trip of confirms.
const BATCH: usize = 64;
/// How often a waiting publisher looks again without being woken.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Delays after RabbitMQ refused events or the connection had to be rebuilt.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One successful login, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// AMQP `message_id`: stays the same when the event is published again.
    pub message_id: Uuid,
    pub email: String,
    /// The `x-request-id` of the login request.
    pub request_id: Option<String>,
    /// The login request's `traceparent`: the event is published later, by
    /// the publisher task, and continues the login's trace there.
    pub traceparent: Option<String>,
    pub occurred_at: OffsetDateTime,
}

/// The message body (wire contract): `{"name","data"}`.
#[derive(Debug, Serialize)]
struct LogBody<'a> {
    name: &'a str,
    data: &'a str,
}

impl LoginEvent {
    pub fn new(email: &Email, request_id: Option<String>) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            email: email.as_str().to_owned(),
            request_id,
            traceparent: telemetry::traceparent(),
            occurred_at: OffsetDateTime::now_utc(),
        }
    }

    /// `<email> logged in`.
    pub fn data(&self) -> String {
        format!("{} logged in", self.email)
    }

    /// `{"name":"authentication","data":"<email> logged in"}`.
    pub fn body(&self) -> Vec<u8> {
        let data = self.data();
        let body = LogBody {
            name: EVENT_NAME,
            data: &data,
        };
        // Two plain strings always serialize.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The span of this event's publish, from publishing to RabbitMQ's
    /// confirm, in the login's trace (a disabled span while traces are off).
    fn publish_span(&self) -> telemetry::Traced {
        telemetry::entry_from_traceparent(self.traceparent.as_deref()).call_span(
            "rabbitmq",
            "amqp",
            SpanKind::Producer,
        )
    }

    /// The message's properties; the headers carry `span`'s trace context.
    fn properties(&self, span: &telemetry::Traced) -> BasicProperties {
        let mut headers = FieldTable::default();
        switchboard_runtime::amqp::trace::inject_traced(span, &mut headers);
        if let Some(id) = &self.request_id {
            headers.insert(
                REQUEST_ID_HEADER.into(),
                AMQPValue::LongString(id.as_str().into()),
            );
        }
        let timestamp = u64::try_from(self.occurred_at.unix_timestamp()).unwrap_or(0);
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(self.message_id.to_string().into())
            .with_timestamp(timestamp)
            .with_app_id("switchboard-auth".into())
            .with_headers(headers)
    }
}

/// State shared by the request handlers and the publisher task.
struct Shared {
    pending: Mutex<VecDeque<LoginEvent>>,
    capacity: usize,
    wake: Notify,
    channel: Arc<ConfirmChannel>,
    exchange: String,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, VecDeque<LoginEvent>> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (push/pop only), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> AmqpState {
        self.channel.state()
    }

    /// Logs a change of the channel's state; on the way into an outage every
    /// waiting event is logged, so each one is in the log at least once per
    /// outage.
    fn state_changed(&self, old: &AmqpState, new: &AmqpState) {
        match (old, new) {
            (AmqpState::Unreachable(_), AmqpState::Unreachable(_)) => {}
            (_, AmqpState::Unreachable(why)) => {
                tracing::warn!(reason = %why, "RabbitMQ is unreachable; login events are kept in memory and retried");
                for event in self.pending().iter() {
                    self.log_waiting(event);
                }
            }
            (AmqpState::Unreachable(_), AmqpState::Connected) => {
                tracing::info!(
                    pending = self.pending().len(),
                    "RabbitMQ is reachable again; publishing waiting login events"
                );
            }
            _ => {}
        }
    }

    fn log_waiting(&self, event: &LoginEvent) {
        tracing::warn!(
            message_id = %event.message_id,
            exchange = %self.exchange,
            routing_key = ROUTING_KEY,
            name = EVENT_NAME,
            data = %event.data(),
            request_id = event.request_id.as_deref().unwrap_or("-"),
            "login event not yet published (RabbitMQ unreachable); kept for retry"
        );
    }
}

/// The handle request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("state", &self.state())
            .field("pending", &self.pending())
            .finish()
    }
}

impl Events {
    /// Queues `event` for publishing; never blocks or fails the caller. A full
    /// queue drops the event with an error log line naming it.
    pub fn submit(&self, event: LoginEvent) {
        let shared = &self.shared;
        {
            let mut pending = shared.pending();
            if pending.len() >= shared.capacity {
                drop(pending);
                tracing::error!(
                    message_id = %event.message_id,
                    exchange = %shared.exchange,
                    routing_key = ROUTING_KEY,
                    name = EVENT_NAME,
                    data = %event.data(),
                    request_id = event.request_id.as_deref().unwrap_or("-"),
                    capacity = shared.capacity,
                    "login event dropped: the queue of events waiting for RabbitMQ is full"
                );
                return;
            }
            pending.push_back(event.clone());
        }
        if matches!(shared.state(), AmqpState::Unreachable(_)) {
            shared.log_waiting(&event);
        }
        shared.wake.notify_one();
    }

    /// What the publisher knows about RabbitMQ right now.
    pub fn state(&self) -> AmqpState {
        self.shared.state()
    }

    /// Events not yet confirmed by RabbitMQ.
    pub fn pending(&self) -> usize {
        self.shared.pending().len()
    }

    /// `connected, 0 pending`: for `/readyz`.
    pub fn summary(&self) -> String {
        format!("{}, {} pending", self.state(), self.pending())
    }
}

/// Starts the publisher task. It runs until `stop` fires, then tries to publish
/// what is still queued within `events.publish_timeout_ms`, logs what it could
/// not, and closes the connection.
///
/// `rabbitmq` is `events.amqp_url` with its password applied
/// ([`AmqpEndpoint::from_settings`]).
pub fn spawn_publisher(
    settings: &settings::Events,
    rabbitmq: AmqpEndpoint,
    stop: Shutdown,
    metrics: &Metrics,
) -> (Events, tokio::task::JoinHandle<()>) {
    let connector = Connector::new(rabbitmq, "switchboard-auth", settings.publish_timeout());
    let shared = Arc::new(Shared {
        pending: Mutex::new(VecDeque::new()),
        capacity: settings.max_pending,
        wake: Notify::new(),
        channel: Arc::new(ConfirmChannel::new(connector, &settings.exchange).with_metrics(metrics)),
        exchange: settings.exchange.clone(),
    });
    let publisher = Publisher {
        shared: shared.clone(),
        settings: settings.clone(),
        stop,
    };
    let task = tokio::spawn(publisher.run());
    (Events { shared }, task)
}

/// How a batch went.
enum BatchOutcome {
    /// Every event confirmed (or returned as unroutable, which retrying cannot fix).
    Done,
    /// RabbitMQ refused some events (nack); the link is fine.
    Refused(usize),
    /// The link failed.
    Broken(LinkError),
}

struct Publisher {
    shared: Arc<Shared>,
    settings: settings::Events,
    stop: Shutdown,
}

impl Publisher {
    async fn run(self) {
        let channel = self.shared.channel.clone();
        // Stopped only after the last events had their chance below.
        let link_stop = Shutdown::new();
        let supervisor = tokio::spawn(channel.clone().supervise(link_stop.clone()));
        let mut states = channel.watch_state();
        let mut seen = states.borrow_and_update().clone();
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        while !self.stop.is_triggered() {
            let now = states.borrow_and_update().clone();
            if now != seen {
                self.shared.state_changed(&seen, &now);
                seen = now;
            }
            if self.shared.pending().is_empty() {
                self.wait(&mut states).await;
                continue;
            }
            let Some(link) = channel.link() else {
                self.wait(&mut states).await;
                continue;
            };
            match self.publish_batch(&link).await {
                BatchOutcome::Done => retry.reset(),
                BatchOutcome::Refused(count) => {
                    let delay = retry.next_delay();
                    tracing::warn!(
                        count,
                        ?delay,
                        "RabbitMQ refused login events (nack); retrying"
                    );
                    self.pause(delay).await;
                }
                BatchOutcome::Broken(err) => {
                    let recovered = tokio::select! {
                        recovered = channel.recover(&link, err, self.settings.publish_timeout()) => recovered,
                        () = self.stop.requested() => false,
                    };
                    if !recovered {
                        channel.abandon(&link, "automatic recovery gave up");
                        self.pause(retry.next_delay()).await;
                    }
                }
            }
        }
        self.flush(&channel).await;
        link_stop.trigger();
        if let Err(err) = supervisor.await {
            tracing::error!(error = %err, "the RabbitMQ connection supervisor failed");
        }
        self.report_lost();
    }

    /// Waits for new events, a change of the channel's state, shutdown, or
    /// the next look.
    async fn wait(&self, states: &mut watch::Receiver<AmqpState>) {
        tokio::select! {
            () = self.shared.wake.notified() => {}
            _ = states.changed() => {}
            () = self.stop.requested() => {}
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }

    /// Sleeps `delay` unless shutdown comes first.
    async fn pause(&self, delay: Duration) {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.stop.requested() => {}
        }
    }

    /// Publishes the oldest queued events and waits for their confirms. Events
    /// leave the queue only when confirmed; the rest stay at its front, in order.
    async fn publish_batch(&self, link: &Link) -> BatchOutcome {
        let batch: Vec<LoginEvent> = self.shared.pending().iter().take(BATCH).cloned().collect();
        let bodies: Vec<Vec<u8>> = batch.iter().map(LoginEvent::body).collect();
        // Dropped when the batch's outcomes are in: each event's span lasts
        // until the batch's confirms (or their deadline).
        let spans: Vec<telemetry::Traced> = batch.iter().map(LoginEvent::publish_span).collect();
        let messages: Vec<Message<'_>> = batch
            .iter()
            .zip(&bodies)
            .zip(&spans)
            .map(|((event, body), span)| Message {
                routing_key: ROUTING_KEY,
                body,
                properties: event.properties(span),
            })
            .collect();
        let exchange = self.settings.exchange.as_str();
        let deadline = tokio::time::Instant::now() + self.settings.publish_timeout();
        let report = self
            .shared
            .channel
            .publish_all_on(link, &messages, deadline)
            .await;
        let mut settled = vec![false; batch.len()];
        let mut refused = 0;
        for (((event, outcome), done), span) in batch
            .iter()
            .zip(&report.outcomes)
            .zip(&mut settled)
            .zip(&spans)
        {
            match outcome {
                Some(Outcome::Confirmed) => *done = true,
                Some(Outcome::Unroutable { reply_text, .. }) => {
                    *done = true;
                    telemetry::failed(span.span(), &"no queue bound for the event");
                    tracing::warn!(
                        message_id = %event.message_id,
                        exchange,
                        routing_key = ROUTING_KEY,
                        data = %event.data(),
                        reply = %reply_text,
                        "login event published but no queue is bound for it (is the listener's queue declared?)"
                    );
                }
                Some(Outcome::Refused) => {
                    refused += 1;
                    telemetry::failed(
                        span.span(),
                        &"RabbitMQ refused the event (nack); kept for retry",
                    );
                }
                None => telemetry::failed(span.span(), &"not confirmed; kept for retry"),
            }
        }
        self.settle(&batch, &settled);
        match report.broken {
            Some(err) => {
                for (event, done) in batch.iter().zip(&settled) {
                    if !done {
                        tracing::warn!(
                            message_id = %event.message_id,
                            exchange,
                            routing_key = ROUTING_KEY,
                            name = EVENT_NAME,
                            data = %event.data(),
                            request_id = event.request_id.as_deref().unwrap_or("-"),
                            error = %err,
                            "login event not confirmed by RabbitMQ; kept for retry"
                        );
                    }
                }
                BatchOutcome::Broken(err)
            }
            None if refused > 0 => BatchOutcome::Refused(refused),
            None => BatchOutcome::Done,
        }
    }

    /// Removes the confirmed events of `batch` (the queue's first
    /// `batch.len()` entries: only this task removes, handlers only append).
    fn settle(&self, batch: &[LoginEvent], settled: &[bool]) {
        let mut pending = self.shared.pending();
        let count = batch.len().min(pending.len());
        let front: Vec<LoginEvent> = pending.drain(..count).collect();
        for (event, done) in front.into_iter().zip(settled).rev() {
            if !done {
                pending.push_front(event);
            }
        }
    }

    /// Last chance for queued events, within `events.publish_timeout_ms`.
    async fn flush(&self, channel: &ConfirmChannel) {
        let Some(link) = channel.link() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + self.settings.publish_timeout();
        while !self.shared.pending().is_empty() && tokio::time::Instant::now() < deadline {
            if !matches!(self.publish_batch(&link).await, BatchOutcome::Done) {
                break;
            }
        }
    }

    /// What could not be published before shutdown goes to the log.
    fn report_lost(&self) {
        let lost: Vec<LoginEvent> = self.shared.pending().drain(..).collect();
        for event in &lost {
            tracing::error!(
                message_id = %event.message_id,
                exchange = %self.settings.exchange,
                routing_key = ROUTING_KEY,
                name = EVENT_NAME,
                data = %event.data(),
                request_id = event.request_id.as_deref().unwrap_or("-"),
                "login event not published before shutdown"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_and_properties_follow_the_wire_contract() {
        let email = Email::parse("admin@example.com").expect("valid");
        let event = LoginEvent::new(&email, Some("req-1".into()));
        let body: serde_json::Value = serde_json::from_slice(&event.body()).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"name": "authentication", "data": "admin@example.com logged in"})
        );
        let properties = event.properties(&event.publish_span());
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.to_string()),
            Some(event.message_id.to_string())
        );
        let headers = properties.headers().as_ref().expect("headers");
        assert_eq!(
            headers.inner().get(REQUEST_ID_HEADER),
            Some(&AMQPValue::LongString("req-1".into()))
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_newest_event_and_keeps_the_others() {
        let settings = settings::Events {
            // Nothing listens here: the publisher never drains the queue.
            amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
            max_pending: 2,
            ..settings::Events::default()
        };
        let stop = Shutdown::new();
        let rabbitmq =
            AmqpEndpoint::parse("events.amqp_url", &settings.amqp_url, None).expect("valid URL");
        let (events, task) = spawn_publisher(&settings, rabbitmq, stop.clone(), &Metrics::new());
        let email = Email::parse("a@example.com").expect("valid");
        let first = LoginEvent::new(&email, None);
        events.submit(first.clone());
        events.submit(LoginEvent::new(&email, None));
        events.submit(LoginEvent::new(&email, None));
        assert_eq!(events.pending(), 2);
        assert_eq!(events.shared.pending().front(), Some(&first));
        stop.trigger();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("publisher stops")
            .expect("publisher task");
        assert_eq!(events.state(), AmqpState::Stopped);
        assert_eq!(events.pending(), 0);
    }
}
