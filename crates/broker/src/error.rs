//! Errors at the broker's boundaries: a downstream call that failed (mapped to
//! the HTTP status the wire contract prescribes) and a broker that cannot start.

use std::fmt;
use std::time::Duration;

use axum::http::StatusCode;
use switchboard_runtime::http::ApiError;

/// The services behind the broker, named as error messages and `/downstreams` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Downstream {
    Auth,
    Mail,
    LoggerRpc,
    LoggerGrpc,
    LoggerHttp,
    Amqp,
}

impl Downstream {
    pub const ALL: [Downstream; 6] = [
        Downstream::Auth,
        Downstream::Mail,
        Downstream::LoggerRpc,
        Downstream::LoggerGrpc,
        Downstream::LoggerHttp,
        Downstream::Amqp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Downstream::Auth => "auth",
            Downstream::Mail => "mail",
            Downstream::LoggerRpc => "logger (rpc)",
            Downstream::LoggerGrpc => "logger (grpc)",
            Downstream::LoggerHttp => "logger (http)",
            Downstream::Amqp => "rabbitmq (amqp)",
        }
    }
}

impl fmt::Display for Downstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a call to a downstream did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownstreamError {
    /// No connection could be made (refused, reset, not connected): 502.
    #[error("{downstream} is unreachable: {detail}")]
    Unreachable {
        downstream: Downstream,
        detail: String,
    },
    /// The downstream accepted the call but did not answer in time: 504.
    #[error("{downstream} did not answer within {timeout_ms} ms")]
    TimedOut {
        downstream: Downstream,
        timeout_ms: u128,
    },
    /// The downstream refused the input (its validation): 400 with its message.
    #[error("{message}")]
    Rejected {
        downstream: Downstream,
        message: String,
    },
    /// Auth said the email or password is wrong: 401.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The downstream answered, but with a failure (5xx, nack, garbage): 502.
    #[error("{downstream} failed: {detail}")]
    Failed {
        downstream: Downstream,
        detail: String,
    },
    /// The logger holds the entry's idempotency id with another name or data
    /// (its 409 / ALREADY_EXISTS / `RpcError::Conflict`): 409 with its message.
    #[error("{message}")]
    Conflict {
        downstream: Downstream,
        message: String,
    },
}

impl DownstreamError {
    pub fn timed_out(downstream: Downstream, after: Duration) -> Self {
        Self::TimedOut {
            downstream,
            timeout_ms: after.as_millis(),
        }
    }

    pub fn unreachable(downstream: Downstream, detail: impl Into<String>) -> Self {
        Self::Unreachable {
            downstream,
            detail: detail.into(),
        }
    }

    pub fn failed(downstream: Downstream, detail: impl Into<String>) -> Self {
        Self::Failed {
            downstream,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unreachable { .. } | Self::Failed { .. } => StatusCode::BAD_GATEWAY,
            Self::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Rejected { .. } => StatusCode::BAD_REQUEST,
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
        }
    }

    /// What the external client is told. A refusal of the client's input
    /// (400, 401, 409) keeps its message: it says what to fix. A failure
    /// says *what* failed — which downstream, and how in one word — and the
    /// request id, never *how*: the detail holds addresses, ports and driver
    /// messages, a map of the internal network, and goes to the log instead
    /// (see [`Self::into_reply`]), where the request id finds it.
    pub fn public_message(&self, request_id: Option<&str>) -> String {
        let failure = match self {
            Self::Rejected { .. } | Self::InvalidCredentials | Self::Conflict { .. } => {
                return self.to_string();
            }
            Self::Unreachable { downstream, .. } => format!("{downstream} is unreachable"),
            Self::TimedOut {
                downstream,
                timeout_ms,
            } => format!("{downstream} did not answer within {timeout_ms} ms"),
            Self::Failed { downstream, .. } => format!("{downstream} failed"),
        };
        match request_id {
            Some(id) => format!("{failure} (request {id})"),
            None => failure,
        }
    }

    /// Logs the whole error (inside the request's span, so under its
    /// request id) and turns it into the client's reply.
    pub fn into_reply(self, request_id: Option<&str>) -> ApiError {
        match &self {
            Self::Rejected { .. } | Self::InvalidCredentials | Self::Conflict { .. } => {
                tracing::info!(error = %self, "downstream refused the request");
            }
            _ => tracing::warn!(error = %self, "downstream call failed"),
        }
        ApiError::new(self.status(), self.public_message(request_id))
    }
}

/// An error and its sources on one line: transport errors hide the useful
/// part ("Connection refused") a few levels down.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Why the broker could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Setting(#[from] crate::settings::InvalidSetting),
    /// `events.amqp_url` or its password file; never shows the password.
    #[error(transparent)]
    Amqp(#[from] switchboard_runtime::amqp::AmqpUrlError),
    #[error("cannot build the client for {downstream}: {detail}")]
    Client {
        downstream: Downstream,
        detail: String,
    },
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_wire_contract() {
        let timeout = DownstreamError::timed_out(Downstream::LoggerRpc, Duration::from_secs(5));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            timeout.to_string(),
            "logger (rpc) did not answer within 5000 ms"
        );
        let refused = DownstreamError::unreachable(Downstream::Mail, "connection refused");
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            refused.to_string(),
            "mail is unreachable: connection refused"
        );
        let rejected = DownstreamError::Rejected {
            downstream: Downstream::LoggerHttp,
            message: "name must not be empty".into(),
        };
        assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
        assert_eq!(rejected.to_string(), "name must not be empty");
        let api = DownstreamError::InvalidCredentials.into_reply(Some("r-1"));
        assert_eq!(api.status, StatusCode::UNAUTHORIZED);
        assert_eq!(api.message, "invalid credentials");
        let conflict = DownstreamError::Conflict {
            downstream: Downstream::LoggerRpc,
            message: "log entry id \"x\" is already stored".into(),
        };
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert_eq!(
            conflict.into_reply(Some("r-1")).message,
            "log entry id \"x\" is already stored"
        );
    }

    #[test]
    fn failures_name_the_downstream_and_the_request_but_not_the_detail() {
        let id = Some("0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e");
        let failed = DownstreamError::failed(
            Downstream::Mail,
            "answered 502 Bad Gateway: SMTP server 127.0.0.1:21025 failed: internal client error",
        );
        let reply = failed.into_reply(id);
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            reply.message,
            "mail failed (request 0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e)"
        );
        let unreachable =
            DownstreamError::unreachable(Downstream::LoggerRpc, "cannot connect to 10.0.0.5:5001");
        assert_eq!(
            unreachable.public_message(id),
            "logger (rpc) is unreachable (request 0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e)"
        );
        let timeout = DownstreamError::timed_out(Downstream::Amqp, Duration::from_millis(700));
        assert_eq!(
            timeout.public_message(None),
            "rabbitmq (amqp) did not answer within 700 ms"
        );
    }

    #[test]
    fn error_chain_includes_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Outer(io)),
            "tcp connect error: connection refused"
        );
    }
}
