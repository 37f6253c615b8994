//! The broker's downstream clients, each created once at start and shared by
//! every request: one HTTP pool (auth, mail), one for the loggers' HTTP
//! doors, one tarpc client per logger (RPC), one tonic channel (logger gRPC,
//! balanced over the loggers) and one AMQP connection (RabbitMQ). None of
//! them waits for its downstream at start.
//!
//! Several logger instances behind one store are reached in turn
//! ([`rotation::Rotation`] for RPC and HTTP, tonic's balancer for gRPC); a
//! write that got no answer from one logger is sent once more to the next
//! within its deadline, and stored once by its idempotency id.

pub mod amqp;
pub mod grpc;
pub mod http;
pub mod rotation;
pub mod rpc;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::AmqpEndpoint;
use switchboard_runtime::http::ApiError;
use switchboard_runtime::metrics::{CallOutcome, Metrics, Outbound, Transport};
use switchboard_runtime::telemetry::{self, SpanKind};
use switchboard_wire::{LogEntry, ValidLogEntry};
use tracing::Instrument as _;

use crate::error::{Downstream, DownstreamError, Error};
use crate::payload::{AuthPayload, DownstreamStatus, LogVia, MailPayload};
use crate::settings::Settings;

pub use self::amqp::AmqpPublisher;
pub use self::grpc::GrpcLogger;
pub use self::http::HttpClient;
pub use self::rpc::RpcLogger;

use self::rotation::Rotation;

/// Why auth did not authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// Auth's login throttle refused the attempt (too many failed logins for
    /// the account or from the client).
    Throttled(Throttled),
    /// Anything else: wrong credentials, bad input, auth down or failing.
    Downstream(DownstreamError),
}

impl From<DownstreamError> for AuthFailure {
    fn from(err: DownstreamError) -> Self {
        Self::Downstream(err)
    }
}

/// Auth's 429, passed on to the client as it is: the client is to wait,
/// not the broker's operator to look into a failure, and auth knows how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// Auth's message ("too many failed logins for this account; retry in N s").
    pub message: String,
    /// Auth's `Retry-After`, in seconds.
    pub retry_after_secs: Option<u64>,
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        tracing::info!(message = %self.message, retry_after_secs = ?self.retry_after_secs, "auth throttled the login");
        let mut response =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, self.message).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Every client the broker uses.
#[derive(Debug)]
pub struct Downstreams {
    auth_url: String,
    mail_url: String,
    /// The loggers' HTTP doors (base URLs), in turn.
    logger_http: Rotation<String>,
    timeout: Duration,
    http: HttpClient,
    /// The loggers' own pool: with several loggers a connect may take only
    /// half the deadline, so a logger that is unreachable leaves time for
    /// the retry on the next.
    logger_http_client: HttpClient,
    rpc: RpcLogger,
    grpc: GrpcLogger,
    amqp: Arc<AmqpPublisher>,
    outbound: Outbound,
}

impl Downstreams {
    /// Builds every client; nothing is connected yet (see [`Self::start`]).
    pub fn new(settings: &Settings, metrics: &Metrics) -> Result<Self, Error> {
        let d = &settings.downstream;
        let timeout = d.timeout();
        let client_error = |downstream: Downstream, err: &reqwest::Error| Error::Client {
            downstream,
            detail: crate::error::error_chain(err),
        };
        let http = HttpClient::new(timeout).map_err(|err| client_error(Downstream::Auth, &err))?;
        let http_urls = rotation::with_others(&d.logger_http_url, &d.logger_http_urls);
        let logger_connect_timeout = if http_urls.len() > 1 {
            timeout / 2
        } else {
            timeout
        };
        let logger_http_client = HttpClient::with_connect_timeout(timeout, logger_connect_timeout)
            .map_err(|err| client_error(Downstream::LoggerHttp, &err))?;
        let no_logger = |downstream| Error::Client {
            downstream,
            detail: "no logger address".to_owned(),
        };
        let grpc = GrpcLogger::new(
            rotation::with_others(&d.logger_grpc_url, &d.logger_grpc_urls),
            timeout,
        )
        .map_err(|err| Error::Client {
            downstream: Downstream::LoggerGrpc,
            detail: crate::error::error_chain(&err),
        })?;
        Ok(Self {
            auth_url: d.auth_url.clone(),
            mail_url: d.mail_url.clone(),
            logger_http: Rotation::new(http_urls, timeout)
                .ok_or_else(|| no_logger(Downstream::LoggerHttp))?,
            timeout,
            http,
            logger_http_client,
            rpc: RpcLogger::new(
                rotation::with_others(&d.logger_rpc_addr, &d.logger_rpc_addrs),
                timeout,
            )
            .ok_or_else(|| no_logger(Downstream::LoggerRpc))?,
            grpc,
            amqp: Arc::new(AmqpPublisher::new(
                AmqpEndpoint::from_settings(
                    "events.amqp_url",
                    &settings.events.amqp_url,
                    settings.events.amqp_password_file.as_deref(),
                )?
                .with_nodes("events.amqp_nodes", &settings.events.amqp_nodes)?,
                settings.events.exchange.clone(),
                timeout,
                metrics,
            )),
            outbound: metrics.outbound(),
        })
    }

