//! Where the queue's Redis is: one server (`redis://`, `rediss://`) or a Redis Cluster
//! (`redis+cluster://`, `rediss+cluster://`, a comma-separated list of seed nodes). Callers
//! see one [`RedisClient`] and one [`RedisConnection`], which implements
//! [`redis::aio::ConnectionLike`], so every command, pipeline and script runs unchanged on both.
//!
//! On a cluster every key of a queue carries the queue's hash tag (`metasync:{q}:…`), so each
//! script, pipeline and MULTI/EXEC touches one slot, on one master; the client sends it there
//! and follows `MOVED`/`ASK` redirections. Blocking pops get a connection of their own on
//! both (see [`RedisClient::blocking_connection`]).

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Value};

use super::QueueError;

/// How long connecting to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take (blocking pops excepted).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis to connect to: one server or a cluster. Cheap to clone; connects nothing by itself.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one or two per process: boxing would buy nothing
pub enum RedisClient {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster, found from its seed nodes.
    Cluster(ClusterClients),
}

/// A Redis Cluster's clients: the same nodes and settings, with and without a response timeout.
#[derive(Clone)]
pub struct ClusterClients {
    /// For commands: each answers within the response timeout, retries included.
    commands: ClusterClient,
    /// For blocking commands: no response timeout.
    blocking: ClusterClient,
    /// One client per seed node, for SUBSCRIBE (see [`RedisClient::pubsub`]).
    seeds: Vec<redis::Client>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clients' own Debug would print the password.
        f.write_str(match self {
            Self::Single(_) => "RedisClient::Single",
            Self::Cluster(_) => "RedisClient::Cluster",
        })
    }
}

fn config_error(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::InvalidClientConfig, what))
}

/// The seed nodes of a `redis+cluster://` or `rediss+cluster://` URL, one `redis://` or
/// `rediss://` URL each (the credentials and any path or query apply to every node); `None`
/// for any other URL. Errors never echo the URL, which may hold a password.
fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, RedisError>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{tail}"))
        .collect();
    if nodes.is_empty() {
        return Some(Err(config_error(
            "a Redis Cluster URL names no node (expected redis+cluster://HOST:PORT,HOST:PORT)",
        )));
    }
    Some(Ok(nodes))
}

impl RedisClient {
    /// A client for `url`: `redis://` or `rediss://` for one server, `redis+cluster://` or
    /// `rediss+cluster://` with comma-separated `HOST:PORT` seed nodes for a cluster. The
    /// `rediss` schemes are TLS (rustls), verified against `ca` (a PEM file of CA
    /// certificates) when given, else against the Mozilla roots built in; `ca` with a plain
    /// scheme is refused rather than ignored, so a typo cannot silently turn TLS off.
    pub fn open(url: &str, ca: Option<&std::path::Path>) -> Result<Self, QueueError> {
        crate::tls::install_crypto_provider();
        let root_cert = ca
            .map(|ca| {
                std::fs::read(ca).map_err(|e| {
                    RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "cannot read the Redis CA file (METASYNC_REDIS_CA)",
                        e.to_string(),
                    ))
                })
            })
            .transpose()?;
        let certificates = root_cert.map(|root_cert| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
        let Some(nodes) = cluster_nodes(url) else {
            return Ok(Self::Single(match certificates {
                None => redis::Client::open(url)?,
                Some(certificates) => redis::Client::build_with_tls(url, certificates)?,
            }));
        };
        let nodes = nodes?;
        if certificates.is_some() && !url.starts_with("rediss+") {
            // As redis::Client::build_with_tls refuses it for one server.
            return Err(config_error(
                "a Redis CA (METASYNC_REDIS_CA) needs a rediss+cluster:// URL",
            )
            .into());
        }
        let builder = || {
            let builder = ClusterClient::builder(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                // A command that fails on a broken connection or meets a redirection is
                // tried again a few times, within its response timeout (the default waits
                // seconds between tries).
                .retries(3)
                .min_retry_wait(50)
                .max_retry_wait(1_000);
            match &certificates {
                Some(certificates) => builder.certs(certificates.clone()),
                None => builder,
            }
        };
        let seeds = nodes
            .iter()
            .map(|node| match &certificates {
                None => redis::Client::open(node.as_str()),
                Some(certificates) => {
                    redis::Client::build_with_tls(node.as_str(), certificates.clone())
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::Cluster(ClusterClients {
            commands: builder().response_timeout(RESPONSE_TIMEOUT).build()?,
            blocking: builder().build()?,
            seeds,
        }))
    }

    /// A connection for SUBSCRIBE. On a cluster every node hears every PUBLISH (the cluster
    /// bus forwards it), so the first seed node that answers serves.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, QueueError> {
        match self {
            Self::Single(client) => Ok(client.get_async_pubsub().await?),
            Self::Cluster(clients) => {
                let mut failed = config_error("a Redis Cluster URL names no node");
                for seed in &clients.seeds {
                    match seed.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => failed = e,
                    }
                }
                Err(failed.into())
            }
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection for commands, shared by cloning: it reconnects after a failure, and a
    /// command answers within 5 s or fails. On a cluster, one connection per master.
    pub async fn connection(&self) -> Result<RedisConnection, QueueError> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(RedisConnection::Manager(conn))
            }
            Self::Cluster(clients) => Ok(RedisConnection::Cluster(
                clients.commands.get_async_connection().await?,
            )),
        }
    }

    /// A connection of its own for blocking commands (`BLPOP`): the server answers a
    /// connection's commands in order, so one blocked there would hold up every command
    /// multiplexed behind it, and no response timeout may cut the wait short. On a cluster
    /// this is a cluster connection of its own (its own socket to each master), so the pop
    /// goes to the node that owns the key, and follows it when the slot moves.
    pub async fn blocking_connection(&self) -> Result<RedisConnection, QueueError> {
        match self {
            Self::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(RedisConnection::Multiplexed(conn))
            }
            Self::Cluster(clients) => Ok(RedisConnection::Cluster(
                clients.blocking.get_async_connection().await?,
            )),
        }
    }
}

