//! A private three-master Redis Cluster on loopback, for the tests that prove the queue on a
//! cluster: `redis-server --cluster-enabled yes` three times, joined by
//! `redis-cli --cluster create`, no replicas, no persistence.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

use crate::{eventually, free_port, process_alive, unique_name};

/// Three masters on free ports of 127.0.0.1, each in its own directory under one
/// `mstest-redis-cluster-…` directory (so `test.sh`'s clean-up of stale private servers finds
/// them: each node's directory holds its `pid`). Every slot is assigned and every node says
/// `cluster_state:ok` when [`RedisCluster::start`] returns; the nodes are killed (by pid) and
/// the directory removed on drop.
pub struct RedisCluster {
    /// The masters' client ports.
    pub ports: Vec<u16>,
    children: Vec<std::process::Child>,
    dir: PathBuf,
}

const MASTERS: usize = 3;

impl RedisCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("mstest-redis-cluster", '-'));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        // A port is free when picked but could be taken before a node binds it: then that
        // node exits at once, and the whole set is tried again on other ports.
        for _ in 0..5 {
            if cluster.start_nodes().await.is_ok() {
                cluster.create().await?;
                return Ok(cluster);
            }
            cluster.kill();
        }
        anyhow::bail!("redis-server did not start three cluster nodes on free ports")
    }

    async fn start_nodes(&mut self) -> anyhow::Result<()> {
        // A client port and a cluster bus port per node (the default bus port, client port
        // + 10000, may be taken or past 65535).
        let mut ports = Vec::new();
        while ports.len() < 2 * MASTERS {
            let port = free_port()?;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let (client_ports, bus_ports) = ports.split_at(MASTERS);
        self.ports = client_ports.to_vec();
        for (port, bus_port) in client_ports.iter().zip(bus_ports) {
            let node_dir = self.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--cluster-port", &bus_port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server")?;
            std::fs::write(node_dir.join("pid"), child.id().to_string())?;
            self.children.push(child);
        }
        for (port, child) in self.ports.clone().into_iter().zip(&self.children) {
            let pid = child.id();
            eventually(
                Duration::from_secs(30),
                "a cluster node to answer",
                || async move {
                    anyhow::ensure!(process_alive(pid), "redis-server exited");
                    Ok(node_query::<String>(port, &["PING"]).await.ok())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Joins the nodes into one cluster and waits until every node agrees it is `ok`.
    async fn create(&self) -> anyhow::Result<()> {
        let output = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        // redis-cli waits for the nodes to join with no limit of its own.
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .context("redis-cli --cluster create still waiting after 60 s")?
            .context("running redis-cli --cluster create")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for &port in &self.ports {
            eventually(
                Duration::from_secs(30),
                "the cluster to be ok on every node",
                || async move {
                    let info: String = node_query(port, &["CLUSTER", "INFO"]).await?;
                    Ok(info
                        .lines()
                        .any(|line| line.trim() == "cluster_state:ok")
                        .then_some(()))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The cluster URL that names every node, as `REDIS_URL` takes it.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The client port of the master that owns `key`'s slot (`CLUSTER KEYSLOT`, then
    /// `CLUSTER SLOTS`), asked of the first node.
    pub async fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let port = self.ports[0];
        let slot: i64 = node_query(port, &["CLUSTER", "KEYSLOT", key]).await?;
        let ranges: Vec<Vec<redis::Value>> = node_query(port, &["CLUSTER", "SLOTS"]).await?;
        for range in ranges {
            let [start, end, master, ..] = range.as_slice() else {
                anyhow::bail!("CLUSTER SLOTS answered an entry of fewer than 3 fields");
            };
            let start: i64 = redis::from_redis_value(start.clone())?;
            let end: i64 = redis::from_redis_value(end.clone())?;
            if (start..=end).contains(&slot) {
                let master: Vec<redis::Value> = redis::from_redis_value(master.clone())?;
                let port = master.get(1).context("a master without a port")?;
                return Ok(redis::from_redis_value(port.clone())?);
            }
        }
        anyhow::bail!("no master owns slot {slot}")
    }

    /// The keys matching `pattern` on the node on `port` alone.
    pub async fn node_keys(&self, port: u16, pattern: &str) -> anyhow::Result<Vec<String>> {
        node_query(port, &["KEYS", pattern]).await
    }

    /// What went wrong on the nodes, each line prefixed by the node's port: every class of
    /// error reply counted (`INFO errorstats`), and what is unexpected. That is every command
    /// with failed or rejected calls (`INFO commandstats`: a `CROSSSLOT` is a rejected call,
    /// a script touching another slot a failed one), except the `EVALSHA`s answered
    /// `NOSCRIPT` before their script was loaded; and more `ERR` replies than two per
    /// connection (the client sends `CLIENT SETINFO` twice on each, which Redis 7.0 answers
    /// with `ERR unknown subcommand`, counted under no command).
    pub async fn errors(&self) -> anyhow::Result<ClusterErrors> {
        let mut found = ClusterErrors::default();
        for &port in &self.ports {
            let errors: String = node_query(port, &["INFO", "errorstats"]).await?;
            let commands: String = node_query(port, &["INFO", "commandstats"]).await?;
            let count = |line: &str, field: &str| -> u64 {
                line.split([',', ':'])
                    .find_map(|f| f.strip_prefix(field)?.parse().ok())
                    .unwrap_or(0)
            };
            let stats: String = node_query(port, &["INFO", "stats"]).await?;
            let noscript = errors
                .lines()
                .find(|line| line.starts_with("errorstat_NOSCRIPT:"))
                .map_or(0, |line| count(line, "count="));
            found.replies.extend(
                errors
                    .lines()
                    .filter(|line| line.starts_with("errorstat_"))
                    .map(|line| format!("{port}: {}", line.trim())),
            );
            let connections = stats
                .lines()
                .find_map(|line| line.strip_prefix("total_connections_received:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let err = errors
                .lines()
                .find(|line| line.starts_with("errorstat_ERR:"))
                .map_or(0, |line| count(line, "count="));
            if err > 2 * connections {
                found.unexpected.push(format!(
                    "{port}: {err} ERR replies, more than two per connection ({connections})"
                ));
            }
            found.unexpected.extend(
                commands
                    .lines()
                    .filter(|line| {
                        let (failed, rejected) =
                            (count(line, "failed_calls="), count(line, "rejected_calls="));
                        let first_loads = line.starts_with("cmdstat_evalsha:")
                            && rejected == 0
                            && failed <= noscript;
                        (failed > 0 || rejected > 0) && !first_loads
                    })
                    .map(|line| format!("{port}: {}", line.trim())),
            );
        }
        Ok(found)
    }

    fn kill(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What [`RedisCluster::errors`] found.
#[derive(Debug, Default)]
pub struct ClusterErrors {
    /// `errorstat_<PREFIX>:count=N` lines.
    pub replies: Vec<String>,
    /// `cmdstat_<command>:…` lines of commands with failed or rejected calls, and nodes
    /// with unexplained `ERR` replies.
    pub unexpected: Vec<String>,
}

/// One command to the node on `port` alone (no cluster routing).
async fn node_query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> anyhow::Result<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok(redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(&mut conn)
        .await?)
}
