//! One connection's worth of consuming: connect, declare, consume with the
//! configured prefetch, and hand every delivery to its own task, which
//! forwards it to the logger and acknowledges it individually.
//!
//! The outcome of each delivery:
//!
//! | what happened | what the listener does |
//! |---|---|
//! | the logger stored it | `basic.ack` |
//! | the body is not an event (not JSON `{"name","data"}`, too large) | dead-lettered at once, with the reason (see [`crate::dead_letter`]) |
//! | not a valid log entry (the shared rules of `switchboard_wire::entry`: empty name, over the limits…), by the listener's check or the logger's | same: retrying cannot help |
//! | its id is stored already with another name or data (the logger's 409 / `Conflict`) | same |
//! | the logger is down, timed out, or could not store it | `basic.nack` with requeue, and the [breaker](crate::backoff) holds further deliveries back |
//! | … and it was the breaker's probe (the logger is still down) | nothing: it waits for the next probe without spending a delivery |
//! | a requeued message reached `amqp.delivery_limit` | the quorum queue dead-letters it on that nack |
//!
//! When the connection dies, the deliveries in flight die with it: RabbitMQ
//! requeues everything unacknowledged, and the logger's idempotency ids make
//! the redeliveries harmless.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{FieldTable, ShortString};
use switchboard_runtime::amqp::{AmqpEndpoint, Connector, link};
use switchboard_runtime::telemetry::SpanKind;
use switchboard_runtime::{Shutdown, lifecycle};
use switchboard_wire::LogLimits;
use tokio::task::JoinSet;

use crate::backoff::{Backoff, Breaker, Pass};
use crate::dead_letter::{self, DeadLetters};
use crate::event::{self, Event};
use crate::logger_client::{ForwardError, LoggerClient};
use crate::settings::Amqp;
use crate::stats::{Phase, Stats};
use crate::topology::{self, QueueKind, TopologyError};

/// How long to wait for RabbitMQ to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What every delivery task needs.
pub struct Context {
    pub amqp: Amqp,
    /// Connects to `amqp.url` (and `amqp.nodes`) with the password applied
    /// (from `amqp.password_file` or the credential `amqp-password`); kept
    /// across sessions, so a new session starts with the node after the one
    /// the last session ended on ([`connector`]).
    pub rabbitmq: Connector,
    pub logger: LoggerClient,
    /// The log entry rules' limits (`limits.*`).
    pub limits: LogLimits,
    pub breaker: Arc<Breaker>,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
}

