//! Logs sent with `"via": "amqp"`: published to the durable `logs_topic`
//! exchange with routing key `log.INFO`, persistent, on one long-lived
//! connection whose channel is in confirm mode.
//!
//! The broker answers 202 only after RabbitMQ confirmed the message. The
//! publish is `mandatory`, so a message no queue would take (the listener never
//! declared its queue) comes back and is a 502 instead of being dropped
//! silently. lapin's auto-recovery re-opens a broken connection; a supervisor
//! task builds a new one when recovery gave up or RabbitMQ was not up at start,
//! so the broker never waits for RabbitMQ to become ready.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::AmqpEndpoint;
use switchboard_runtime::http::REQUEST_ID_HEADER;
use switchboard_wire::LogEntry;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::Amqp;
/// The routing key of the original's `log.INFO` events.
pub const ROUTING_KEY: &str = switchboard_wire::events::ROUTING_KEY_INFO;
/// The longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
}

impl Link {
    /// A link is beyond repair when lapin gave up recovering the connection,
    /// or the channel was closed (a channel error is not recovered).
    fn is_dead(&self) -> bool {
        let connection = self.connection.status();
        let channel = self.channel.status();
        connection.closed()
            || connection.errored()
            || connection.closing()
            || !(channel.connected() || channel.reconnecting() || channel.initializing())
    }
}

/// The long-lived publisher (connection, confirm-mode channel and supervisor).
pub struct AmqpPublisher {
    /// The URI with the password applied; shows only its address.
    endpoint: AmqpEndpoint,
    exchange: String,
    timeout: Duration,
    link: RwLock<Option<Link>>,
    /// Wakes the supervisor when a request found the link dead.
    wake: Notify,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("exchange", &self.exchange)
            .field("connected", &self.current().is_some())
            .finish()
    }
}

impl AmqpPublisher {
    pub fn new(endpoint: AmqpEndpoint, exchange: String, timeout: Duration) -> Self {
        Self {
            endpoint,
            exchange,
            timeout,
            link: RwLock::new(None),
            wake: Notify::new(),
        }
    }

    /// The RabbitMQ address without credentials, for messages.
    pub fn address(&self) -> &str {
        self.endpoint.address()
    }

    fn current(&self) -> Option<Link> {
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, link: Option<Link>) {
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = link;
    }

