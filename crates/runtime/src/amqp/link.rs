//! The one way the services talk to RabbitMQ.
//!
//! * [`Connector`] opens a connection: a TCP probe first, one timeout for the
//!   whole attempt, lapin's recovery policy, and lapin's I/O on a runtime of
//!   its own (see [`lapin_runtime`] for why). With several nodes (a cluster,
//!   [`AmqpEndpoint::with_nodes`]) it tries them in turn, and so does
//!   lapin's own recovery: lapin asks the connector for every new TCP
//!   stream, and each new stream starts with the node after the last one,
//!   so a connection whose node died is recovered on another node.
//! * [`ConfirmChannel`] is a publisher's connection: one channel in confirm
//!   mode with its topic exchange declared, kept open by
//!   [`ConfirmChannel::supervise`], which reconnects with back-off when
//!   lapin's own recovery gives up, reports a [`LinkState`], and closes the
//!   connection within [`CLOSE_TIMEOUT`] at shutdown.
//! * [`Link::publish_all`] and [`ConfirmChannel::publish`] publish `mandatory`
//!   messages and wait for RabbitMQ's confirms, so a message is only ever
//!   reported as sent once RabbitMQ has it ([`Outcome`]).
//!
//! The broker (one publish per request) and auth (batches from its queue of
//! login events) publish through [`ConfirmChannel`]; the listener, whose
//! consuming session ends with its connection, opens its connections with
//! [`Connector::connect`] and no recovery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use async_rs::Runtime;
use async_rs::traits::{Reactor, RuntimeKit};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream, OwnedTLSConfig};
use lapin::types::{FieldTable, LongString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{AmqpEndpoint, Node};
use crate::Shutdown;
use crate::backoff::Backoff;
use crate::metrics::{Metrics, PublishMetrics, PublishOutcome};

/// lapin's own recovery of a broken connection: a few quick attempts, so a
/// RabbitMQ restart is bridged within seconds. A longer outage is the
/// supervisor's job, with back-off and a state the services report.
const RECOVERY_MIN_DELAY: Duration = Duration::from_millis(100);
const RECOVERY_MAX_DELAY: Duration = Duration::from_secs(1);
const RECOVERY_ATTEMPTS: usize = 4;
/// The supervisor's delays between two connection attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(200);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// lapin reports no "recovery gave up" event to wait on; a status look this
/// often notices it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a polite close may take before the connection is simply dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A link RabbitMQ refused a publish on is replaced ([`ConfirmChannel`]),
/// but one at least this old: while a quorum queue elects a leader every
/// new channel is refused too, and a new connection per refusal would only
/// churn.
const REPLACE_AFTER_REFUSAL: Duration = Duration::from_millis(250);

/// Why a connection could not be opened or used. The messages never contain
/// the URL or its credentials; callers log [`AmqpEndpoint::address`] beside.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP probe failed: nothing accepts connections there.
    #[error("{0}")]
    Unreachable(String),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("cannot declare exchange {exchange}: {source}")]
    Declare {
        exchange: String,
        #[source]
        source: lapin::Error,
    },
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("not connected (reconnecting in the background)")]
    NotConnected,
    #[error("the connection was lost and is being recovered")]
    Recovering,
    #[error("cannot start the AMQP runtime: {0}")]
    Runtime(String),
}

impl LinkError {
    /// Whether lapin's recovery may bring the channel back after this error.
    pub fn can_be_recovered(&self) -> bool {
        match self {
            Self::Amqp(err) => err.can_be_recovered(),
            Self::NotConnected | Self::Recovering => true,
            _ => false,
        }
    }
}

/// What RabbitMQ did with one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed: a queue has it (persistent messages: on disk).
    Confirmed,
    /// Confirmed, but no queue is bound for its routing key, so it is gone
    /// (the publish is `mandatory`, so RabbitMQ said so instead of dropping
    /// it silently).
    Unroutable { reply_code: u16, reply_text: String },
    /// RabbitMQ refused it (nack); publishing it again may succeed.
    Refused,
}

