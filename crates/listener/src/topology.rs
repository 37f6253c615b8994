//! The exchanges, queues and bindings the listener needs, declared (idempotently)
//! on every connect so that a fresh or wiped RabbitMQ works without set-up.
//!
//! - `amqp.exchange` (`logs_topic`): durable topic exchange producers publish to;
//! - `amqp.queue` (`logs`): durable quorum queue with `x-delivery-limit`,
//!   `x-dead-letter-exchange` and `x-quorum-initial-group-size`
//!   (`amqp.quorum_group_size`, 3: a member on three nodes of a cluster;
//!   RabbitMQ caps it at the cluster's size), bound to `log.INFO`,
//!   `log.WARNING`, `log.ERROR`;
//! - `amqp.dead_letter_exchange` (`logs_topic.dlx`): durable fanout exchange,
//!   bound to `amqp.dead_letter_queue` (`logs.dead`), a durable quorum queue
//!   with the same group size, so that dead letters survive a node too.
//!
//! Servers without quorum queues (RabbitMQ < 3.8) refuse the quorum declare;
//! the listener then declares classic durable queues, the work queue with the
//! same dead-letter exchange, and warns that the delivery limit does not apply.
//!
//! Queues an earlier version declared are used as they are: RabbitMQ refuses
//! a redeclare with other arguments, and the initial group size counts only
//! when a queue is created, so a quorum queue declared without one (or with
//! another) is declared again without it (or passively), and a classic
//! `logs.dead` stays classic, with a warning.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

use crate::settings::Amqp;

/// The routing keys of the wire contract.
pub use switchboard_wire::events::ROUTING_KEYS;

/// The quorum queue argument of the number of members a queue starts with.
pub const GROUP_SIZE_ARGUMENT: &str = "x-quorum-initial-group-size";

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

    // The work queue first: it tells whether the server has quorum queues.
    let channel = declare_work_queue(connection, channel, settings, kind).await?;
    let channel = declare_dead_letter_queue(connection, channel, settings, *kind).await?;
    channel
        .queue_bind(
            name(&settings.dead_letter_queue),
            name(&settings.dead_letter_exchange),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
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
        let refusal = match declare_quorum(
            connection,
            channel,
            &settings.queue,
            queue_arguments(settings, QueueKind::Quorum),
            work_arguments(settings, QueueKind::Quorum, 0),
        )
        .await?
        {
            Ok(channel) => return Ok(channel),
            Err(refusal) => refusal,
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

/// Declares the dead-letter queue: a quorum queue where the work queue is
/// one, else classic. A classic one an earlier version declared stays
/// classic, with a warning: in a cluster its dead letters live on one node.
async fn declare_dead_letter_queue(
    connection: &Connection,
    channel: Channel,
    settings: &Amqp,
    kind: QueueKind,
) -> Result<Channel, TopologyError> {
    let queue = &settings.dead_letter_queue;
    let what = || format!("queue {queue:?}");
    let (channel, quorum_refusal) = match kind {
        QueueKind::Classic => (channel, None),
        QueueKind::Quorum => {
            match declare_quorum(
                connection,
                channel,
                queue,
                dead_letter_arguments(QueueKind::Quorum, settings.quorum_group_size),
                dead_letter_arguments(QueueKind::Quorum, 0),
            )
            .await?
            {
                Ok(channel) => return Ok(channel),
                Err(refusal) if refusal.connection_closed => {
                    return Err(TopologyError::Conflict {
                        what: what(),
                        server: refusal.message,
                    });
                }
                // The refused declare closed its channel.
                Err(refusal) => (connection.create_channel().await?, Some(refusal)),
            }
        }
    };
    let classic = dead_letter_arguments(QueueKind::Classic, 0);
    match attempt(&channel, queue, classic).await? {
        None => {
            if let Some(refusal) = &quorum_refusal {
                tracing::warn!(
                    queue = %queue,
                    server = %refusal.message,
                    "the dead-letter queue exists as a classic queue (an earlier version declared it): \
                     in a RabbitMQ cluster its dead letters live on one node; to replicate them, move \
                     them elsewhere and delete the queue, and the listener declares a quorum queue"
                );
            }
            Ok(channel)
        }
        Some(classic) => Err(TopologyError::Conflict {
            what: what(),
            server: match quorum_refusal {
                Some(quorum) => format!(
                    "{}; as a classic queue: {}",
                    quorum.message, classic.message
                ),
                None => classic.message,
            },
        }),
    }
}

/// Declares quorum queue `queue` with `arguments`, which carry the initial
/// group size when one is configured; `without_size` are the same without it.
///
/// The group size counts only when RabbitMQ creates the queue, but RabbitMQ
/// refuses a redeclare whose size differs from the queue's (an earlier
/// version declared none): the queue is then declared again without one, and
/// passively if it has another. `Ok(Err(refusal))`: refused for another
/// reason (the refused declare's channel is closed).
async fn declare_quorum(
    connection: &Connection,
    channel: Channel,
    queue: &str,
    arguments: FieldTable,
    without_size: FieldTable,
) -> Result<Result<Channel, Refusal>, TopologyError> {
    let Some(refusal) = attempt(&channel, queue, arguments).await? else {
        return Ok(Ok(channel));
    };
    if refusal.connection_closed || !refusal.names(GROUP_SIZE_ARGUMENT) {
        return Ok(Err(refusal));
    }
    let existing = |how: &str| {
        tracing::info!(
            queue,
            how,
            "the queue exists with another {GROUP_SIZE_ARGUMENT} (RabbitMQ applies it only when it \
             creates a queue): its members stay as they are; `rabbitmq-queues grow` adds some"
        );
    };
    let channel = connection.create_channel().await?;
    let Some(again) = attempt(&channel, queue, without_size).await? else {
        existing("declared without it");
        return Ok(Ok(channel));
    };
    if again.connection_closed || !again.names(GROUP_SIZE_ARGUMENT) {
        return Ok(Err(again));
    }
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            name(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    existing("declared passively");
    Ok(Ok(channel))
}

/// One durable declare: `None` when it was accepted, the refusal when the
/// server refused it on principle (its channel is then closed).
async fn attempt(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
) -> Result<Option<Refusal>, TopologyError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    match channel.queue_declare(name(queue), options, arguments).await {
        Ok(_) => Ok(None),
        Err(err) => match refusal(&err) {
            Some(refusal) => Ok(Some(refusal)),
            None => Err(err.into()),
        },
    }
}

/// The work queue's `x-` arguments: where dead letters go and, for quorum
/// queues, after how many deliveries and on how many nodes it starts.
pub fn queue_arguments(settings: &Amqp, kind: QueueKind) -> FieldTable {
    work_arguments(settings, kind, settings.quorum_group_size)
}

/// [`queue_arguments`] with `group_size` (0: none).
fn work_arguments(settings: &Amqp, kind: QueueKind, group_size: u32) -> FieldTable {
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
        insert_group_size(&mut arguments, group_size);
    }
    arguments
}

/// The dead-letter queue's `x-` arguments: a quorum queue starting on
/// `group_size` nodes (0: the server's default), or none at all.
pub fn dead_letter_arguments(kind: QueueKind, group_size: u32) -> FieldTable {
    let mut arguments = FieldTable::default();
    if kind == QueueKind::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        insert_group_size(&mut arguments, group_size);
    }
    arguments
}