/// Why a session ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(String),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("cannot start consuming: {0}")]
    Consume(#[source] lapin::Error),
    #[error("lost the connection to RabbitMQ: {0}")]
    Lost(#[source] lapin::Error),
    #[error("RabbitMQ cancelled the consumer (was the queue deleted?)")]
    Cancelled,
}

/// Per-process state that outlives a session.
pub struct Progress {
    /// The queue kind the server supports, learnt on the first declare.
    pub queue_kind: QueueKind,
    /// READY=1 goes out once, when the first session starts consuming.
    pub ready_sent: bool,
    /// Reconnect delays; reset once a session consumed.
    pub reconnect: Backoff,
}

/// Connects, declares and consumes until the connection fails (`Err`) or
/// shutdown was requested and in-flight deliveries were settled (`Ok`).
pub async fn session(context: &Arc<Context>, progress: &mut Progress) -> Result<(), SessionError> {
    let connection = context
        .rabbitmq
        .connect()
        .await
        .map_err(|err| SessionError::Connect(err.to_string()))?;

    let outcome = consume(context, &connection, progress).await;
    // Unacknowledged deliveries are requeued by RabbitMQ when the connection
    // closes.
    link::close(&connection, "bye").await;
    outcome
}

/// The listener's connector: no recovery, since a broken connection ends the
/// session, whose deliveries RabbitMQ requeues, and the next session declares
/// everything again (on the next node of a cluster that answers).
pub fn connector(rabbitmq: AmqpEndpoint) -> Connector {
    Connector::new(rabbitmq, "switchboard-listener", CONNECT_TIMEOUT).without_recovery()
}

async fn consume(
    context: &Arc<Context>,
    connection: &Connection,
    progress: &mut Progress,
) -> Result<(), SessionError> {
    let amqp = &context.amqp;
    let channel = topology::declare(connection, amqp, &mut progress.queue_kind).await?;
    let dead_letters = Arc::new(
        DeadLetters::open(connection, &amqp.dead_letter_exchange)
            .await
            .map_err(SessionError::Consume)?,
    );
    channel
        .basic_qos(amqp.prefetch, BasicQosOptions::default())
        .await
        .map_err(SessionError::Consume)?;
    let consumer_tag = ShortString::from(format!(
        "switchboard-listener-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let mut consumer = channel
        .basic_consume(
            ShortString::from(amqp.queue.as_str()),
            consumer_tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(SessionError::Consume)?;

    tracing::info!(
        queue = %amqp.queue,
        kind = ?progress.queue_kind,
        prefetch = amqp.prefetch,
        "consuming"
    );
    progress.reconnect.reset();
    context.stats.set_phase(Phase::Consuming);
    if !progress.ready_sent {
        lifecycle::ready();
        progress.ready_sent = true;
    }

    let queue_kind = progress.queue_kind;
    // Dropping the set (when the connection is lost) aborts what is in
    // flight: those deliveries can no longer be acknowledged anyway.
    let mut in_flight = JoinSet::new();
    let shutdown = context.shutdown.requested();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    let context = context.clone();
                    let traced = delivery_span(&delivery);
                    let dead_letters = dead_letters.clone();
                    in_flight.spawn(
                        traced.instrument(handle(context, dead_letters, delivery, queue_kind)),
                    );
                }
                Some(Err(err)) => return Err(SessionError::Lost(err)),
                None => return Err(SessionError::Cancelled),
            },
            Some(finished) = in_flight.join_next() => {
                if let Err(err) = finished
                    && err.is_panic()
                {
                    tracing::error!(error = %err, "a delivery task panicked; its message will be redelivered");
                }
            }
            () = &mut shutdown => break,
        }
    }

    // Shutdown: take no more deliveries, settle the ones in flight (the
    // logger timeout bounds each), then let the caller close the connection.
    context.stats.set_phase(Phase::Stopping);
    if let Err(err) = channel
        .basic_cancel(consumer_tag, BasicCancelOptions::default())
        .await
    {
        tracing::debug!(error = %err, "cancelling the consumer");
    }
    let pending = in_flight.len();
    if pending > 0 {
        tracing::info!(pending, "waiting for deliveries in flight");
    }
    while in_flight.join_next().await.is_some() {}
    if let Err(err) = channel.close(200, ShortString::from("shutting down")).await {
        tracing::debug!(error = %err, "closing the channel");
    }
    Ok(())
}

fn delivery_span(delivery: &Delivery) -> switchboard_runtime::telemetry::Traced {
    let properties = &delivery.properties;
    let message_id = properties.message_id().as_ref().map(|id| id.to_string());
    let request_id = properties
        .headers()
        .as_ref()
        .and_then(|headers| event::header_text(headers, event::REQUEST_ID_HEADER));
    switchboard_runtime::amqp::trace::entry(properties.headers().as_ref()).span(
        SpanKind::Consumer,
        format_args!("{} process", delivery.routing_key),
        || {
            tracing::info_span!(
                "delivery",
                routing_key = %delivery.routing_key,
                message_id = message_id.as_deref().unwrap_or(""),
                request_id = request_id.as_deref().unwrap_or(""),
                trace_id = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
                otel.name = tracing::field::Empty,
            )
        },
    )
}