impl Outcome {
    fn from_confirmation(confirmation: Confirmation) -> Self {
        match confirmation {
            Confirmation::Ack(None) => Self::Confirmed,
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Self::Unroutable {
                    reply_code: returned.reply_code,
                    reply_text: returned.reply_text.to_string(),
                }
            }
            // Every channel here is in confirm mode, so "not requested" would
            // mean nothing confirmed it: treated like a refusal, never as sent.
            Confirmation::Nack(None) | Confirmation::NotRequested => Self::Refused,
        }
    }
}

/// A message to publish on a [`Link`]'s exchange.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
}

/// How a [`Link::publish_all`] went: `outcomes[i]` is `None` for a message
/// that was not settled (not published, or no confirm before the deadline);
/// `broken` is the first failure of the link, if any.
#[derive(Debug)]
pub struct Batch {
    pub outcomes: Vec<Option<Outcome>>,
    pub broken: Option<LinkError>,
}

/// Opens connections to one RabbitMQ, or to any node of a cluster.
///
/// Clones share where the next attempt starts, so a service that rebuilds
/// its connection does not go back to the node that just failed.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: AmqpEndpoint,
    connection_name: String,
    timeout: Duration,
    recover: bool,
    ring: Arc<NodeRing>,
}

/// The nodes a connector tries, and where the next round starts.
#[derive(Debug)]
struct NodeRing {
    nodes: Vec<Node>,
    /// The node a round tries first: the one the probe found, then the one
    /// after the node of the newest stream.
    next: AtomicUsize,
    /// The node of the newest stream; [`NodeRing::NONE`] before the first.
    current: AtomicUsize,
}

impl NodeRing {
    const NONE: usize = usize::MAX;

    fn new(nodes: &[Node]) -> Self {
        Self {
            nodes: nodes.to_vec(),
            next: AtomicUsize::new(0),
            current: AtomicUsize::new(Self::NONE),
        }
    }

    /// The nodes' indices in the order of one round: from `next`, wrapping.
    fn round(&self) -> impl Iterator<Item = usize> + use<> {
        let count = self.nodes.len();
        let start = self.next.load(Ordering::Relaxed) % count;
        (0..count).map(move |offset| (start + offset) % count)
    }

    /// The first node of a round that accepts a TCP connection within
    /// `within` (each); the lapin connection then starts with it.
    async fn probe(&self, within: Duration) -> Result<(), LinkError> {
        let mut failures = Vec::new();
        for index in self.round() {
            let node = &self.nodes[index];
            match probe_tcp(&node.to_string(), within).await {
                Ok(()) => {
                    self.next.store(index, Ordering::Relaxed);
                    return Ok(());
                }
                Err(err) if self.nodes.len() == 1 => return Err(err),
                Err(err) => {
                    tracing::debug!(%node, error = %err, "RabbitMQ node does not answer");
                    failures.push(format!("{node}: {err}"));
                }
            }
        }
        Err(LinkError::Unreachable(format!(
            "no RabbitMQ node answers ({})",
            failures.join("; ")
        )))
    }

