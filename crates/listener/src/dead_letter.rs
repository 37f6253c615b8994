//! Dead letters that say why.
//!
//! RabbitMQ's own dead-lettering (a `basic.nack` without requeue) records
//! only *that* a message was rejected (`x-death` reason `rejected`), and a
//! nack cannot add headers. For the messages the listener refuses for good —
//! not an event, not a valid log entry, an idempotency id already stored with
//! other content — it instead publishes a copy to the dead-letter exchange
//! itself, with the original body and properties plus
//!
//! | header | value |
//! |---|---|
//! | [`REASON_HEADER`] `x-switchboard-reason` | the reason in words, e.g. `invalid log entry: name is 10000 bytes long; the limit is 256 bytes` |
//! | [`CODE_HEADER`] `x-switchboard-reason-code` | `malformed`, `invalid` or `conflict` |
//!
//! and acknowledges the original only once RabbitMQ confirmed the copy. If
//! the copy cannot be published, the message is nacked as before: it is still
//! dead-lettered, only without the reason. A crash between the confirm and
//! the ack redelivers the message, which is then dead-lettered again (a dead
//! letter may appear twice; it is never lost). Messages over the delivery
//! limit are still dead-lettered by RabbitMQ (`x-death` reason
//! `delivery_limit`).

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection};

/// The header with the reason in words.
pub const REASON_HEADER: &str = "x-switchboard-reason";
/// The header with the kind of reason, for filtering.
pub const CODE_HEADER: &str = "x-switchboard-reason-code";
/// Reasons are cut to this many bytes (they quote parser errors).
const MAX_REASON_BYTES: usize = 1024;
/// How long to wait for RabbitMQ to confirm a dead letter.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The body is not an event (`{"name","data"}` JSON within the size limit).
    Malformed,
    /// An event, but not a log entry the logger stores (the listener's or the
    /// logger's verdict).
    Invalid,
    /// Its id is stored already with another name or data.
    Conflict,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Malformed => "malformed",
            Code::Invalid => "invalid",
            Code::Conflict => "conflict",
        }
    }
}

/// A confirm-mode channel for publishing dead letters, one per session.
pub struct DeadLetters {
    channel: Channel,
    exchange: ShortString,
}

impl DeadLetters {
    /// Opens the channel on `connection`; `exchange` is the dead-letter
    /// exchange the topology declared.
    pub async fn open(connection: &Connection, exchange: &str) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: ShortString::from(exchange),
        })
    }

    /// Publishes a copy of `delivery` with the reason headers and waits for
    /// the confirm. `Err` says why not (the caller falls back to a nack).
    pub async fn publish(
        &self,
        delivery: &Delivery,
        code: Code,
        reason: &str,
    ) -> Result<(), String> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(REASON_HEADER),
            AMQPValue::LongString(LongString::from(cut(reason, MAX_REASON_BYTES))),
        );
        headers.insert(
            ShortString::from(CODE_HEADER),
            AMQPValue::LongString(LongString::from(code.as_str())),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let publish = async {
            self.channel
                .basic_publish(
                    self.exchange.clone(),
                    delivery.routing_key.clone(),
                    // Comes back if nothing is bound to the exchange: then
                    // the nack fallback is no worse.
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await?
                .await
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
            Err(_) => Err(format!("no confirm within {CONFIRM_TIMEOUT:?}")),
            Ok(Err(err)) => Err(err.to_string()),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                Err(format!(
                    "returned unroutable: {} {}",
                    returned.reply_code, returned.reply_text
                ))
            }
            Ok(Ok(Confirmation::Nack(None))) => Err("RabbitMQ refused it (nack)".to_owned()),
            Ok(Ok(Confirmation::NotRequested)) => Err("the channel is not in confirm mode".into()),
        }
    }
}

/// `text`, at most `max` bytes, cut on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ääää", 5), "ää");
        assert_eq!(Code::Conflict.as_str(), "conflict");
    }
}
