//! Login events on RabbitMQ's `logs_topic` exchange, without ever making a login
//! wait for RabbitMQ.
//!
//! A login hands its event to a bounded in-memory queue ([`Events::submit`]
//! never blocks). One background task owns the one long-lived AMQP connection
//! and channel: it publishes queued events with publisher confirms and removes
//! an event only once RabbitMQ confirmed it. Connection loss is first left to
//! lapin's automatic recovery (which replays the exchange declaration and the
//! confirm mode); when that gives up, the task reconnects by itself with backoff
//! and declares the exchange again. Events that were in flight when the
//! connection broke are published again; their `message_id` stays the same, so
//! consumers can drop the duplicate.
//!
//! While RabbitMQ is unreachable, every waiting event is written to the
//! service's log (warn, with its fields), and events beyond the queue bound are
//! dropped with an error line naming them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::AmqpEndpoint;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::Email;
use crate::settings;

/// The routing key of login events (wire contract).
pub const ROUTING_KEY: &str = switchboard_wire::events::ROUTING_KEY_INFO;
/// The `name` of login log entries (wire contract).
pub const EVENT_NAME: &str = "authentication";
/// AMQP header carrying the id of the request that logged in.
pub use switchboard_wire::REQUEST_ID_HEADER;

/// Events published per round trip of confirms.
const BATCH: usize = 64;
/// How often an idle publisher looks at its connection's health.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Reconnect delays of the publisher's own loop.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// lapin's own recovery: a few quick attempts; longer outages are the
/// publisher loop's job, whose state the readiness endpoint reports.
const LAPIN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LAPIN_BACKOFF_MAX: Duration = Duration::from_secs(1);
const LAPIN_RETRIES: usize = 4;

/// One successful login, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    /// AMQP `message_id`: stays the same when the event is published again.
    pub message_id: Uuid,
    pub email: String,
    /// The `x-request-id` of the login request.
    pub request_id: Option<String>,
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

    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
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

/// The publisher's view of RabbitMQ, for logs and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpState {
    /// The first connection attempt is under way.
    Connecting,
    Connected,
    /// RabbitMQ cannot be reached (or refused us); events wait in memory.
    Unreachable(String),
    /// The publisher has shut down.
    Stopped,
}

impl fmt::Display for AmqpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connecting => f.write_str("connecting"),
            Self::Connected => f.write_str("connected"),
            Self::Unreachable(why) => write!(f, "unreachable ({why})"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// State shared by the request handlers and the publisher task.
struct Shared {
    pending: Mutex<VecDeque<LoginEvent>>,
    capacity: usize,
    wake: Notify,
    state: Mutex<AmqpState>,
    exchange: String,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, VecDeque<LoginEvent>> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (push/pop only), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> AmqpState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a new state; on the way into an outage every waiting event is
    /// logged, so each one is in the log at least once per outage.
    fn set_state(&self, new: AmqpState) {
        let old = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *state, new.clone())
        };
        match (&old, &new) {
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
            (_, AmqpState::Connected) if old != AmqpState::Connected => {
                tracing::info!(exchange = %self.exchange, "connected to RabbitMQ");
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
) -> (Events, tokio::task::JoinHandle<()>) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(VecDeque::new()),
        capacity: settings.max_pending,
        wake: Notify::new(),
        state: Mutex::new(AmqpState::Connecting),
        exchange: settings.exchange.clone(),
    });
    let publisher = Publisher {
        shared: shared.clone(),
        settings: settings.clone(),
        rabbitmq,
        stop,
    };
    let task = tokio::spawn(publisher.run());
    (Events { shared }, task)
}

