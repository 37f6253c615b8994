//! The exchanges, queues and bindings the listener needs, declared (idempotently)
//! on every connect so that a fresh or wiped RabbitMQ works without set-up.
//!
//! - `amqp.exchange` (`logs_topic`): durable topic exchange producers publish to;
//! - `amqp.dead_letter_exchange` (`logs_topic.dlx`): durable fanout exchange,
//!   bound to the durable `amqp.dead_letter_queue` (`logs.dead`);
//! - `amqp.queue` (`logs`): durable quorum queue with `x-delivery-limit` and
//!   `x-dead-letter-exchange`, bound to `log.INFO`, `log.WARNING`, `log.ERROR`.
//!
//! Servers without quorum queues (RabbitMQ < 3.8) refuse the quorum declare;
//! the listener then declares a classic durable queue with the same
//! dead-letter exchange and warns that the delivery limit does not apply.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

use crate::settings::Amqp;

/// The routing keys of the wire contract.
pub use switchboard_wire::events::ROUTING_KEYS;

/// Which kind of queue the listener consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// Replicated, with a delivery limit; what every RabbitMQ ≥ 3.8 gets.
    Quorum,
    /// The fallback for servers without quorum queues: no delivery limit.
    Classic,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// RabbitMQ went away while declaring; reconnecting will do.
    #[error("declaring the topology failed: {0}")]
    Amqp(#[from] lapin::Error),
    /// The quorum declare was refused in a way that means "not supported here";
    /// the connection must be reopened before the classic declare.
    #[error("the server refused a quorum queue ({0}); retrying with a classic queue")]
    QuorumUnsupported(String),
    /// A queue or exchange already exists with other properties. No retry
    /// can fix that: an operator must delete it or configure another name.
    #[error(
        "{what} already exists with other properties than the listener declares: {server}. \
         Delete it (after moving its messages) or configure another name"
    )]
    Conflict { what: String, server: String },
}

/// Declares everything and returns a channel ready for `basic_qos`/`basic_consume`.
///
/// `kind` is the queue kind to try; it is switched to [`QueueKind::Classic`]
/// when the server turns out not to support quorum queues, and stays so for
/// later reconnects.
pub async fn declare(
    connection: &Connection,
    settings: &Amqp,
    kind: &mut QueueKind,
) -> Result<Channel, TopologyError> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            name(&settings.exchange),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|err| conflict(err, format!("exchange {:?}", settings.exchange)))?;
    channel
        .exchange_declare(
            name(&settings.dead_letter_exchange),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|err| conflict(err, format!("exchange {:?}", settings.dead_letter_exchange)))?;
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            name(&settings.dead_letter_queue),
            durable_queue,
            FieldTable::default(),
        )
        .await
        .map_err(|err| conflict(err, format!("queue {:?}", settings.dead_letter_queue)))?;
    channel
        .queue_bind(
            name(&settings.dead_letter_queue),
            name(&settings.dead_letter_exchange),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let channel = declare_work_queue(connection, channel, settings, kind).await?;
    for key in ROUTING_KEYS {
        channel
            .queue_bind(
                name(&settings.queue),
                name(&settings.exchange),
                ShortString::from(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(channel)
}

/// Declares `amqp.queue` as `kind`, falling back from quorum to classic.
/// Returns the channel to go on with (a fresh one when the server closed the
/// first).
async fn declare_work_queue(
    connection: &Connection,
    channel: Channel,
    settings: &Amqp,
    kind: &mut QueueKind,
) -> Result<Channel, TopologyError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    if *kind == QueueKind::Quorum {
        let quorum = channel
            .queue_declare(
                name(&settings.queue),
                options,
                queue_arguments(settings, QueueKind::Quorum),
            )
            .await;
        let refusal = match quorum {
            Ok(_) => return Ok(channel),
            Err(err) => match refusal(&err) {
                Some(refusal) => refusal,
                None => return Err(err.into()),
            },
        };
        tracing::warn!(
            queue = %settings.queue,
            server = %refusal.message,
            "the server refused a quorum queue; falling back to a classic durable queue \
             (amqp.delivery_limit does not apply to it)"
        );
        *kind = QueueKind::Classic;
        if refusal.connection_closed || !connection.status().connected() {
            return Err(TopologyError::QuorumUnsupported(refusal.message));
        }
        // A refused declare closes the channel; the connection lives on.
        let channel = connection.create_channel().await?;
        return declare_classic(channel, settings, options, Some(refusal.message)).await;
    }
    declare_classic(channel, settings, options, None).await
}

async fn declare_classic(
    channel: Channel,
    settings: &Amqp,
    options: QueueDeclareOptions,
    quorum_refusal: Option<String>,
) -> Result<Channel, TopologyError> {
    match channel
        .queue_declare(
            name(&settings.queue),
            options,
            queue_arguments(settings, QueueKind::Classic),
        )
        .await
    {
        Ok(_) => Ok(channel),
        Err(err) => match refusal(&err) {
            // The quorum refusal usually names the argument at fault
            // ("inequivalent arg 'x-delivery-limit'"); quote both.
            Some(classic) => Err(TopologyError::Conflict {
                what: format!("queue {:?}", settings.queue),
                server: match quorum_refusal {
                    Some(quorum) => format!("{quorum}; as a classic queue: {}", classic.message),
                    None => classic.message,
                },
            }),
            None => Err(err.into()),
        },
    }
}

/// The work queue's `x-` arguments: where dead letters go and, for quorum
/// queues, after how many deliveries.
pub fn queue_arguments(settings: &Amqp, kind: QueueKind) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(settings.dead_letter_exchange.as_str().into()),
    );
    if kind == QueueKind::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(settings.delivery_limit)),
        );
    }
    arguments
}

