//! Bounds on what a client can hold on to: connections per listener, time to
//! send a request, time a connection may sit idle, time a request may take,
//! header sizes. Every door of every service has them, so a client that opens
//! connections and sends nothing (or a byte now and then) costs the service a
//! bounded number of sockets for a bounded time.
//!
//! [`HttpLimits`] is the `[http]` section every HTTP service embeds;
//! [`ConnectionLimit`], [`LogThrottle`] and [`ReadTimeout`] are the pieces
//! the logger's RPC and gRPC doors reuse.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::{Instant, Sleep};

/// How often, at most, a door says that it is at its connection limit: under
/// a flood every accept would otherwise log a line.
pub const SATURATION_LOG_EVERY: Duration = Duration::from_secs(10);

/// `[http]`: the bounds of a service's HTTP door. `0` disables a bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Connections served at once on each HTTP listener. Beyond it the
    /// service stops accepting: new connections wait in the listen backlog
    /// (`Backlog=` of the socket unit) until a connection closes.
    pub max_connections: usize,
    /// A request's line and headers must have arrived this long after the
    /// server started waiting for them: after accepting the connection, or
    /// after the first byte of the next request on a kept-alive HTTP/1.1
    /// connection. A connection that sends nothing, or only part of a head,
    /// is closed.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with a GOAWAY). Longer than the clients keep idle pooled
    /// connections (the broker's pool: 60 s), so that a client never reuses
    /// a connection the server is closing at that moment.
    pub idle_timeout_ms: u64,
    /// A request not answered within this gets `503` with the JSON envelope.
    /// Longer than any downstream or store timeout of the service, so it only
    /// cuts what would otherwise hang.
    pub request_timeout_ms: u64,
    /// Largest request head: HTTP/1.1 line plus headers (at least 8192, the
    /// smallest buffer hyper accepts; larger heads get `431`), HTTP/2 header
    /// list (`SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_bytes: usize,
    /// HTTP/2 streams a connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub http2_max_concurrent_streams: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            request_timeout_ms: 30_000,
            max_header_bytes: 64 * 1024,
            http2_max_concurrent_streams: 100,
        }
    }
}

impl HttpLimits {
    pub fn header_read_timeout(&self) -> Option<Duration> {
        millis(self.header_read_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        millis(self.idle_timeout_ms)
    }

    pub fn request_timeout(&self) -> Option<Duration> {
        millis(self.request_timeout_ms)
    }
}

/// A duration in milliseconds where `0` means "no bound".
pub fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// A bound on the connections a listener serves at once.
///
/// At the bound the door stops accepting rather than accepting and closing:
/// a connection waiting in the kernel's backlog costs the service nothing,
/// is served as soon as a slot frees up instead of failing and retrying, and
/// when the backlog is full too the kernel drops the SYN, which a client sees
/// as a connect timeout it already handles. Accept-and-close would spend an
/// accept and a close on every attempt of a flood and tell every legitimate
/// client that came in a burst to go away.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    door: &'static str,
    max: usize,
    permits: Option<Arc<Semaphore>>,
    saturated: Arc<LogThrottle>,
}

/// A connection's slot; the slot frees up when this is dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ConnectionLimit {
    /// `door` names the listener in the log (`http`, `rpc`, `grpc`);
    /// `max == 0` means no limit.
    pub fn new(door: &'static str, max: usize) -> Self {
        Self {
            door,
            max,
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))),
            saturated: Arc::new(LogThrottle::new(SATURATION_LOG_EVERY)),
        }
    }

    /// Waits for a free slot; call before accepting the next connection.
    /// Cancel-safe: dropping the future gives nothing up.
    pub async fn admit(&self) -> ConnectionPermit {
        let Some(permits) = &self.permits else {
            return ConnectionPermit { _permit: None };
        };
        match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => {
                return ConnectionPermit {
                    _permit: Some(permit),
                };
            }
            // Never closed: the semaphore is ours alone.
            Err(TryAcquireError::Closed) => return ConnectionPermit { _permit: None },
            Err(TryAcquireError::NoPermits) => {}
        }
        if let Some(not_logged) = self.saturated.ready() {
            tracing::warn!(
                door = self.door,
                max_connections = self.max,
                times_not_logged = not_logged,
                "connection limit reached: new connections wait in the listen backlog until one closes"
            );
        }
        ConnectionPermit {
            _permit: Arc::clone(permits).acquire_owned().await.ok(),
        }
    }
}

/// Lets an event through to the log at most once per period and counts the
/// ones it held back.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<Instant>,
    held_back: u64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were
    /// held back since the last one logged; `None` (and counted) otherwise.
    pub fn ready(&self) -> Option<u64> {
        self.ready_at(Instant::now())
    }

    fn ready_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last {
            Some(last) if now.duration_since(last) < self.every => {
                state.held_back += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.held_back))
            }
        }
    }
}

/// A stream that fails its reads with [`io::ErrorKind::TimedOut`] once nothing
/// has arrived for `timeout`, which makes the server on top of it close the
/// connection. For protocols whose live peers always send something (HTTP/2
/// answers the server's keep-alive pings), so that only a silent peer is cut.
#[derive(Debug)]
pub struct ReadTimeout<IO> {
    io: IO,
    timeout: Option<Duration>,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<IO> ReadTimeout<IO> {
    /// `None` never times out.
    pub fn new(io: IO, timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            io,
            timeout,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout.unwrap_or_default())),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                return Poll::Ready(result);
            }
            Poll::Pending => {}
        }
        let Some(timeout) = this.timeout else {
            return Poll::Pending;
        };
        // The timer is moved only when it is polled, not on every read: a
        // busy connection pays for one clock read per read, nothing more.
        let deadline = this.last_read + timeout;
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing received for {} ms", timeout.as_millis()),
            ))),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_disables_a_bound() {
        assert_eq!(millis(0), None);
        assert_eq!(millis(5), Some(Duration::from_millis(5)));
        let limits = HttpLimits {
            request_timeout_ms: 0,
            ..HttpLimits::default()
        };
        assert_eq!(limits.request_timeout(), None);
        assert_eq!(limits.header_read_timeout(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn the_throttle_lets_one_event_through_per_period_and_counts_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.ready_at(start), Some(0));
        assert_eq!(throttle.ready_at(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.ready_at(start + Duration::from_secs(9)), None);
        assert_eq!(throttle.ready_at(start + Duration::from_secs(10)), Some(2));
        assert_eq!(throttle.ready_at(start + Duration::from_secs(11)), None);
    }

    #[tokio::test]
    async fn a_connection_slot_frees_up_when_its_permit_is_dropped() {
        let limit = ConnectionLimit::new("test", 1);
        let first = limit.admit().await;
        let mut second = std::pin::pin!(limit.admit());
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        drop(first);
        let _second = second.await;
    }

    #[tokio::test]
    async fn a_read_fails_once_nothing_arrived_for_the_timeout_and_data_resets_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut peer, io) = tokio::io::duplex(64);
        let mut io = ReadTimeout::new(io, Some(Duration::from_millis(200)));
        let mut buf = [0u8; 8];
        peer.write_all(b"hi").await.expect("write");
        assert_eq!(io.read(&mut buf).await.expect("data"), 2);
        let started = Instant::now();
        let err = io.read(&mut buf).await.expect_err("silence times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            output = future => Some(output),
            () = std::future::ready(()) => None,
        }
    }
}
