//! The broker's one HTTP client (a keep-alive connection pool) and the calls
//! made with it: auth's `POST /authenticate`, mail's `POST /send` and the
//! logger's `POST /log`, each under the configured deadline and carrying the
//! request id.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{StatusCode, header};
use serde::Serialize;
use switchboard_runtime::http::{Envelope, REQUEST_ID_HEADER};

use crate::error::{Downstream, DownstreamError, error_chain};

/// A pooled HTTP/1.1 client shared by every HTTP downstream.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    timeout: Duration,
}

/// The most a read the broker passes on (`GET /logs`) may bring back: a
/// page of 50 entries of the logger's largest size, JSON-escaped, could be
/// megabytes, and the broker holds it whole before it answers.
pub const MAX_READ_BYTES: usize = 4 * 1024 * 1024;

/// The header that tells auth who the broker's client is (auth believes it
/// from the addresses in its `throttle.trusted_proxies`).
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// What a downstream answered: its status, envelope and, with a 429, when
/// to retry.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: StatusCode,
    pub envelope: Envelope,
    /// `Retry-After` in seconds (the HTTP-date form is not passed on).
    pub retry_after_secs: Option<u64>,
}

/// Why a request got no usable answer, and whether the downstream may not
/// have answered at all (so another instance may be asked).
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: DownstreamError,
    /// No connection, or it broke before a status line came back: nothing
    /// was acknowledged. Not a timeout: the deadline is spent.
    pub unanswered: bool,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_connect_timeout(timeout, timeout)
    }

    /// A client whose connects may take only `connect_timeout` of a
    /// request's `timeout`.
    pub fn with_connect_timeout(
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // Longer than the downstreams keep idle connections would risk
            // reusing one they are closing; axum keeps them until the client closes.
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("switchboard-broker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs `body` as JSON and reads the envelope, whatever the status.
    /// `client` is the address of the broker's own client, sent as
    /// `X-Forwarded-For` (set, not appended: the broker is where clients
    /// connect, so whatever a client wrote there itself is not passed on).
    pub async fn post_envelope(
        &self,
        downstream: Downstream,
        url: &str,
        body: &impl Serialize,
        request_id: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<HttpReply, DownstreamError> {
        self.post_envelope_within(downstream, url, body, request_id, client, self.timeout)
            .await
            .map_err(|failure| failure.error)
    }

    /// [`Self::post_envelope`] within `within` (what is left of a deadline),
    /// telling a failure without an answer from the others.
    pub async fn post_envelope_within(
        &self,
        downstream: Downstream,
        url: &str,
        body: &impl Serialize,
        request_id: Option<&str>,
        client: Option<IpAddr>,
        within: Duration,
    ) -> Result<HttpReply, Failure> {
        // The downstream answered (or the deadline is spent): no retry.
        let final_failure = |error| Failure {
            error,
            unanswered: false,
        };
        let mut request = self
            .client
            .post(url)
            .json(body)
            .headers(switchboard_runtime::telemetry::trace_headers());
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        if let Some(client) = client {
            request = request.header(FORWARDED_FOR_HEADER, client.to_string());
        }
        let call = async {
            let response = request.send().await.map_err(|err| Failure {
                error: transport_error(downstream, &err),
                unanswered: true,
            })?;
            let status = response.status();
            let retry_after_secs = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse().ok());
            let bytes = response
                .bytes()
                .await
                .map_err(|err| final_failure(transport_error(downstream, &err)))?;
            let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|err| {
                final_failure(DownstreamError::failed(
                    downstream,
                    format!("answered {status} without a JSON envelope ({err})"),
                ))
            })?;
            Ok(HttpReply {
                status,
                envelope,
                retry_after_secs,
            })
        };
        // The message names the whole deadline, as every timeout does.
        tokio::time::timeout(within, call)
            .await
            .unwrap_or_else(|_| {
                Err(final_failure(DownstreamError::timed_out(
                    downstream,
                    self.timeout,
                )))
            })
    }

    /// `GET url`, within the deadline: the status and the JSON body, which
    /// must stay within [`MAX_READ_BYTES`].
    pub async fn get_json(
        &self,
        downstream: Downstream,
        url: &str,
        request_id: Option<&str>,
    ) -> Result<(StatusCode, serde_json::Value), DownstreamError> {
        let mut request = self
            .client
            .get(url)
            .headers(switchboard_runtime::telemetry::trace_headers());
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        let call = async {
            let mut response = request
                .send()
                .await
                .map_err(|err| transport_error(downstream, &err))?;
            let status = response.status();
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|err| transport_error(downstream, &err))?
            {
                if bytes.len() + chunk.len() > MAX_READ_BYTES {
                    return Err(DownstreamError::failed(
                        downstream,
                        format!("answered more than {MAX_READ_BYTES} bytes"),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            let body = serde_json::from_slice(&bytes).map_err(|err| {
                DownstreamError::failed(
                    downstream,
                    format!("answered {status} without JSON ({err})"),
                )
            })?;
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| Err(DownstreamError::timed_out(downstream, self.timeout)))
    }

    /// `GET url` answering 2xx within `within`: the downstream is up.
    pub async fn probe(&self, url: &str, within: Duration) -> Result<(), String> {
        match tokio::time::timeout(within, self.client.get(url).send()).await {
            Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
            Ok(Err(err)) => Err(error_chain(&err)),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("answered {}", response.status())),
        }
    }
}

fn transport_error(downstream: Downstream, err: &reqwest::Error) -> DownstreamError {
    let detail = error_chain(err);
    if err.is_connect() {
        DownstreamError::unreachable(downstream, detail)
    } else {
        DownstreamError::failed(downstream, detail)
    }
}

/// Maps a downstream's non-2xx answer onto the broker's: validation errors
/// pass through as 400 with the downstream's message, everything else is a
/// failure of that downstream (502). (Auth's 429 is passed on before this;
/// see [`super::Downstreams::authenticate`].)
pub fn non_success(downstream: Downstream, reply: HttpReply) -> DownstreamError {
    match reply.status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::PAYLOAD_TOO_LARGE => DownstreamError::Rejected {
            downstream,
            message: reply.envelope.message,
        },
        StatusCode::UNAUTHORIZED if downstream == Downstream::Auth => {
            DownstreamError::InvalidCredentials
        }
        // The logger holds the entry's id with another name or data.
        StatusCode::CONFLICT if downstream == Downstream::LoggerHttp => DownstreamError::Conflict {
            downstream,
            message: reply.envelope.message,
        },
        status => DownstreamError::failed(
            downstream,
            format!("answered {status}: {}", reply.envelope.message),
        ),
    }
}

/// Joins a base URL and an absolute path without doubling the slash.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_larger_than_the_cap_is_a_failure_not_a_buffer() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            // The request's head first: a reply before it confuses the client.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = format!("[\"{}\"]", "x".repeat(MAX_READ_BYTES));
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
        let client = HttpClient::new(Duration::from_secs(5)).expect("client");
        let err = client
            .get_json(Downstream::LoggerHttp, &format!("http://{addr}/logs"), None)
            .await
            .expect_err("too large");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn join_handles_trailing_slashes() {
        assert_eq!(join("http://a:1/", "/log"), "http://a:1/log");
        assert_eq!(join("http://a:1", "/log"), "http://a:1/log");
    }

    #[test]
    fn validation_errors_pass_through_and_others_are_failures() {
        let reply = |status, message: &str| HttpReply {
            status,
            envelope: Envelope {
                error: true,
                message: message.into(),
                data: None,
            },
            retry_after_secs: None,
        };
        let rejected = non_success(
            Downstream::LoggerHttp,
            reply(StatusCode::BAD_REQUEST, "name must not be empty"),
        );
        assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
        assert_eq!(rejected.to_string(), "name must not be empty");
        let unauthorized = non_success(
            Downstream::Auth,
            reply(StatusCode::UNAUTHORIZED, "invalid credentials"),
        );
        assert_eq!(unauthorized, DownstreamError::InvalidCredentials);
        let unavailable = non_success(
            Downstream::Mail,
            reply(StatusCode::SERVICE_UNAVAILABLE, "smtp down"),
        );
        assert_eq!(unavailable.status(), StatusCode::BAD_GATEWAY);
        assert!(
            unavailable.to_string().contains("smtp down"),
            "{unavailable}"
        );
    }
}
