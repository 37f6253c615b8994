//! A consumer on `logs_topic` for tests that check what a service published
//! (feature `amqp`): the only async part of the testkit, so the rest stays
//! usable without a runtime.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer, Queue};

/// Declares `logs_topic` (with the services' own arguments: declaring twice
/// is harmless, and the binding needs the exchange now) and a queue bound to
/// it with `log.#`: exclusive and server-named, or durable under
/// `durable_name`. Panics when RabbitMQ refuses.
pub async fn bind_queue(channel: &Channel, durable_name: Option<&str>) -> Queue {
    channel
        .exchange_declare(
            "logs_topic".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    let options = match durable_name {
        Some(_) => QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        None => QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
    };
    let queue = channel
        .queue_declare(
            durable_name.unwrap_or("").into(),
            options,
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    channel
        .queue_bind(
            queue.name().clone(),
            "logs_topic".into(),
            "log.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind queue");
    queue
}

/// A queue bound to the `logs_topic` exchange with `log.#`, consumed without
/// acknowledgements: exclusive and server-named, or durable under
/// `durable_name` (it then survives a RabbitMQ restart and keeps what was
/// published while the tap was away).
pub struct EventTap {
    pub connection: Connection,
    pub consumer: Consumer,
}

impl EventTap {
    /// Panics when RabbitMQ refuses: a test cannot go on without its tap.
    pub async fn open(amqp_url: &str, durable_name: Option<&str>) -> Self {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to rabbitmq");
        let channel = connection.create_channel().await.expect("channel");
        let queue = bind_queue(&channel, durable_name).await;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "test-tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Self {
            connection,
            consumer,
        }
    }

    /// The next delivery, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Delivery> {
        match tokio::time::timeout(wait, self.consumer.next()).await {
            Ok(Some(Ok(delivery))) => Some(delivery),
            Ok(Some(Err(err))) => panic!("consumer failed: {err}"),
            Ok(None) | Err(_) => None,
        }
    }
}
