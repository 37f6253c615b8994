//! Logs sent with `"via": "amqp"`: published to the durable `logs_topic`
//! exchange with routing key `log.INFO`, persistent, on one long-lived
//! connection whose channel is in confirm mode.
//!
//! The broker answers 202 only after RabbitMQ confirmed the message. The
//! publish is `mandatory`, so a message no queue would take (the listener never
//! declared its queue) comes back and is a 502 instead of being dropped
//! silently. The connection is the runtime's [`ConfirmChannel`]: lapin's
//! auto-recovery re-opens a broken connection, and its supervisor builds a new
//! one when recovery gave up or RabbitMQ was not up at start, so the broker
//! never waits for RabbitMQ to become ready.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::link::Message;
use switchboard_runtime::amqp::{AmqpEndpoint, ConfirmChannel, Connector, LinkError, Outcome};
use switchboard_runtime::http::REQUEST_ID_HEADER;
use switchboard_runtime::metrics::Metrics;
use switchboard_wire::LogEntry;

use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::Amqp;
/// The routing key of the original's `log.INFO` events.
pub const ROUTING_KEY: &str = switchboard_wire::events::ROUTING_KEY_INFO;

/// The long-lived publisher: the runtime's [`ConfirmChannel`] and the
/// broker's message format.
#[derive(Debug)]
pub struct AmqpPublisher {
    channel: Arc<ConfirmChannel>,
    timeout: Duration,
}

impl AmqpPublisher {
    pub fn new(
        endpoint: AmqpEndpoint,
        exchange: String,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Self {
        let connector = Connector::new(endpoint, "switchboard-broker", timeout);
        Self {
            channel: Arc::new(ConfirmChannel::new(connector, &exchange).with_metrics(metrics)),
            timeout,
        }
    }

    /// The RabbitMQ address without credentials, for messages.
    pub fn address(&self) -> &str {
        self.channel.address()
    }

    /// Keeps a connection open until `shutdown`, reconnecting with backoff.
    pub async fn supervise(self: Arc<Self>, shutdown: Shutdown) {
        self.channel.clone().supervise(shutdown).await;
    }

    /// Publishes `entry` and waits for RabbitMQ's confirm.
    pub async fn publish(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let body = serde_json::json!({ "name": entry.name, "data": entry.data }).to_string();
        let message = Message {
            routing_key: ROUTING_KEY,
            body: body.as_bytes(),
            properties: properties(entry, request_id),
        };
        match tokio::time::timeout(self.timeout, self.channel.publish(&message)).await {
            Err(_) => Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)),
            Ok(Ok(outcome)) => self.judge(outcome),
            Ok(Err(LinkError::NotConnected)) => Err(DownstreamError::unreachable(
                DOWNSTREAM,
                format!(
                    "not connected to {} (reconnecting in the background)",
                    self.address()
                ),
            )),
            Ok(Err(err)) if err.can_be_recovered() => {
                Err(DownstreamError::unreachable(DOWNSTREAM, error_chain(&err)))
            }
            Ok(Err(err)) => Err(DownstreamError::failed(DOWNSTREAM, error_chain(&err))),
        }
    }

    fn judge(&self, outcome: Outcome) -> Result<(), DownstreamError> {
        match outcome {
            Outcome::Confirmed => Ok(()),
            Outcome::Unroutable {
                reply_code,
                reply_text,
            } => Err(DownstreamError::failed(
                DOWNSTREAM,
                format!(
                    "no queue is bound to {} for {ROUTING_KEY} ({reply_code} {reply_text}); is the listener running?",
                    self.channel.exchange()
                ),
            )),
            Outcome::Refused => Err(DownstreamError::failed(
                DOWNSTREAM,
                "RabbitMQ refused the message (nack)",
            )),
        }
    }

    /// Whether the connection is up right now.
    pub fn probe(&self) -> Result<(), String> {
        match self.channel.link() {
            Some(link) if link.is_connected() => Ok(()),
            Some(_) => Err("connection lost; recovering".to_owned()),
            None => Err("not connected".to_owned()),
        }
    }
}

fn properties(entry: &LogEntry, request_id: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    switchboard_runtime::amqp::trace::inject(&mut headers);
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
            &Metrics::new(),
        );
        assert_eq!(publisher.address(), "amqp://127.0.0.1:5672/%2f");
    }

    #[tokio::test]
    async fn publishing_without_a_connection_is_a_502_that_names_rabbitmq() {
        let publisher = AmqpPublisher::new(
            endpoint("amqp://guest:guest@127.0.0.1:9/%2f"),
            "logs_topic".into(),
            Duration::from_secs(1),
            &Metrics::new(),
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
