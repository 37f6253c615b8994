//! What one HTTP connection is doing, so that the server can close the ones
//! that hold a socket without using it.
//!
//! hyper cannot do this alone. Its HTTP/1 `header_read_timeout` starts
//! whenever it waits for a request head, including between requests, so it
//! cannot tell a slow head from a kept-alive connection at rest (one setting
//! would close both at the same moment); the protocol detection of
//! hyper-util's auto builder has no timeout at all (a client that connects
//! and sends nothing is never closed, with or without a timer); and HTTP/2
//! has no idle timeout. So each connection carries an [`Activity`]: the
//! service wrapper counts its requests, the stream wrapper notes the first
//! byte of a head, and the connection's task closes it at the deadline that
//! follows from them:
//!
//! * no request yet since accept, or bytes of a new HTTP/1 head since the
//!   connection went idle: `header_read_timeout` from then (the connection is
//!   dropped: a half-sent head has nothing to finish);
//! * no request in flight: `idle_timeout` after the last one finished (closed
//!   gracefully: HTTP/2 gets a GOAWAY).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The two timeouts of a connection; `None` disables one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header_read: Option<Duration>,
    pub idle: Option<Duration>,
}

/// Why a connection's deadline came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head did not arrive in time.
    Header,
    /// No request for too long.
    Idle,
}

/// What one connection is doing, shared by its stream, its service and its task.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<State>,
    /// Set while idle on an HTTP/1 connection: the next byte read starts a
    /// head. Lets the read path skip the lock on every other read.
    watch_reads: AtomicBool,
    /// Wakes the connection's task when its deadline moved earlier or
    /// appeared (the last request finished, a head started).
    changed: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// When the last request finished (or the connection was accepted).
    idle_since: Instant,
    /// When the head now awaited started: the accept for the first request,
    /// the first byte of it for later HTTP/1 requests.
    head_since: Option<Instant>,
    /// HTTP/2: bytes between requests are frames (pings, window updates),
    /// not the start of a head.
    multiplexed: bool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: now,
                head_since: Some(now),
                multiplexed: false,
            }),
            watch_reads: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request arrived; it counts as in flight until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>, version: http::Version) -> RequestGuard {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_since = None;
        if version >= http::Version::HTTP_2 {
            state.multiplexed = true;
        }
        self.watch_reads.store(false, Ordering::Relaxed);
        RequestGuard {
            activity: Arc::clone(self),
        }
    }

    fn end(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            if !state.multiplexed {
                self.watch_reads.store(true, Ordering::Relaxed);
            }
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Bytes arrived on the stream.
    fn received(&self) {
        if !self.watch_reads.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut state = self.state();
        if state.in_flight == 0 && state.head_since.is_none() && !state.multiplexed {
            state.head_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The connection's next deadline, if it has one now.
    pub(crate) fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        let header = state
            .head_since
            .zip(timeouts.header_read)
            .map(|(since, timeout)| (since + timeout, Expiry::Header));
        let idle = timeouts
            .idle
            .map(|timeout| (state.idle_since + timeout, Expiry::Idle));
        match (header, idle) {
            (Some(header), Some(idle)) => Some(if idle.0 < header.0 { idle } else { header }),
            (header, idle) => header.or(idle),
        }
    }

    /// Resolves when the deadline may have moved earlier.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Marks a request as finished when dropped (answered, failed or abandoned).
#[derive(Debug)]
pub(crate) struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.end();
    }
}

/// The connection's stream, telling its [`Activity`] when bytes arrive.
#[derive(Debug)]
pub(crate) struct Observed<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Observed<IO> {
    pub(crate) fn new(io: IO, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Observed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.received();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Observed<IO> {
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

/// A hyper service that counts its requests in the connection's [`Activity`].
#[derive(Debug, Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B> hyper::service::Service<http::Request<B>> for Counted<S>
where
    S: hyper::service::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: http::Request<B>) -> Self::Future {
        let guard = self.activity.begin(request.version());
        let response = self.inner.call(request);
        Box::pin(async move {
            let _in_flight = guard;
            response.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Some(Duration::from_secs(10)),
        idle: Some(Duration::from_secs(75)),
    };

    /// Runs `action` and returns the deadline it left, with the window of
    /// instants it can have been computed from.
    fn deadline_after(
        activity: &Arc<Activity>,
        action: impl FnOnce(),
    ) -> (Instant, Instant, Option<(Instant, Expiry)>) {
        let before = Instant::now();
        action();
        let after = Instant::now();
        (before, after, activity.deadline(TIMEOUTS))
    }

    fn assert_within(
        (before, after, deadline): (Instant, Instant, Option<(Instant, Expiry)>),
        timeout: Duration,
        expected: Expiry,
    ) {
        let (at, why) = deadline.expect("a deadline");
        assert_eq!(why, expected);
        assert!(at >= before + timeout && at <= after + timeout, "{at:?}");
    }

    #[test]
    fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let before = Instant::now();
        let activity = Activity::new();
        let after = Instant::now();
        assert_within(
            (before, after, activity.deadline(TIMEOUTS)),
            Duration::from_secs(10),
            Expiry::Header,
        );
    }

    #[test]
    fn an_idle_http1_connection_gets_the_idle_timeout_until_a_head_starts() {
        let activity = Activity::new();
        let request = activity.begin(http::Version::HTTP_11);
        assert_eq!(activity.deadline(TIMEOUTS), None);
        assert_within(
            deadline_after(&activity, || drop(request)),
            Duration::from_secs(75),
            Expiry::Idle,
        );
        assert_within(
            deadline_after(&activity, || activity.received()),
            Duration::from_secs(10),
            Expiry::Header,
        );
    }

    #[test]
    fn bytes_between_http2_requests_do_not_start_a_head() {
        let activity = Activity::new();
        let request = activity.begin(http::Version::HTTP_2);
        let ended = deadline_after(&activity, || drop(request));
        activity.received();
        assert_within(
            (ended.0, ended.1, activity.deadline(TIMEOUTS)),
            Duration::from_secs(75),
            Expiry::Idle,
        );
    }
}