/// A declare the server refused on principle (as opposed to a lost connection).
struct Refusal {
    message: String,
    /// NOT_IMPLEMENTED is a connection-level error: the server closed the
    /// whole connection, not just the channel.
    connection_closed: bool,
}

fn refusal(err: &lapin::Error) -> Option<Refusal> {
    let ErrorKind::ProtocolError(amqp) = err.kind() else {
        return None;
    };
    let connection_closed = match amqp.kind() {
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => false,
        AMQPErrorKind::Hard(AMQPHardError::NOTIMPLEMENTED) => true,
        _ => return None,
    };
    Some(Refusal {
        message: amqp.get_message().as_str().to_owned(),
        connection_closed,
    })
}

/// PRECONDITION_FAILED on an exchange or the dead-letter queue means it
/// exists with other properties; anything else is passed on as is.
fn conflict(err: lapin::Error, what: String) -> TopologyError {
    match refusal(&err) {
        Some(Refusal {
            message,
            connection_closed: false,
        }) => TopologyError::Conflict {
            what,
            server: message,
        },
        _ => TopologyError::Amqp(err),
    }
}

/// Names were checked to be at most 255 bytes when the settings were loaded;
/// a longer one (impossible here) is cut rather than panicking in lapin.
fn name(text: &str) -> ShortString {
    ShortString::try_new(text).unwrap_or_else(|_| {
        let mut end = 255;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ShortString::from(&text[..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_arguments_carry_the_limit_and_the_dead_letter_exchange() {
        let settings = Amqp::default();
        let quorum = queue_arguments(&settings, QueueKind::Quorum);
        let inner = quorum.inner();
        assert_eq!(
            inner.get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            inner.get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(
            inner.get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("logs_topic.dlx".into()))
        );
        let classic = queue_arguments(&settings, QueueKind::Classic);
        assert_eq!(classic.inner().len(), 1);
        assert!(classic.contains_key("x-dead-letter-exchange"));
    }

    #[test]
    fn overlong_names_are_cut_on_a_char_boundary() {
        let long = "é".repeat(200);
        assert!(name(&long).as_str().len() <= 255);
        assert_eq!(name("logs").as_str(), "logs");
    }
}