/// The connection and its one channel (in confirm mode, exchange declared).
struct Link {
    connection: Connection,
    channel: Channel,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Amqp(#[from] lapin::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// How a batch went.
enum BatchOutcome {
    /// Every event confirmed (or returned as unroutable, which retrying cannot fix).
    Done,
    /// RabbitMQ refused some events (nack); the link is fine.
    Refused(usize),
    /// The link failed; the error is lapin's, if it gave one.
    Broken(LinkError),
}

struct Publisher {
    shared: Arc<Shared>,
    settings: settings::Events,
    rabbitmq: AmqpEndpoint,
    stop: Shutdown,
}

impl Publisher {
    async fn run(self) {
        let mut link: Option<Link> = None;
        let mut delay = BACKOFF_MIN;
        while !self.stop.is_triggered() {
            let Some(current) = link.as_ref() else {
                let attempt = tokio::select! {
                    attempt = self.connect() => attempt,
                    () = self.stop.requested() => break,
                };
                match attempt {
                    Ok(new) => {
                        // The delay is reset only once events go through: a
                        // connection that breaks at every publish must not
                        // turn into a tight reconnect loop.
                        self.shared.set_state(AmqpState::Connected);
                        link = Some(new);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, ?delay, "connecting to RabbitMQ failed");
                        self.shared
                            .set_state(AmqpState::Unreachable(err.to_string()));
                        self.pause(delay).await;
                        delay = (delay * 2).min(BACKOFF_MAX);
                    }
                }
                continue;
            };
            if !link_is_usable(current) {
                if let Some(broken) = link.take() {
                    self.abandon(broken, "the connection to RabbitMQ was lost")
                        .await;
                }
                continue;
            }
            if self.shared.pending().is_empty() {
                self.idle(current).await;
                continue;
            }
            match self.publish_batch(&current.channel).await {
                BatchOutcome::Done => {
                    self.shared.set_state(AmqpState::Connected);
                    delay = BACKOFF_MIN;
                }
                BatchOutcome::Refused(count) => {
                    tracing::warn!(
                        count,
                        ?delay,
                        "RabbitMQ refused login events (nack); retrying"
                    );
                    self.pause(delay).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                BatchOutcome::Broken(err) => {
                    self.shared
                        .set_state(AmqpState::Unreachable(err.to_string()));
                    if !self.recover(current, err).await
                        && let Some(broken) = link.take()
                    {
                        self.abandon(broken, "automatic recovery gave up").await;
                        self.pause(delay).await;
                        delay = (delay * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        self.shut_down(link).await;
    }

    /// Opens the connection (with lapin's auto-recovery), a channel in confirm
    /// mode, and declares the exchange: durable topic, as the listener expects.
    async fn connect(&self) -> Result<Link, LinkError> {
        let properties = ConnectionProperties::default()
            .with_connection_name("switchboard-auth".into())
            .enable_auto_recover()
            .configure_backoff(|backoff| {
                backoff
                    .with_min_delay(LAPIN_BACKOFF_MIN)
                    .with_max_delay(LAPIN_BACKOFF_MAX)
                    .with_max_times(LAPIN_RETRIES)
            });
        let limit = self.settings.publish_timeout();
        let setup = async {
            let connection = Connection::connect_uri(self.rabbitmq.uri(), properties).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .exchange_declare(
                    self.settings.exchange.as_str().into(),
                    lapin::ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, LinkError>(Link {
                connection,
                channel,
            })
        };
        // Connecting includes lapin's own retries; bound the whole attempt.
        tokio::time::timeout(limit + LAPIN_BACKOFF_MAX * 4, setup)
            .await
            .map_err(|_| LinkError::Timeout(limit))?
    }

    /// Waits for new events, shutdown, or the next health look.
    async fn idle(&self, link: &Link) {
        tokio::select! {
            () = self.shared.wake.notified() => {}
            () = self.stop.requested() => {}
            () = tokio::time::sleep(HEALTH_INTERVAL) => {
                if link.connection.status().connected() && link.channel.status().connected() {
                    self.shared.set_state(AmqpState::Connected);
                } else {
                    self.shared.set_state(AmqpState::Unreachable("connection lost; reconnecting".into()));
                }
            }
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
    async fn publish_batch(&self, channel: &Channel) -> BatchOutcome {
        let batch: Vec<LoginEvent> = self.shared.pending().iter().take(BATCH).cloned().collect();
        let limit = self.settings.publish_timeout();
        let exchange = self.settings.exchange.as_str();
        let mut confirms = Vec::with_capacity(batch.len());
        let mut broken = None;
        for event in &batch {
            let published = channel
                .basic_publish(
                    exchange.into(),
                    ROUTING_KEY.into(),
                    // Mandatory: an event no queue takes comes back, and the
                    // log says so, instead of vanishing silently.
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &event.body(),
                    event.properties(),
                )
                .await;
            match published {
                Ok(confirm) => confirms.push(confirm),
                Err(err) => {
                    broken = Some(LinkError::Amqp(err));
                    break;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        let mut settled = vec![false; batch.len()];
        let mut refused = 0;
        for (index, confirm) in confirms.into_iter().enumerate() {
            let event = &batch[index];
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => {
                    settled[index] = true;
                }
                Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                    settled[index] = true;
                    tracing::warn!(
                        message_id = %event.message_id,
                        exchange,
                        routing_key = ROUTING_KEY,
                        data = %event.data(),
                        reply = %returned.reply_text,
                        "login event published but no queue is bound for it (is the listener's queue declared?)"
                    );
                }
                Ok(Ok(Confirmation::Nack(_))) => refused += 1,
                Ok(Err(err)) => {
                    broken.get_or_insert(LinkError::Amqp(err));
                }
                Err(_) => {
                    broken.get_or_insert(LinkError::Timeout(limit));
                }
            }
        }
        self.settle(&batch, &settled);
        match broken {
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

    /// Waits for lapin's automatic recovery of the channel; false when it gave
    /// up, cannot recover this error, or takes longer than a connection attempt.
    async fn recover(&self, link: &Link, err: LinkError) -> bool {
        let LinkError::Amqp(err) = err else {
            return link_is_usable(link);
        };
        let limit = self.settings.publish_timeout() + LAPIN_BACKOFF_MAX * 4;
        let recovered = tokio::select! {
            result = tokio::time::timeout(limit, link.channel.wait_for_recovery(err)) => {
                matches!(result, Ok(Ok(())))
            }
            () = self.stop.requested() => false,
        };
        recovered && link_is_usable(link)
    }

    /// Drops a link that cannot be used any more; the loop reconnects.
    async fn abandon(&self, link: Link, why: &str) {
        tracing::info!(reason = why, "reconnecting to RabbitMQ");
        self.shared
            .set_state(AmqpState::Unreachable(why.to_owned()));
        close(link).await;
    }

    /// Last chance for queued events, then the connection is closed.
    async fn shut_down(&self, link: Option<Link>) {
        if let Some(link) = link {
            if link_is_usable(&link) && !self.shared.pending().is_empty() {
                let deadline = tokio::time::Instant::now() + self.settings.publish_timeout();
                while !self.shared.pending().is_empty() && tokio::time::Instant::now() < deadline {
                    if !matches!(self.publish_batch(&link.channel).await, BatchOutcome::Done) {
                        break;
                    }
                }
            }
            close(link).await;
        }
        self.shared.set_state(AmqpState::Stopped);
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

fn link_is_usable(link: &Link) -> bool {
    let connection = link.connection.status();
    let channel = link.channel.status();
    (connection.connected() || connection.reconnecting())
        && (channel.connected() || channel.reconnecting())
}

/// Closes politely, without letting a dead peer hold up the caller.
async fn close(link: Link) {
    let closing = link.connection.close(200, "OK".into());
    if let Err(err) = tokio::time::timeout(Duration::from_secs(1), closing).await {
        tracing::debug!(error = %err, "closing the RabbitMQ connection timed out");
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
        let properties = event.properties();
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
        let (events, task) = spawn_publisher(&settings, rabbitmq, stop.clone());
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