/// A connection to one server or to a cluster; see [`RedisClient`]. Cheap to clone: clones
/// share the connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server, reconnecting after a failure.
    Manager(ConnectionManager),
    /// One server, one socket: for blocking commands.
    Multiplexed(MultiplexedConnection),
    /// A cluster: a socket per master, commands routed by their keys' slot.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Runs a server command (e.g. `INFO`, `CONFIG GET`) on the server that holds `key`: the
    /// one server, or the master that owns `key`'s slot on a cluster (where the client would
    /// otherwise send it to every master, or to any node).
    pub async fn query_on_node_of<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> Result<T, QueueError> {
        let value = match self {
            Self::Manager(conn) => conn.req_packed_command(cmd).await?,
            Self::Multiplexed(conn) => conn.req_packed_command(cmd).await?,
            Self::Cluster(conn) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                conn.route_command(cmd.clone(), routing).await?
            }
        };
        Ok(redis::from_redis_value(value).map_err(RedisError::from)?)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Manager(conn) => conn.req_packed_command(cmd),
            Self::Multiplexed(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(conn) => conn.get_db(),
            Self::Multiplexed(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_seed_node_with_the_credentials() {
        assert!(cluster_nodes("redis://127.0.0.1:6379").is_none());
        assert!(cluster_nodes("rediss://h:6380").is_none());
        assert_eq!(
            cluster_nodes("redis+cluster://u:p%40ss@a:7000, b:7001,[::1]:7002/?protocol=resp3")
                .unwrap()
                .unwrap(),
            [
                "redis://u:p%40ss@a:7000/?protocol=resp3",
                "redis://u:p%40ss@b:7001/?protocol=resp3",
                "redis://u:p%40ss@[::1]:7002/?protocol=resp3",
            ]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://a:7000").unwrap().unwrap(),
            ["rediss://a:7000"]
        );
        let err = cluster_nodes("redis+cluster://secret@,")
            .unwrap()
            .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn a_ca_needs_tls_on_a_cluster_too() {
        let dir = std::env::temp_dir().join(format!("ca-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"not read as PEM before the scheme is checked").unwrap();
        let err = RedisClient::open("redis+cluster://127.0.0.1:7000", Some(&ca)).unwrap_err();
        assert!(err.to_string().contains("rediss+cluster"), "{err}");
        assert!(
            RedisClient::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", None)
                .unwrap()
                .is_cluster()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