/// Forwards one delivery and settles it.
async fn handle(
    context: Arc<Context>,
    dead_letters: Arc<DeadLetters>,
    delivery: Delivery,
    queue_kind: QueueKind,
) {
    let _in_flight = context.stats.in_flight();
    let event = match Event::from_delivery(&delivery, &context.limits) {
        Ok(event) => event,
        Err(why) => {
            let code = match why {
                event::Malformed::Invalid(_) => dead_letter::Code::Invalid,
                _ => dead_letter::Code::Malformed,
            };
            tracing::warn!(reason = %why, "dead-lettering a message that is no valid log entry");
            dead_letter(&context, &dead_letters, &delivery, code, &why.to_string()).await;
            return;
        }
    };
    loop {
        // Shutdown releases deliveries held at the gate: unacknowledged, they
        // go back to the queue when the connection closes.
        let ticket = tokio::select! {
            ticket = context.breaker.pass() => ticket,
            () = context.shutdown.requested() => return,
        };
        let outcome = context
            .logger
            .forward(&event.entry, event.request_id.as_deref())
            .await;
        match outcome {
            Ok(()) => {
                ticket.succeeded();
                context.stats.stored();
                if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
                    // Stored but not acknowledged: it will be delivered again
                    // and de-duplicated by its id (see `event`).
                    tracing::warn!(error = %err, "stored, but the acknowledgement did not reach RabbitMQ");
                }
                return;
            }
            Err(ForwardError::Refused(why)) => {
                ticket.succeeded();
                tracing::warn!(reason = %why, "dead-lettering a message the logger refused");
                dead_letter(
                    &context,
                    &dead_letters,
                    &delivery,
                    dead_letter::Code::Invalid,
                    &why,
                )
                .await;
                return;
            }
            Err(ForwardError::Conflict(why)) => {
                ticket.succeeded();
                tracing::warn!(reason = %why, "dead-lettering an event whose id holds another entry");
                dead_letter(
                    &context,
                    &dead_letters,
                    &delivery,
                    dead_letter::Code::Conflict,
                    &why,
                )
                .await;
                return;
            }
            Err(ForwardError::Unavailable(why)) if ticket.pass() == Pass::Probe => {
                // The logger is still down: this message is not at fault, so
                // it waits again without spending a delivery.
                let retry_in = ticket.failed();
                context.stats.retried();
                tracing::warn!(reason = %why, ?retry_in, "the logger is still unavailable");
            }
            Err(ForwardError::Unavailable(why)) => {
                let backoff = ticket.failed();
                requeue(&context, &delivery, queue_kind, &why, backoff).await;
                return;
            }
        }
    }
}

/// Nack with requeue after a failure with the gate open. On a quorum queue
/// the nack that exceeds the delivery limit dead-letters the message.
async fn requeue(
    context: &Context,
    delivery: &Delivery,
    queue_kind: QueueKind,
    why: &str,
    backoff: Option<Duration>,
) {
    let deliveries = event::delivery_count(delivery) + 1;
    let limit = u64::from(context.amqp.delivery_limit);
    if queue_kind == QueueKind::Quorum && deliveries > limit {
        tracing::error!(
            reason = %why,
            deliveries,
            "not stored after amqp.delivery_limit deliveries; RabbitMQ dead-letters it now"
        );
        context.stats.dead_lettered();
    } else {
        tracing::warn!(
            reason = %why,
            deliveries,
            ?backoff,
            "not stored; requeued for another attempt"
        );
        context.stats.retried();
    }
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(err) = delivery.acker.nack(requeue).await {
        tracing::debug!(error = %err, "nack failed; RabbitMQ requeues it with the connection");
    }
}

/// Dead-letters `delivery` with `reason` in its headers: a copy to the
/// dead-letter exchange, then the ack. If the copy cannot be published, a
/// nack without requeue (the queue's dead-letter exchange takes the message,
/// without the reason).
async fn dead_letter(
    context: &Context,
    dead_letters: &DeadLetters,
    delivery: &Delivery,
    code: dead_letter::Code,
    reason: &str,
) {
    context.stats.dead_lettered();
    match dead_letters.publish(delivery, code, reason).await {
        Ok(()) => {
            if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
                // Redelivered, then dead-lettered again: twice in the
                // dead-letter queue, never lost.
                tracing::warn!(error = %err, "dead-lettered, but the acknowledgement did not reach RabbitMQ");
            }
            return;
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot publish the dead letter with its reason; rejecting it instead");
        }
    }
    let reject = BasicNackOptions {
        requeue: false,
        ..BasicNackOptions::default()
    };
    if let Err(err) = delivery.acker.nack(reject).await {
        tracing::warn!(error = %err, "dead-lettering failed; the message will be redelivered");
    }
}
