//! The services' listening sockets, owned by the stack as systemd owns a
//! `.socket` unit's: bound once, handed to every incarnation of the service
//! (so connections queue in the backlog while it restarts), and closed only on
//! request.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::service::SocketSpec;

/// systemd's default `Backlog=` (SOMAXCONN).
const BACKLOG: i32 = 4096;

/// One named listening socket of a service.
#[derive(Debug)]
pub(crate) struct NamedSocket {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// Whether a connection waiting on it starts a lazy service
    /// ([`SocketSpec::activates`]).
    pub(crate) activates: bool,
    /// `None` after [`NamedSocket::close`].
    pub(crate) listener: Option<TcpListener>,
}

impl NamedSocket {
    /// Binds `spec`'s socket on `127.0.0.1:port` (`0`: a port the kernel picks).
    pub(crate) fn bind(spec: &SocketSpec, port: u16) -> std::io::Result<Self> {
        let listener = bind_loopback(port)?;
        let addr = listener.local_addr()?;
        Ok(Self {
            name: spec.name,
            addr,
            activates: spec.activates,
            listener: Some(listener),
        })
    }

    /// Closes the socket: connections are refused until [`NamedSocket::reopen`].
    /// A running service keeps its own copy open.
    pub(crate) fn close(&mut self) {
        self.listener = None;
    }

    /// Binds the same address again after [`NamedSocket::close`].
    pub(crate) fn reopen(&mut self) -> std::io::Result<()> {
        if self.listener.is_none() {
            self.listener = Some(bind_loopback(self.addr.port())?);
        }
        Ok(())
    }

    /// A descriptor for a child (a duplicate; the stack keeps its own).
    pub(crate) fn duplicate(&self) -> std::io::Result<Option<OwnedFd>> {
        self.listener
            .as_ref()
            .map(|listener| listener.try_clone().map(OwnedFd::from))
            .transpose()
    }
}

/// A blocking, close-on-exec listening socket on 127.0.0.1 with systemd's
/// backlog; `SO_REUSEADDR` so that a restarted stack can bind its fixed
/// ports while old connections sit in TIME_WAIT.
pub(crate) fn bind_loopback(port: u16) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Whether nothing listens on (and nothing holds) `127.0.0.1:port` right now.
pub(crate) fn port_is_free(port: u16) -> bool {
    // Without SO_REUSEADDR, like the servers that will bind it.
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_socket_refuses_and_a_reopened_one_accepts_on_the_same_port() {
        let spec = crate::service::ServiceName::Frontend.sockets()[0];
        let mut socket = NamedSocket::bind(&spec, 0).expect("bind");
        let addr = socket.addr;
        assert_ne!(addr.port(), 0);
        assert!(std::net::TcpStream::connect(addr).is_ok());
        socket.close();
        assert!(std::net::TcpStream::connect(addr).is_err());
        assert!(socket.duplicate().expect("dup").is_none());
        socket.reopen().expect("reopen");
        assert!(std::net::TcpStream::connect(addr).is_ok());
        assert!(socket.duplicate().expect("dup").is_some());
    }
}
