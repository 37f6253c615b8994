//! A RabbitMQ cluster of private nodes on loopback, for failover tests.
//!
//! Each node is a [`RabbitMq`] of its own (own node name, AMQP and
//! distribution ports, `mnesia/` and `log/` in its own temporary folder); what
//! they share is what a cluster needs: one Erlang cookie (written into each
//! node's `$HOME`, never the system's) and one epmd, started here on a free
//! port, through which Erlang distribution finds a peer's port. The first node
//! boots alone; the others boot at the same time and join it through
//! classic-config peer discovery, which costs no `stop_app`/`join_cluster`/
//! `start_app` round of CLI calls (each boots an Erlang VM).
//!
//! A node can be killed with SIGKILL ([`RabbitMqCluster::kill`]) and started
//! again on its data ([`RabbitMqCluster::restart`]), which makes it rejoin;
//! [`RabbitMqCluster::queue_leader`] says which node leads a quorum queue.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::process::Supervised;
use crate::rabbitmq::{Membership, spawn_epmd};
use crate::workdir::Workdir;
use crate::{RabbitMq, try_free_port, unique_name};

const SERVER: &str = "rabbitmq cluster";
/// How long a restarted node may take to be a running member again (the boot
/// itself is bounded by the node's own start-up timeout).
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster; dropping it kills every node and the shared epmd, and
/// removes their folders.
#[derive(Debug)]
pub struct RabbitMqCluster {
    // Declared before `epmd`: the nodes go first.
    nodes: Vec<RabbitMq>,
    epmd: Option<Supervised>,
    epmd_port: u16,
    workdir: Workdir,
}