/// `x-quorum-initial-group-size`, unless `group_size` is 0 (the server's
/// default: `quorum_cluster_size`, 3).
fn insert_group_size(arguments: &mut FieldTable, group_size: u32) {
    if group_size > 0 {
        arguments.insert(
            GROUP_SIZE_ARGUMENT.into(),
            AMQPValue::LongLongInt(i64::from(group_size)),
        );
    }
}

/// A declare the server refused on principle (as opposed to a lost connection).
struct Refusal {
    message: String,
    /// NOT_IMPLEMENTED is a connection-level error: the server closed the
    /// whole connection, not just the channel.
    connection_closed: bool,
}

impl Refusal {
    /// Whether the server named `argument` as the one that differs
    /// ("inequivalent arg 'x-…' for queue …").
    fn names(&self, argument: &str) -> bool {
        self.message.contains(&format!("'{argument}'"))
    }
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
        assert_eq!(
            inner.get(GROUP_SIZE_ARGUMENT),
            Some(&AMQPValue::LongLongInt(3))
        );
        let classic = queue_arguments(&settings, QueueKind::Classic);
        assert_eq!(classic.inner().len(), 1);
        assert!(classic.contains_key("x-dead-letter-exchange"));
    }

    #[test]
    fn the_group_size_goes_to_both_quorum_queues_unless_it_is_zero() {
        let mut settings = Amqp {
            quorum_group_size: 5,
            ..Amqp::default()
        };
        let dead = dead_letter_arguments(QueueKind::Quorum, settings.quorum_group_size);
        assert_eq!(
            dead.inner().get(GROUP_SIZE_ARGUMENT),
            Some(&AMQPValue::LongLongInt(5))
        );
        assert_eq!(
            dead.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert!(
            dead_letter_arguments(QueueKind::Classic, 5)
                .inner()
                .is_empty()
        );
        settings.quorum_group_size = 0;
        assert!(!queue_arguments(&settings, QueueKind::Quorum).contains_key(GROUP_SIZE_ARGUMENT));
    }

    #[test]
    fn overlong_names_are_cut_on_a_char_boundary() {
        let long = "é".repeat(200);
        assert!(name(&long).as_str().len() <= 255);
        assert_eq!(name("logs").as_str(), "logs");
    }
}
