//! A TCP proxy a test puts between the broker and one downstream. It counts
//! the connections it accepted (so a test can prove the broker keeps one
//! long-lived connection), and can be stopped (connections refused, open ones
//! cut) or turned into a black hole (connections accepted, never answered).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass bytes both ways to the target.
    Forward,
    /// Accept and hold connections without reading or answering.
    BlackHole,
}

pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// The accept loop (one task while listening).
    listening: Mutex<JoinSet<()>>,
    /// One task per accepted connection.
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    /// A forwarding proxy on a fresh loopback port.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            target,
            accepted: Arc::new(AtomicUsize::new(0)),
            listening: Mutex::new(JoinSet::new()),
            connections: Arc::new(Mutex::new(JoinSet::new())),
        };
        proxy.serve(listener, Mode::Forward);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes the listener (new connections are refused) and cuts every open
    /// connection; returns once all of them are closed.
    pub async fn stop(&self) {
        let mut listening = std::mem::take(&mut *self.listening.lock().expect("proxy lock"));
        listening.abort_all();
        while listening.join_next().await.is_some() {}
        let mut connections = std::mem::take(&mut *self.connections.lock().expect("proxy lock"));
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }

    /// Listens again on the same port, in `mode`, after cutting what is open.
    pub async fn resume(&self, mode: Mode) {
        self.stop().await;
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if attempts < 50 => {
                    attempts += 1;
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("cannot rebind proxy {}: {err}", self.addr),
            }
        };
        self.serve(listener, mode);
    }

    fn serve(&self, listener: TcpListener, mode: Mode) {
        let accepted = Arc::clone(&self.accepted);
        let target = self.target;
        let connections = Arc::clone(&self.connections);
        self.listening
            .lock()
            .expect("proxy lock")
            .spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let mut set = connections.lock().expect("connections lock");
                    match mode {
                        Mode::Forward => {
                            set.spawn(forward(inbound, target));
                        }
                        Mode::BlackHole => {
                            set.spawn(async move {
                                let _held = inbound;
                                std::future::pending::<()>().await;
                            });
                        }
                    }
                }
            });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(mut listening) = self.listening.lock() {
            listening.abort_all();
        }
        if let Ok(mut connections) = self.connections.lock() {
            connections.abort_all();
        }
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}