impl RabbitMqCluster {
    /// Starts `size` nodes (at least 1) in temporary folders on free ports and
    /// waits until every one is a running member of the same cluster.
    pub fn start(size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::Config(
                "a RabbitMQ cluster needs at least one node".to_owned(),
            ));
        }
        let started = Instant::now();
        let epmd_binary = find_binary("epmd")?;
        let workdir = Workdir::create("rabbitmq-cluster", None, false)?;
        let epmd_port = try_free_port()?;
        let epmd = spawn_epmd(
            &epmd_binary,
            epmd_port,
            workdir.path(),
            &workdir.path().join("epmd.log"),
            workdir.removable(),
        )?;
        // Any 20 bytes from the unique-name generator: the cookie only keeps
        // other Erlang nodes on this machine out of the tests' cluster.
        let cookie = format!("{}{}", unique_name("c"), unique_name("k")).to_ascii_uppercase();
        let membership = |seed: Option<String>| Membership {
            epmd_port,
            cookie: cookie.clone(),
            seed,
        };
        let mut cluster = Self {
            nodes: Vec::with_capacity(size),
            epmd: Some(epmd),
            epmd_port,
            workdir,
        };

        let first = RabbitMq::builder().member(membership(None)).start()?;
        let seed = first.node_name().to_owned();
        cluster.nodes.push(first);
        // The others boot in parallel; each joins the first as it boots.
        let joiners: Vec<_> = (1..size)
            .map(|_| {
                let builder = RabbitMq::builder().member(membership(Some(seed.clone())));
                std::thread::spawn(move || builder.start())
            })
            .collect();
        let mut failure = None;
        for joiner in joiners {
            match joiner.join() {
                Ok(Ok(node)) => cluster.nodes.push(node),
                Ok(Err(error)) => failure = failure.or(Some(error)),
                Err(_) => {
                    failure = failure.or(Some(Error::Config(
                        "the thread starting a RabbitMQ node panicked".to_owned(),
                    )));
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        cluster.wait_for_members(REJOIN_TIMEOUT)?;
        tracing::debug!(size, elapsed = ?started.elapsed(), "rabbitmq cluster ready");
        Ok(cluster)
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index` (0-based; node 0 is the one the others joined).
    ///
    /// # Panics
    /// If `index` is not below [`Self::len`].
    pub fn node(&self, index: usize) -> &RabbitMq {
        &self.nodes[index]
    }

    /// Every node, in order.
    pub fn nodes(&self) -> &[RabbitMq] {
        &self.nodes
    }

    /// The index of the node named `name` (`rabbit_…@localhost`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.node_name() == name)
    }

    /// The AMQP ports of all nodes, in order.
    pub fn amqp_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RabbitMq::amqp_port).collect()
    }

    /// `127.0.0.1:PORT` of every node, in order: a services' `nodes` setting.
    pub fn addresses(&self) -> Vec<String> {
        self.amqp_ports()
            .into_iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the epmd all nodes register with.
    pub fn epmd_port(&self) -> u16 {
        self.epmd_port
    }

    /// The folder of the cluster's own files (the epmd log); each node has
    /// its own ([`RabbitMq::dir`]).
    pub fn dir(&self) -> PathBuf {
        self.workdir.path().to_owned()
    }

    /// Kills node `index` with SIGKILL (its whole process group), keeping its
    /// data; the other nodes see it go at once (its sockets close).
    pub fn kill(&mut self, index: usize) -> Result<()> {
        self.checked(index)?;
        self.nodes[index].kill();
        Ok(())
    }

    /// Starts a killed or stopped node `index` again on its data and waits
    /// until it is a running member of the cluster again.
    pub fn restart(&mut self, index: usize) -> Result<()> {
        self.checked(index)?;
        self.nodes[index].start_again()?;
        self.wait_for_members(REJOIN_TIMEOUT)
    }

    /// Creates a fresh vhost on which `guest` may do everything (cluster-wide:
    /// definitions are replicated) and returns its name.
    pub fn create_vhost(&self) -> Result<String> {
        let url = self.running()?.create_vhost()?;
        // `amqp://guest:guest@127.0.0.1:PORT/<vhost>`: unique names need no decoding.
        url.rsplit('/')
            .next()
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol {
                server: SERVER.to_owned(),
                detail: format!("cannot read the vhost from {url}"),
            })
    }

    /// `rabbitmqctl -n NODE -q ARGS...` against the first running node.
    pub fn rabbitmqctl(&self, args: &[&str]) -> Result<String> {
        self.running()?.rabbitmqctl(args)
    }

    /// The names of the nodes that are running members, as a running node
    /// sees them (`rabbitmqctl cluster_status`).
    pub fn running_members(&self) -> Result<Vec<String>> {
        let text = self.rabbitmqctl(&["cluster_status", "--formatter", "json"])?;
        let status: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|error| Error::Protocol {
                server: SERVER.to_owned(),
                detail: format!("cluster_status is not JSON ({error}): {text}"),
            })?;
        Ok(status["running_nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|node| node.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The index of the node that leads quorum queue `queue` in `vhost`
    /// (`rabbitmqctl list_queues name leader`), or `None` while it has no
    /// leader (an election under way) or does not exist.
    pub fn queue_leader(&self, vhost: &str, queue: &str) -> Result<Option<usize>> {
        let text = self.rabbitmqctl(&[
            "list_queues",
            "-p",
            vhost,
            "name",
            "leader",
            "--formatter",
            "json",
        ])?;
        let queues: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|error| Error::Protocol {
                server: SERVER.to_owned(),
                detail: format!("list_queues is not JSON ({error}): {text}"),
            })?;
        Ok(queues
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"] == queue)
            .and_then(|entry| entry["leader"].as_str())
            .and_then(|leader| self.index_of(leader)))
    }

    /// Polls [`Self::queue_leader`] until the queue has a leader.
    pub fn wait_for_leader(&self, vhost: &str, queue: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.queue_leader(vhost, queue);
            if let Ok(Some(leader)) = last {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "a leader of quorum queue {queue:?} in vhost {vhost:?} (last answer: {last:?})"
                    ),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn checked(&self, index: usize) -> Result<()> {
        if index < self.nodes.len() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "the cluster has {} nodes; there is no node {index}",
                self.nodes.len()
            )))
        }
    }

    fn running(&self) -> Result<&RabbitMq> {
        self.nodes
            .iter()
            .find(|node| node.is_running())
            .ok_or_else(|| Error::Stopped {
                server: SERVER.to_owned(),
            })
    }

    /// Waits until every running node is a running member in the eyes of a
    /// running node.
    fn wait_for_members(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let expected: Vec<&str> = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .map(RabbitMq::node_name)
                .collect();
            let members = self.running_members();
            if let Ok(members) = &members
                && expected
                    .iter()
                    .all(|name| members.iter().any(|m| m == name))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "RabbitMQ nodes {expected:?} to be running cluster members (last answer: {members:?})"
                    ),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for RabbitMqCluster {
    fn drop(&mut self) {
        // Nodes first (their own Drop kills them), then the epmd they used.
        self.nodes.clear();
        if let Some(mut epmd) = self.epmd.take() {
            epmd.kill_now();
        }
    }
}
