//! Listening sockets: adopted from systemd socket activation when present,
//! bound from configuration otherwise.
//!
//! systemd (and the dev stack, which imitates it) passes listening sockets as
//! file descriptors 3.. with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`.
//! A service asks for each socket by its `FileDescriptorName=` (`http`, `rpc`,
//! `grpc`); when no socket of that name was passed it binds the configured
//! address itself, so one code path serves systemd, the dev stack and a plain
//! `cargo run`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Socket, Type};
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot read the sockets passed by the service manager: {0}")]
    Environment(#[source] io::Error),
    #[error(
        "socket {name:?} passed by the service manager is not a listening TCP socket: {reason}"
    )]
    NotTcp { name: String, reason: String },
    #[error("cannot bind {addr} for socket {name:?}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot use socket {name:?}: {source}")]
    Adopt {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// The sockets a service was started with, by name.
#[derive(Debug, Default)]
pub struct Listeners {
    inherited: HashMap<String, Vec<OwnedFd>>,
}

impl Listeners {
    /// Collects the sockets systemd passed to this process, if any.
    ///
    /// Call once, early: the descriptors are owned by the returned value.
    pub fn from_env() -> Result<Self, ListenError> {
        let fds = sd_notify::listen_fds_with_names().map_err(ListenError::Environment)?;
        Ok(Self::from_fds(fds.map(|(fd, name)| (adopt(fd), name))))
    }

    /// Sockets handed over by other means (tests, an embedding process).
    pub fn from_fds(fds: impl IntoIterator<Item = (OwnedFd, String)>) -> Self {
        let mut inherited: HashMap<String, Vec<OwnedFd>> = HashMap::new();
        for (fd, name) in fds {
            inherited.entry(name).or_default().push(fd);
        }
        Self { inherited }
    }

    /// No inherited sockets: every listener is bound from configuration.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether a socket of this name was passed in.
    pub fn has(&self, name: &str) -> bool {
        self.inherited.get(name).is_some_and(|fds| !fds.is_empty())
    }

    /// The TCP listener named `name`: the inherited one, else `fallback` bound now.
    pub async fn tcp(
        &mut self,
        name: &str,
        fallback: SocketAddr,
    ) -> Result<TcpListener, ListenError> {
        if let Some(fd) = self.inherited.get_mut(name).and_then(Vec::pop) {
            let listener = inherited_tcp(name, fd)?;
            tracing::info!(socket = name, addr = ?listener.local_addr().ok(), "using socket passed by the service manager");
            return Ok(listener);
        }
        let listener = TcpListener::bind(fallback)
            .await
            .map_err(|source| ListenError::Bind {
                name: name.to_owned(),
                addr: fallback,
                source,
            })?;
        tracing::info!(socket = name, addr = %fallback, "bound socket from configuration");
        Ok(listener)
    }

    /// A door that may be off: the inherited socket `name`, else `fallback`
    /// bound now, else none (no socket passed and no address configured).
    pub async fn tcp_optional(
        &mut self,
        name: &str,
        fallback: Option<SocketAddr>,
    ) -> Result<Option<TcpListener>, ListenError> {
        match fallback {
            Some(addr) => self.tcp(name, addr).await.map(Some),
            None if self.has(name) => self
                .tcp(name, SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// Names of passed sockets nobody asked for: usually a unit/config mismatch
    /// worth a warning (e.g. `FileDescriptorName=` misspelled).
    pub fn unclaimed(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inherited
            .iter()
            .filter(|(_, fds)| !fds.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }
}

/// Takes ownership of a descriptor systemd passed us.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: sd_notify::listen_fds_with_names only yields descriptors in the
    // range systemd documents as handed to this very process (LISTEN_PID was
    // checked); nothing else in the process owns them, and `Listeners::from_env`
    // is the single place that adopts them.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn inherited_tcp(name: &str, fd: OwnedFd) -> Result<TcpListener, ListenError> {
    let socket = Socket::from(fd);
    let not_tcp = |reason: String| ListenError::NotTcp {
        name: name.to_owned(),
        reason,
    };
    let kind = socket.r#type().map_err(|err| not_tcp(err.to_string()))?;
    if kind != Type::STREAM {
        return Err(not_tcp(format!("socket type is {kind:?}, not a stream")));
    }
    let local = socket
        .local_addr()
        .map_err(|err| not_tcp(err.to_string()))?;
    if local.as_socket().is_none() {
        return Err(not_tcp("not an IPv4 or IPv6 socket".into()));
    }
    let adopt_err = |source| ListenError::Adopt {
        name: name.to_owned(),
        source,
    };
    // systemd hands sockets over in blocking mode; tokio would otherwise stall a
    // worker thread inside accept(2).
    socket.set_nonblocking(true).map_err(adopt_err)?;
    TcpListener::from_std(socket.into()).map_err(adopt_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("literal address")
    }

    #[tokio::test]
    async fn binds_configured_address_when_nothing_is_inherited() {
        let mut listeners = Listeners::none();
        let listener = listeners.tcp("http", loopback()).await.expect("bind");
        assert_ne!(listener.local_addr().expect("addr").port(), 0);
    }

    #[tokio::test]
    async fn adopts_an_inherited_blocking_socket_by_name_and_serves_on_it() {
        // A blocking listener, as systemd passes it.
        let std_listener = std::net::TcpListener::bind(loopback()).expect("bind");
        let addr = std_listener.local_addr().expect("addr");
        let fd: OwnedFd = std_listener.into();
        let mut listeners = Listeners::from_fds([(fd, "rpc".to_owned())]);
        assert!(listeners.has("rpc"));
        assert!(!listeners.has("http"));

        let listener = listeners.tcp("rpc", loopback()).await.expect("adopt");
        assert_eq!(listener.local_addr().expect("addr"), addr);
        assert!(listeners.unclaimed().is_empty());

        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.write_all(b"pong").await.expect("write");
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.expect("read");
        assert_eq!(reply, "pong");
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn rejects_an_inherited_datagram_socket() {
        let udp = std::net::UdpSocket::bind(loopback()).expect("bind udp");
        let mut listeners = Listeners::from_fds([(OwnedFd::from(udp), "http".to_owned())]);
        let err = listeners
            .tcp("http", loopback())
            .await
            .expect_err("udp is not tcp");
        assert!(matches!(err, ListenError::NotTcp { .. }), "{err}");
    }

    #[tokio::test]
    async fn reports_unclaimed_sockets() {
        let std_listener = std::net::TcpListener::bind(loopback()).expect("bind");
        let listeners = Listeners::from_fds([(OwnedFd::from(std_listener), "grcp".to_owned())]);
        assert_eq!(listeners.unclaimed(), vec!["grcp".to_owned()]);
    }
}