    /// lapin's connect, for the first connection and every recovery: a TCP
    /// (TLS for `amqps`) stream to the first node of a round that takes one
    /// within `within`. `uri` is the endpoint's; only its host and port are
    /// replaced, since the handshake (user, vhost) is the same on every node.
    async fn stream<RK: RuntimeKit + Send + Sync>(
        &self,
        uri: AMQPUri,
        runtime: &Runtime<RK>,
        within: Duration,
    ) -> lapin::Result<AsyncTcpStream<<RK as Reactor>::TcpStream>> {
        let mut last = None;
        for index in self.round() {
            let node = &self.nodes[index];
            let mut node_uri = uri.clone();
            node_uri.authority.host.clone_from(&node.host);
            node_uri.authority.port = node.port;
            let tls = OwnedTLSConfig::default();
            // lapin runs this on our tokio runtime (`lapin_runtime`), whose
            // timers this timeout uses.
            let connect = node_uri.connect_with_config_async(tls.as_ref(), runtime);
            match tokio::time::timeout(within, connect).await {
                Ok(Ok(stream)) => {
                    self.next
                        .store((index + 1) % self.nodes.len(), Ordering::Relaxed);
                    let previous = self.current.swap(index, Ordering::Relaxed);
                    if previous != Self::NONE && previous != index {
                        tracing::info!(from = %self.nodes[previous], to = %node, "RabbitMQ connection moves to another node");
                    }
                    return Ok(stream);
                }
                Ok(Err(err)) => {
                    tracing::debug!(%node, error = %err, "RabbitMQ node does not answer");
                    last = Some(err);
                }
                Err(_) => {
                    tracing::debug!(%node, ?within, "RabbitMQ node did not answer in time");
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{node} took no connection within {} ms", within.as_millis()),
                    ));
                }
            }
        }
        Err(last
            .unwrap_or_else(|| std::io::Error::other("no RabbitMQ node is configured"))
            .into())
    }

    fn current(&self) -> Option<&Node> {
        self.nodes.get(self.current.load(Ordering::Relaxed))
    }
}

impl Connector {
    /// Connections named `connection_name` (shown by `rabbitmqctl
    /// list_connections`), each attempt bounded by `timeout`, recovered by
    /// lapin after a break.
    pub fn new(endpoint: AmqpEndpoint, connection_name: &str, timeout: Duration) -> Self {
        Self {
            ring: Arc::new(NodeRing::new(endpoint.nodes())),
            endpoint,
            connection_name: connection_name.to_owned(),
            timeout,
            recover: true,
        }
    }

    /// Connections that end when they break, for a consumer that starts a
    /// new session (and redeclares) itself.
    pub fn without_recovery(mut self) -> Self {
        self.recover = false;
        self
    }

    pub fn endpoint(&self) -> &AmqpEndpoint {
        &self.endpoint
    }

    /// The URL without credentials, for messages.
    pub fn address(&self) -> &str {
        self.endpoint.address()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The node of the newest connection (or recovery), once there was one.
    pub fn node(&self) -> Option<&Node> {
        self.ring.current()
    }

    /// One connection attempt: a probe of the nodes in turn (each within the
    /// timeout), then the AMQP handshake with the first that answered,
    /// within the timeout.
    pub async fn connect(&self) -> Result<Connection, LinkError> {
        // lapin retries a refused TCP connect in its I/O thread with the
        // recovery back-off, and goes on after our timeout gave up on it; a
        // plain probe first means lapin only starts once RabbitMQ listens.
        self.ring.probe(self.timeout).await?;
        let mut properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(self.connection_name.as_str()));
        if self.recover {
            properties = properties
                .configure_backoff(|backoff| {
                    backoff
                        .with_min_delay(RECOVERY_MIN_DELAY)
                        .with_max_delay(RECOVERY_MAX_DELAY)
                        .with_max_times(RECOVERY_ATTEMPTS)
                        .with_jitter()
                })
                .enable_auto_recover();
        }
        let ring = Arc::clone(&self.ring);
        let within = self.timeout;
        let connect = Connection::connector(
            self.endpoint.uri(),
            lapin_runtime()?,
            async move |uri, runtime| ring.stream(uri, &runtime, within).await,
            properties,
        );
        tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| LinkError::Timeout(self.timeout))?
            .map_err(LinkError::from)
    }
}

/// Closes `connection` politely within [`CLOSE_TIMEOUT`]; a dead peer cannot
/// hold the caller up, and an error closing a dead connection is expected.
pub async fn close(connection: &Connection, reason: &str) {
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "closing the AMQP connection"),
        Err(_) => tracing::debug!("closing the AMQP connection timed out"),
    }
}