    /// Starts the background work: the AMQP connection supervisor and the
    /// gRPC loggers' health watcher (both until `stop`), and early RPC
    /// connects; none of it delays serving.
    pub fn start(self: &Arc<Self>, stop: &Shutdown) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.rpc.warm_up().await });
        let grpc = self.grpc.clone();
        let grpc_stop = stop.clone();
        let health = tokio::spawn(async move { grpc.watch_health(grpc_stop).await });
        let amqp = tokio::spawn(Arc::clone(&self.amqp).supervise(stop.clone()));
        tokio::spawn(async move {
            let _ = tokio::join!(health, amqp);
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Auth's `POST /authenticate`; the user object on success. `client` is
    /// the broker's client, whose failed logins auth counts (its throttle).
    pub async fn authenticate(
        &self,
        credentials: &AuthPayload,
        request_id: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<serde_json::Value, AuthFailure> {
        let started = Instant::now();
        let span = telemetry::call_span("auth", "http", SpanKind::Client);
        let answer = self
            .call_auth(credentials, request_id, client)
            .instrument(span.clone())
            .await;
        if let Err(AuthFailure::Downstream(err)) = &answer {
            telemetry::failed(&span, err);
        }
        let outcome = match &answer {
            Ok(_) => CallOutcome::ok,
            Err(AuthFailure::Throttled(_)) => CallOutcome::refused,
            Err(AuthFailure::Downstream(err)) => call_outcome(err),
        };
        self.outbound
            .record("auth", Transport::http, outcome, started.elapsed());
        answer
    }

    async fn call_auth(
        &self,
        credentials: &AuthPayload,
        request_id: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<serde_json::Value, AuthFailure> {
        let url = http::join(&self.auth_url, "/authenticate");
        let body = json!({ "email": credentials.email, "password": credentials.password });
        let reply = self
            .http
            .post_envelope(Downstream::Auth, &url, &body, request_id, client)
            .await?;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(AuthFailure::Throttled(Throttled {
                message: reply.envelope.message,
                retry_after_secs: reply.retry_after_secs,
            }));
        }
        if !reply.status.is_success() {
            return Err(http::non_success(Downstream::Auth, reply).into());
        }
        reply.envelope.data.ok_or_else(|| {
            DownstreamError::failed(Downstream::Auth, "answered success without the user").into()
        })
    }

    /// Mail's `POST /send`.
    pub async fn send_mail(
        &self,
        mail: &MailPayload,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let started = Instant::now();
        let url = http::join(&self.mail_url, "/send");
        let body = json!({
            "from": mail.from, "to": mail.to, "subject": mail.subject, "message": mail.message,
        });
        let span = telemetry::call_span("mail", "http", SpanKind::Client);
        let sent = match self
            .http
            .post_envelope(Downstream::Mail, &url, &body, request_id, None)
            .instrument(span.clone())
            .await
        {
            Ok(reply) if reply.status.is_success() => Ok(()),
            Ok(reply) => Err(http::non_success(Downstream::Mail, reply)),
            Err(err) => Err(err),
        };
        if let Err(err) = &sent {
            telemetry::failed(&span, err);
        }
        self.record("mail", Transport::http, &sent, started);
        sent
    }

    fn record(
        &self,
        downstream: &'static str,
        transport: Transport,
        result: &Result<(), DownstreamError>,
        started: Instant,
    ) {
        let outcome = match result {
            Ok(()) => CallOutcome::ok,
            Err(err) => call_outcome(err),
        };
        self.outbound
            .record(downstream, transport, outcome, started.elapsed());
    }

    /// Stores a log entry through the chosen transport. Every entry gets an
    /// idempotency id (the client's, else a fresh UUID), so a retry after a
    /// broken connection is stored once.
    pub async fn log(
        &self,
        entry: ValidLogEntry,
        via: LogVia,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        // An id on every entry makes each transport's retry store it once
        // (a UUID is visible ASCII well within the id limit).
        let mut entry = entry.into_entry();
        entry
            .id
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
        let started = Instant::now();
        let (downstream, transport, kind) = match via {
            // tarpc's own client span is the call; this one holds the retry.
            LogVia::Rpc => ("logger", Transport::rpc, SpanKind::Internal),
            LogVia::Grpc => ("logger", Transport::grpc, SpanKind::Client),
            LogVia::Http => ("logger", Transport::http, SpanKind::Client),
            LogVia::Amqp => ("rabbitmq", Transport::amqp, SpanKind::Producer),
        };
        let span = telemetry::call_span(downstream, transport.as_str(), kind);
        let stored = async {
            match via {
                LogVia::Rpc => self.rpc.log(entry, request_id).await,
                LogVia::Grpc => self.grpc.log(entry, request_id).await,
                LogVia::Http => self.log_http(&entry, request_id).await,
                LogVia::Amqp => self.amqp.publish(&entry, request_id).await,
            }
        }
        .instrument(span.clone())
        .await;
        if let Err(err) = &stored {
            telemetry::failed(&span, err);
        }
        self.record(downstream, transport, &stored, started);
        stored
    }

    /// The logger's newest `limit` entries (`GET /logs?limit=`), newest
    /// first, as the logger's HTTP door answers them.
    pub async fn recent_logs(
        &self,
        limit: u32,
        request_id: Option<&str>,
    ) -> Result<serde_json::Value, DownstreamError> {
        let started = Instant::now();
        let logger = self.logger_http.pick(None);
        let url = format!(
            "{}?limit={limit}",
            http::join(self.logger_http.get(logger), "/logs")
        );
        let span = telemetry::call_span("logger-reads", "http", SpanKind::Client);
        let answer = self
            .logger_http_client
            .get_json(Downstream::LoggerHttp, &url, request_id)
            .instrument(span)
            .await;
        match &answer {
            Err(DownstreamError::Unreachable { .. } | DownstreamError::TimedOut { .. }) => {
                self.logger_http.failed(logger);
            }
            _ => self.logger_http.succeeded(logger),
        }
        let read = match answer {
            Ok((status, entries)) if status.is_success() && entries.is_array() => Ok(entries),
            Ok((status, _)) => Err(DownstreamError::failed(
                Downstream::LoggerHttp,
                format!("GET /logs answered {status}"),
            )),
            Err(err) => Err(err),
        };
        let outcome = match &read {
            Ok(_) => CallOutcome::ok,
            Err(err) => call_outcome(err),
        };
        // Apart from the log writes, so that reads do not blur the
        // transports' comparison.
        self.outbound
            .record("logger-reads", Transport::http, outcome, started.elapsed());
        read
    }

    /// `POST /log` to the loggers' HTTP doors in turn; a request no logger
    /// answered (no connection, or it broke before the answer) is sent once
    /// more to the next, within the same deadline.
    async fn log_http(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        // The id makes a retried POST (ours on the next logger, or hyper's
        // on a connection the logger closed as we reused it) store the
        // entry once.
        let body = json!({ "name": entry.name, "data": entry.data, "id": entry.id });
        let deadline = Instant::now() + self.timeout;
        let mut failed_on = None;
        loop {
            let logger = self.logger_http.pick(failed_on);
            let url = http::join(self.logger_http.get(logger), "/log");
            let within = deadline.saturating_duration_since(Instant::now());
            let failure = match self
                .logger_http_client
                .post_envelope_within(
                    Downstream::LoggerHttp,
                    &url,
                    &body,
                    request_id,
                    None,
                    within,
                )
                .await
            {
                Ok(reply) => {
                    self.logger_http.succeeded(logger);
                    return if reply.status.is_success() {
                        Ok(())
                    } else {
                        Err(http::non_success(Downstream::LoggerHttp, reply))
                    };
                }
                Err(failure) => failure,
            };
            self.logger_http.failed(logger);
            let retry = failure.unanswered && failed_on.is_none() && !within.is_zero();
            if !retry {
                return Err(failure.error);
            }
            tracing::info!(logger = %self.logger_http.get(logger), error = %failure.error, "logger HTTP door did not answer; sending to the next logger");
            failed_on = Some(logger);
        }
    }

    /// Probes every downstream concurrently, each within a short deadline.
    pub async fn reachability(&self) -> Vec<DownstreamStatus> {
        let within = self.timeout.min(Duration::from_secs(2));
        let auth_health = http::join(&self.auth_url, "/healthz");
        let mail_health = http::join(&self.mail_url, "/healthz");
        let logger_http = futures::future::join_all(self.logger_http.iter().map(|base| async {
            let health = http::join(base, "/healthz");
            (
                base.clone(),
                self.logger_http_client.probe(&health, within).await,
            )
        }));
        let (auth, mail, rpc, grpc, logger_http) = tokio::join!(
            self.http.probe(&auth_health, within),
            self.http.probe(&mail_health, within),
            self.rpc.probe(within),
            self.grpc.probe(within),
            logger_http,
        );
        let ok = |result: Result<(), String>| result.map(|()| "ok".to_owned());
        let amqp = self.amqp.probe();
        let logger_http_urls: Vec<&str> = self.logger_http.iter().map(String::as_str).collect();
        [
            (Downstream::Auth, self.auth_url.clone(), ok(auth)),
            (Downstream::Mail, self.mail_url.clone(), ok(mail)),
            (Downstream::LoggerRpc, self.rpc.address().to_owned(), rpc),
            (Downstream::LoggerGrpc, self.grpc.address().to_owned(), grpc),
            (
                Downstream::LoggerHttp,
                logger_http_urls.join(", "),
                summarise(logger_http),
            ),
            (Downstream::Amqp, self.amqp.address().to_owned(), ok(amqp)),
        ]
        .into_iter()
        .map(|(downstream, address, result)| {
            let reachable = result.is_ok();
            DownstreamStatus {
                name: downstream.name().to_owned(),
                address,
                reachable,
                detail: result.unwrap_or_else(|err| err),
            }
        })
        .collect()
    }
}

/// A failed call in the metrics' words: the downstream refused the input,
/// did not answer in time, or failed.
fn call_outcome(err: &DownstreamError) -> CallOutcome {
    match err {
        DownstreamError::Rejected { .. }
        | DownstreamError::InvalidCredentials
        | DownstreamError::Conflict { .. } => CallOutcome::refused,
        DownstreamError::TimedOut { .. } => CallOutcome::timeout,
        DownstreamError::Unreachable { .. } | DownstreamError::Failed { .. } => CallOutcome::failed,
    }
}

/// The probes of one downstream's instances as one: reachable (`"ok"`, or
/// naming the instances that are not) while one answers; else every
/// instance's failure.
fn summarise(probes: Vec<(String, Result<(), String>)>) -> Result<String, String> {
    let total = probes.len();
    let failures: Vec<String> = probes
        .into_iter()
        .filter_map(|(address, result)| result.err().map(|err| (address, err)))
        .map(|(address, err)| {
            if total == 1 {
                err
            } else {
                format!("{address}: {err}")
            }
        })
        .collect();
    if failures.is_empty() {
        Ok("ok".to_owned())
    } else if failures.len() < total {
        Ok(format!(
            "ok; {} of {total} not answering: {}",
            failures.len(),
            failures.join("; ")
        ))
    } else {
        Err(failures.join("; "))
    }
}

/// A TCP connect to `addr` (`host:port`) within `within`, closed at once.
pub async fn probe_tcp(addr: &str, within: Duration) -> Result<(), String> {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Err(format!("no connection within {} ms", within.as_millis())),
        Ok(Err(err)) => Err(err.to_string()),
        Ok(Ok(_stream)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn auth_s_429_keeps_its_message_and_retry_after() {
        let response = Throttled {
            message: "too many failed logins for this account; retry in 897 s".into(),
            retry_after_secs: Some(897),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("897"))
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            body,
            json!({"error": true, "message": "too many failed logins for this account; retry in 897 s"})
        );
    }
}
