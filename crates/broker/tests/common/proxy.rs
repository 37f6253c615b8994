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
    running: Mutex<Option<JoinSet<()>>>,
}

impl Proxy {
    /// A forwarding proxy on a fresh loopback port.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            target,
            accepted: Arc::new(AtomicUsize::new(0)),
            running: Mutex::new(None),
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

    /// Closes the listener (new connections are refused) and cuts every open one.
    pub fn stop(&self) {
        if let Some(mut tasks) = self.running.lock().expect("proxy lock").take() {
            tasks.abort_all();
        }
    }

    /// Listens again on the same port, in `mode`.
    pub async fn resume(&self, mode: Mode) {
        self.stop();
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
        let connections: Arc<Mutex<JoinSet<()>>> = Arc::new(Mutex::new(JoinSet::new()));
        let mut tasks = JoinSet::new();
        let held = Arc::clone(&connections);
        tasks.spawn(async move {
            // Aborting this task drops the listener and, through the guard,
            // every connection task.
            let _guard = AbortOnDrop(held);
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
        *self.running.lock().expect("proxy lock") = Some(tasks);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

struct AbortOnDrop(Arc<Mutex<JoinSet<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.abort_all();
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