/// A connection and its one channel, in confirm mode.
#[derive(Clone)]
pub struct Link {
    connection: Arc<Connection>,
    channel: Channel,
    opened: Instant,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("connected", &self.is_connected())
            .field("usable", &self.is_usable())
            .finish()
    }
}

impl Link {
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Connected, or lapin is recovering it.
    pub fn is_usable(&self) -> bool {
        let connection = self.connection.status();
        let channel = self.channel.status();
        (connection.connected() || connection.reconnecting())
            && (channel.connected() || channel.reconnecting())
    }

    /// Connected right now.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    fn is(&self, other: &Link) -> bool {
        Arc::ptr_eq(&self.connection, &other.connection)
    }

    /// Publishes every message (`mandatory`) on `exchange`, then waits for
    /// their confirms until `deadline`. Publishing stops at the first
    /// failure of the link; what was published before still gets its
    /// confirm looked at.
    pub async fn publish_all(
        &self,
        exchange: &str,
        messages: &[Message<'_>],
        deadline: Instant,
    ) -> Batch {
        let mut confirms = Vec::with_capacity(messages.len());
        let mut broken = None;
        for message in messages {
            match self.start_publish(exchange, message).await {
                Ok(confirm) => confirms.push(confirm),
                Err(err) => {
                    broken = Some(LinkError::Amqp(err));
                    break;
                }
            }
        }
        let mut outcomes = vec![None; messages.len()];
        for (outcome, confirm) in outcomes.iter_mut().zip(confirms) {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(confirmation)) => *outcome = Some(Outcome::from_confirmation(confirmation)),
                Ok(Err(err)) => {
                    broken.get_or_insert(LinkError::Amqp(err));
                }
                Err(_) => {
                    let waited = deadline.saturating_duration_since(Instant::now());
                    broken.get_or_insert(LinkError::Timeout(waited));
                }
            }
        }
        Batch { outcomes, broken }
    }

    async fn publish_one(&self, exchange: &str, message: &Message<'_>) -> lapin::Result<Outcome> {
        let confirmation = self.start_publish(exchange, message).await?.await?;
        Ok(Outcome::from_confirmation(confirmation))
    }

    async fn start_publish(
        &self,
        exchange: &str,
        message: &Message<'_>,
    ) -> lapin::Result<lapin::PublisherConfirm> {
        self.channel
            .basic_publish(
                exchange.into(),
                message.routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                message.body,
                message.properties.clone(),
            )
            .await
    }
}

/// A publisher's view of RabbitMQ, for logs and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The first connection attempt is under way.
    Connecting,
    Connected,
    /// RabbitMQ cannot be reached, refused us, or the connection is being
    /// recovered.
    Unreachable(String),
    /// The supervisor has shut down.
    Stopped,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connecting => f.write_str("connecting"),
            Self::Connected => f.write_str("connected"),
            Self::Unreachable(why) => write!(f, "unreachable ({why})"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// A publisher's connection: one channel in confirm mode on which a durable
/// topic exchange is declared, kept open by [`Self::supervise`].
pub struct ConfirmChannel {
    connector: Connector,
    exchange: String,
    link: RwLock<Option<Link>>,
    state: watch::Sender<LinkState>,
    /// Wakes the supervisor when a publisher found no usable link.
    wake: Notify,
    metrics: Option<PublishMetrics>,
}

impl std::fmt::Debug for ConfirmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmChannel")
            .field("address", &self.address())
            .field("exchange", &self.exchange)
            .field("state", &self.state())
            .finish()
    }
}

impl ConfirmChannel {
    /// Nothing connects before [`Self::supervise`] runs.
    pub fn new(connector: Connector, exchange: &str) -> Self {
        Self {
            connector,
            exchange: exchange.to_owned(),
            link: RwLock::new(None),
            state: watch::Sender::new(LinkState::Connecting),
            wake: Notify::new(),
            metrics: None,
        }
    }