    /// Keeps a connection open until `shutdown`, reconnecting with backoff.
    pub async fn supervise(self: Arc<Self>, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut failures: u32 = 0;
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            let healthy = self.current().is_some_and(|link| !link.is_dead());
            if !healthy {
                self.set(None);
                let attempt = tokio::select! {
                    () = &mut stop => break,
                    attempt = self.connect() => attempt,
                };
                match attempt {
                    Ok(link) => {
                        tracing::info!(url = %self.address(), exchange = %self.exchange, "connected to RabbitMQ");
                        self.set(Some(link));
                        backoff = Duration::from_millis(100);
                        failures = 0;
                    }
                    Err(err) => {
                        failures += 1;
                        // The first failure and then about one a minute: an
                        // outage should not drown the journal.
                        if failures == 1 || failures.is_multiple_of(12) {
                            tracing::warn!(url = %self.address(), error = %err, failures, retry_in = ?backoff, "cannot connect to RabbitMQ");
                        } else {
                            tracing::debug!(url = %self.address(), error = %err, failures, "cannot connect to RabbitMQ");
                        }
                        tokio::select! {
                            () = &mut stop => break,
                            () = tokio::time::sleep(backoff) => {}
                            () = self.wake.notified() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            // lapin reports no "recovery gave up" event we could wait on; a
            // cheap status check every second notices it.
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.wake.notified() => {}
            }
        }
        if let Some(link) = self.current() {
            self.set(None);
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.connection.close(200, "broker shutting down".into()),
            )
            .await;
        }
    }

    async fn connect(&self) -> Result<Link, String> {
        // lapin retries the TCP connect in a background thread with the
        // recovery backoff, and keeps doing so after our attempt timed out.
        // Only hand over once RabbitMQ accepts connections; until then the
        // supervisor's own backoff retries.
        super::probe_tcp(&self.endpoint.authority(), self.timeout).await?;
        let properties = ConnectionProperties::default()
            .with_connection_name("switchboard-broker".into())
            // lapin's default recovery backoff doubles up to a minute; a
            // restarted RabbitMQ should be used within seconds. After the last
            // attempt the supervisor opens a new connection.
            .configure_backoff(|backoff| {
                backoff
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(MAX_BACKOFF)
                    .with_max_times(30)
                    .with_jitter()
            })
            .enable_auto_recover();
        let open = async {
            let connection = Connection::connect_uri_with_runtime(
                self.endpoint.uri(),
                properties,
                lapin_runtime()?,
            )
            .await
            .map_err(|err| error_chain(&err))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|err| error_chain(&err))?;
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|err| {
                    format!(
                        "cannot declare exchange {}: {}",
                        self.exchange,
                        error_chain(&err)
                    )
                })?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|err| error_chain(&err))?;
            Ok(Link {
                connection: Arc::new(connection),
                channel,
            })
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", self.timeout.as_millis())))
    }

    /// Publishes `entry` and waits for RabbitMQ's confirm.
    pub async fn publish(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let Some(link) = self.current().filter(|link| !link.is_dead()) else {
            self.wake.notify_one();
            return Err(DownstreamError::unreachable(
                DOWNSTREAM,
                format!(
                    "not connected to {} (reconnecting in the background)",
                    self.address()
                ),
            ));
        };
        if !link.channel.status().connected() {
            return Err(DownstreamError::unreachable(
                DOWNSTREAM,
                "the connection was lost and is being recovered",
            ));
        }
        let body = serde_json::json!({ "name": entry.name, "data": entry.data }).to_string();
        let properties = self.properties(entry, request_id);
        let deadline = Instant::now() + self.timeout;
        let work = async {
            match self
                .publish_once(&link.channel, body.as_bytes(), properties.clone())
                .await
            {
                Err(err) if err.can_be_recovered() => {
                    // The connection broke under us: once it is back (within
                    // our deadline) publish again; the message id lets the
                    // consumer drop a duplicate.
                    tracing::info!(error = %err, "RabbitMQ connection broke during publish; waiting for recovery");
                    link.channel.wait_for_recovery(err).await.map_err(|err| {
                        DownstreamError::unreachable(DOWNSTREAM, error_chain(&err))
                    })?;
                    self.publish_once(&link.channel, body.as_bytes(), properties)
                        .await
                        .map_err(|err| DownstreamError::unreachable(DOWNSTREAM, error_chain(&err)))
                        .and_then(|confirmation| self.judge(confirmation))
                }
                Err(err) => Err(DownstreamError::failed(DOWNSTREAM, error_chain(&err))),
                Ok(confirmation) => self.judge(confirmation),
            }
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)))
    }

    async fn publish_once(
        &self,
        channel: &Channel,
        body: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<Confirmation> {
        channel
            .basic_publish(
                self.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?
            .await
    }

    fn judge(&self, confirmation: Confirmation) -> Result<(), DownstreamError> {
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(DownstreamError::failed(
                    DOWNSTREAM,
                    format!(
                        "no queue is bound to {} for {ROUTING_KEY} ({} {}); is the listener running?",
                        self.exchange, returned.reply_code, returned.reply_text
                    ),
                ))
            }
            Confirmation::Nack(None) => Err(DownstreamError::failed(
                DOWNSTREAM,
                "RabbitMQ refused the message (nack)",
            )),
            Confirmation::NotRequested => Err(DownstreamError::failed(
                DOWNSTREAM,
                "the channel is not in confirm mode",
            )),
        }
    }

    fn properties(&self, entry: &LogEntry, request_id: Option<&str>) -> BasicProperties {
        let mut headers = FieldTable::default();
        if let Some(id) = request_id {
            headers.insert(
                ShortString::from(REQUEST_ID_HEADER),
                AMQPValue::LongString(LongString::from(id)),
            );
        }
        let message_id = entry
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        BasicProperties::default()
            .with_content_type("application/json".into())
            // 2 = persistent: the message survives a RabbitMQ restart once queued.
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_timestamp(now)
            .with_app_id("switchboard-broker".into())
            .with_headers(headers)
    }

    /// Whether the connection is up right now.
    pub fn probe(&self) -> Result<(), String> {
        match self.current() {
            Some(link) if link.connection.status().connected() => Ok(()),
            Some(_) => Err("connection lost; recovering".to_owned()),
            None => {
                self.wake.notify_one();
                Err("not connected".to_owned())
            }
        }
    }
}

/// The tokio runtime lapin's I/O thread uses.
///
/// lapin recovers a connection in a thread of its own, sleeping between
/// attempts on the runtime it was given, and nothing can stop that thread
/// mid-recovery. Given the service's runtime, a shutdown during a RabbitMQ
/// outage made that thread panic ("the runtime is being shut down"). This one
/// lives in a static and is never shut down: at exit its threads simply end
/// with the process.
fn lapin_runtime() -> Result<async_rs::TokioRuntime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("amqp-runtime")
                .enable_all()
                .build()
                .map_err(|err| format!("cannot start the AMQP runtime: {err}"))
        })
        .as_ref()
        .map(|runtime| async_rs::Runtime::tokio_with_handle(runtime.handle().clone()))
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> AmqpEndpoint {
        AmqpEndpoint::parse("events.amqp_url", url, None).expect("valid URL")
    }

    #[test]
    fn address_hides_credentials() {
        let publisher = AmqpPublisher::new(
            endpoint("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "logs_topic".into(),
            Duration::from_secs(1),
        );
        assert_eq!(publisher.address(), "amqp://127.0.0.1:5672/%2f");
    }

    #[tokio::test]
    async fn publishing_without_a_connection_is_a_502_that_names_rabbitmq() {
        let publisher = AmqpPublisher::new(
            endpoint("amqp://guest:guest@127.0.0.1:9/%2f"),
            "logs_topic".into(),
            Duration::from_secs(1),
        );
        let entry = LogEntry {
            name: "n".into(),
            data: "d".into(),
            id: None,
        };
        let err = publisher
            .publish(&entry, None)
            .await
            .expect_err("no connection");
        assert_eq!(err.status(), axum::http::StatusCode::BAD_GATEWAY);
        assert!(
            err.to_string()
                .starts_with("rabbitmq (amqp) is unreachable"),
            "{err}"
        );
    }
}