    /// Counts publishes, their confirms and those pending in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.amqp_publishes());
        self
    }

    /// The URL without credentials, for messages.
    pub fn address(&self) -> &str {
        self.connector.address()
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Every change of [`Self::state`].
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// The link when it is usable. Otherwise `None`, and the supervisor is
    /// woken to reconnect now rather than after its back-off.
    pub fn link(&self) -> Option<Link> {
        let link = self
            .link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(Link::is_usable);
        if link.is_none() {
            self.wake.notify_one();
        }
        link
    }

    /// A publisher found `link` broken beyond what lapin recovers: the
    /// supervisor drops it and reconnects at once.
    pub fn abandon(&self, link: &Link, reason: &str) {
        let mut current = self.link.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|held| held.is(link)) {
            *current = None;
            drop(current);
            self.set_state(LinkState::Unreachable(reason.to_owned()));
            tracing::info!(url = %self.address(), reason, "reconnecting to RabbitMQ");
        }
        self.wake.notify_one();
    }

    /// Publishes one message and waits for its confirm. A connection that
    /// breaks under the publish is given lapin's recovery and the message is
    /// published once more (consumers drop the duplicate by its
    /// `message_id`). The caller bounds the wait.
    pub async fn publish(&self, message: &Message<'_>) -> Result<Outcome, LinkError> {
        let pending = self.metrics.as_ref().map(PublishMetrics::start);
        let link = self.link().ok_or(LinkError::NotConnected);
        let published = match &link {
            Ok(link) => self.publish_uncounted(link, message).await,
            Err(_) => Err(LinkError::NotConnected),
        };
        if let (Ok(link), Ok(Outcome::Refused)) = (&link, &published) {
            self.refused(link);
        }
        if let Some(pending) = pending {
            pending.finish(match &published {
                Ok(Outcome::Confirmed) => PublishOutcome::confirmed,
                Ok(Outcome::Unroutable { .. } | Outcome::Refused) => PublishOutcome::refused,
                Err(_) => PublishOutcome::failed,
            });
        }
        published
    }

    /// [`Link::publish_all`] on `link` (one of this channel's), each
    /// message counted in the channel's metrics like [`Self::publish`]'s.
    pub async fn publish_all_on(
        &self,
        link: &Link,
        messages: &[Message<'_>],
        deadline: Instant,
    ) -> Batch {
        let pending: Vec<_> = match &self.metrics {
            Some(metrics) => messages.iter().map(|_| metrics.start()).collect(),
            None => Vec::new(),
        };
        let batch = link.publish_all(&self.exchange, messages, deadline).await;
        if batch.outcomes.contains(&Some(Outcome::Refused)) {
            self.refused(link);
        }
        for (pending, outcome) in pending.into_iter().zip(&batch.outcomes) {
            pending.finish(match outcome {
                Some(Outcome::Confirmed) => PublishOutcome::confirmed,
                Some(Outcome::Unroutable { .. } | Outcome::Refused) => PublishOutcome::refused,
                None => PublishOutcome::failed,
            });
        }
        batch
    }

    async fn publish_uncounted(
        &self,
        link: &Link,
        message: &Message<'_>,
    ) -> Result<Outcome, LinkError> {
        if !link.channel.status().connected() {
            return Err(LinkError::Recovering);
        }
        match link.publish_one(&self.exchange, message).await {
            Err(err) if err.can_be_recovered() => {
                tracing::info!(error = %err, "the RabbitMQ connection broke during a publish; waiting for recovery");
                link.channel.wait_for_recovery(err).await?;
                Ok(link.publish_one(&self.exchange, message).await?)
            }
            published => Ok(published?),
        }
    }

    /// RabbitMQ refused a publish on `link` (nack). RabbitMQ 3.10's quorum
    /// queues can refuse every later publish of that channel too: a
    /// channel's queue client that met a dead leader on its first publish
    /// keeps asking that node (`rabbit_fifo_client`: `{badrpc, nodedown}` is
    /// `reject_publish`). A new channel looks the leader up again, so the
    /// link is replaced, unless it is younger than [`REPLACE_AFTER_REFUSAL`].
    fn refused(&self, link: &Link) {
        if link.opened.elapsed() >= REPLACE_AFTER_REFUSAL {
            self.abandon(
                link,
                "RabbitMQ refused a publish (nack); opening a new channel",
            );
        }
    }

    /// Waits (at most `within`) for lapin to recover `link` after `err`;
    /// false when it gave up, cannot recover this error, or took too long.
    pub async fn recover(&self, link: &Link, err: LinkError, within: Duration) -> bool {
        let LinkError::Amqp(err) = err else {
            return link.is_usable();
        };
        let recovered = tokio::time::timeout(within, link.channel.wait_for_recovery(err)).await;
        matches!(recovered, Ok(Ok(()))) && link.is_usable()
    }

    /// Keeps the link open until `stop`, then closes it within
    /// [`CLOSE_TIMEOUT`] and reports [`LinkState::Stopped`].
    pub async fn supervise(self: Arc<Self>, stop: Shutdown) {
        let mut backoff = Backoff::new(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
        let mut failures: u32 = 0;
        let stopped = stop.requested();
        tokio::pin!(stopped);
        loop {
            let current = self.current();
            match current {
                Some(link) if link.is_usable() => {
                    self.set_state(if link.is_connected() {
                        LinkState::Connected
                    } else {
                        LinkState::Unreachable("connection lost; recovering".to_owned())
                    });
                }
                dead => {
                    if let Some(link) = dead {
                        self.replace(None);
                        self.set_state(LinkState::Unreachable(
                            "connection lost; reconnecting".to_owned(),
                        ));
                        close(&link.connection, "reconnecting").await;
                    }
                    let attempt = tokio::select! {
                        () = &mut stopped => break,
                        attempt = self.open() => attempt,
                    };
                    match attempt {
                        Ok(link) => {
                            let node = self.connector.node().map(ToString::to_string);
                            tracing::info!(url = %self.address(), node, exchange = %self.exchange, "connected to RabbitMQ");
                            self.replace(Some(link));
                            self.set_state(LinkState::Connected);
                            backoff.reset();
                            failures = 0;
                        }
                        Err(err) => {
                            failures += 1;
                            let retry_in = backoff.next_delay();
                            // The first failure and then about one a minute:
                            // an outage should not drown the journal.
                            if failures == 1 || failures.is_multiple_of(12) {
                                tracing::warn!(url = %self.address(), error = %err, failures, ?retry_in, "cannot connect to RabbitMQ");
                            } else {
                                tracing::debug!(url = %self.address(), error = %err, failures, "cannot connect to RabbitMQ");
                            }
                            self.set_state(LinkState::Unreachable(err.to_string()));
                            tokio::select! {
                                () = &mut stopped => break,
                                () = tokio::time::sleep(retry_in) => {}
                                () = self.wake.notified() => {}
                            }
                            continue;
                        }
                    }
                }
            }
            tokio::select! {
                () = &mut stopped => break,
                () = tokio::time::sleep(HEALTH_INTERVAL) => {}
                () = self.wake.notified() => {}
            }
        }
        if let Some(link) = self.current() {
            self.replace(None);
            close(&link.connection, "shutting down").await;
        }
        self.set_state(LinkState::Stopped);
    }

    fn current(&self) -> Option<Link> {
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, link: Option<Link>) {
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = link;
    }

    fn set_state(&self, new: LinkState) {
        self.state.send_if_modified(|state| {
            let changed = *state != new;
            *state = new;
            changed
        });
    }

    /// A connection, its channel in confirm mode, and the exchange (durable
    /// topic, as the listener binds it), within the connector's timeout.
    async fn open(&self) -> Result<Link, LinkError> {
        let connection = self.connector.connect().await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
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
                .map_err(|source| LinkError::Declare {
                    exchange: self.exchange.clone(),
                    source,
                })?;
            Ok::<_, LinkError>(channel)
        };
        let timeout = self.connector.timeout();
        let set_up = tokio::time::timeout(timeout, setup)
            .await
            .unwrap_or(Err(LinkError::Timeout(timeout)));
        match set_up {
            Ok(channel) => Ok(Link {
                connection: Arc::new(connection),
                channel,
                opened: Instant::now(),
            }),
            Err(err) => {
                close(&connection, "set-up failed").await;
                Err(err)
            }
        }
    }
}

/// A TCP connect to `authority` (`host:port`) within `within`, closed at once.
async fn probe_tcp(authority: &str, within: Duration) -> Result<(), LinkError> {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(authority)).await {
        Err(_) => Err(LinkError::Timeout(within)),
        Ok(Err(err)) => Err(LinkError::Unreachable(err.to_string())),
        Ok(Ok(_stream)) => Ok(()),
    }
}

/// The tokio runtime lapin's I/O runs on, in every service.
///
/// lapin recovers a connection in a thread of its own, sleeping between
/// attempts on the runtime it was given, and nothing can stop that thread
/// mid-recovery. Given the service's runtime, a shutdown during a RabbitMQ
/// outage made that thread panic ("the runtime is being shut down") as the
/// service's runtime was dropped; auth used to leave through
/// `std::process::exit` to avoid it. This runtime lives in a static and is
/// never shut down: at exit its threads simply end with the process.
fn lapin_runtime() -> Result<async_rs::TokioRuntime, LinkError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("amqp-runtime")
                .enable_all()
                .build()
                .map_err(|err| err.to_string())
        })
        .as_ref()
        .map(|runtime| async_rs::Runtime::tokio_with_handle(runtime.handle().clone()))
        .map_err(|err| LinkError::Runtime(err.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str) -> Connector {
        let endpoint = AmqpEndpoint::parse("amqp.url", url, None).expect("valid URL");
        Connector::new(endpoint, "test", Duration::from_secs(1))
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_without_the_credentials() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let err = connector(&format!("amqp://guest:secret@127.0.0.1:{port}/%2f"))
            .connect()
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, LinkError::Unreachable(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn a_channel_that_never_connected_publishes_nothing_and_stops_cleanly() {
        let channel = Arc::new(ConfirmChannel::new(
            connector("amqp://guest:guest@127.0.0.1:9/%2f"),
            "logs_topic",
        ));
        assert_eq!(channel.state(), LinkState::Connecting);
        let message = Message {
            routing_key: "log.INFO",
            body: b"{}",
            properties: BasicProperties::default(),
        };
        let err = channel.publish(&message).await.expect_err("not connected");
        assert!(matches!(err, LinkError::NotConnected), "{err:?}");

        let stop = Shutdown::new();
        let mut states = channel.watch_state();
        let supervisor = tokio::spawn(channel.clone().supervise(stop.clone()));
        let unreachable = tokio::time::timeout(
            Duration::from_secs(10),
            states.wait_for(|state| matches!(state, LinkState::Unreachable(_))),
        )
        .await
        .expect("the failed attempt is reported")
        .expect("state")
        .clone();
        assert!(
            unreachable.to_string().starts_with("unreachable ("),
            "{unreachable}"
        );
        stop.trigger();
        tokio::time::timeout(Duration::from_secs(10), supervisor)
            .await
            .expect("the supervisor stops")
            .expect("supervisor task");
        assert_eq!(channel.state(), LinkState::Stopped);
    }
}
