//! Twelve-factor settings shared by both binaries. Every setting is an environment variable
//! with a matching `--flag` (clap `env`). Secrets are parsed by hand after clap so that a
//! malformed value is never echoed back in an error message.

use std::time::Duration;

use base64::Engine as _;
use clap::Args;

use crate::custody::{Fingerprinter, OpeningKeys, SealingKey};
use crate::outbound::{HostPolicy, Resolver, StaticResolver, SystemResolver};

/// Connection settings for the catalog PostgreSQL.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The catalog PostgreSQL, e.g. `postgres://localhost/metasync`.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Largest number of pooled connections to the catalog database.
    #[arg(long, env = "METASYNC_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

/// Connection settings for the Redis that carries deliveries.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Redis: one server, `redis://HOST:PORT` (`rediss://` for TLS), or a Redis Cluster,
    /// `redis+cluster://HOST:PORT,HOST:PORT,…` (`rediss+cluster://` for TLS) naming some of
    /// its nodes, from which the client learns the rest. Credentials go before the hosts
    /// (`redis+cluster://USER:PASSWORD@HOST:PORT,…`) and apply to every node.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: String,

    /// The queue name. Every key of the queue is hash-tagged with it.
    #[arg(
        long = "queue",
        env = "METASYNC_QUEUE",
        default_value = "metasync-sync"
    )]
    pub queue: String,

    /// A PEM file of the CA certificate(s) Redis's certificate is verified against, for a
    /// `rediss://` or `rediss+cluster://` URL; unset: the Mozilla roots built in.
    #[arg(long = "redis-ca", env = "METASYNC_REDIS_CA")]
    pub redis_ca: Option<std::path::PathBuf>,

    /// Refuse to start when Redis's `maxmemory-policy` is not `noeviction`; false: warn.
    #[arg(long = "redis-require-noeviction", env = "METASYNC_REDIS_REQUIRE_NOEVICTION",
          default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_require_noeviction: bool,
}

/// Redis would evict keys and `METASYNC_REDIS_REQUIRE_NOEVICTION` is set.
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis's maxmemory-policy is `{0}`, not `noeviction`, and METASYNC_REDIS_REQUIRE_NOEVICTION \
     is set: under memory pressure Redis would drop deliveries and leases without an error"
)]
pub struct EvictingRedis(pub String);

impl QueueArgs {
    /// A Redis client for `REDIS_URL`: one server or a cluster, TLS for `rediss://` and
    /// `rediss+cluster://` (with `METASYNC_REDIS_CA`).
    pub fn client(&self) -> Result<crate::queue::RedisClient, crate::queue::QueueError> {
        crate::queue::redis_client(&self.redis_url, self.redis_ca.as_deref())
    }

    /// Connects the queue with [`QueueArgs::client`].
    pub async fn connect(&self) -> Result<crate::queue::Queue, crate::queue::QueueError> {
        crate::queue::Queue::connect_client(self.client()?, &self.queue).await
    }

    /// Redis's `maxmemory-policy` (`CONFIG GET`) on the server that holds the queue (on a
    /// cluster, the master of its slot); `None` if the server does not say.
    pub async fn eviction_policy(&self) -> Result<Option<String>, crate::queue::QueueError> {
        let mut conn = self.client()?.connection().await?;
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg("maxmemory-policy");
        let key = crate::queue::Keys::new(&self.queue).workers;
        let mut config: std::collections::HashMap<String, String> =
            conn.query_on_node_of(&get, &key).await?;
        Ok(config.remove("maxmemory-policy"))
    }

    /// The start-up check of both binaries. Any policy but `noeviction` lets a full Redis drop
    /// keys silently: deliveries (a job then waits for the reconciler), worker leases (their
    /// deliveries are reaped while running) and the pending set. Warns, or refuses with
    /// `METASYNC_REDIS_REQUIRE_NOEVICTION`. A server that refuses `CONFIG` (disabled or
    /// renamed, as on some managed services) cannot be checked: a warning says so, and start-up
    /// goes on even when noeviction is required, since nothing shows the policy is wrong.
    pub async fn check_eviction_policy(&self) -> Result<(), EvictingRedis> {
        match self.eviction_policy().await {
            Ok(Some(policy)) if policy == "noeviction" => Ok(()),
            Ok(Some(policy)) if self.redis_require_noeviction => Err(EvictingRedis(policy)),
            Ok(Some(policy)) => {
                tracing::warn!(
                    maxmemory_policy = %policy,
                    "Redis may evict keys under memory pressure, losing deliveries and leases: \
                     set maxmemory-policy to noeviction (METASYNC_REDIS_REQUIRE_NOEVICTION=true \
                     refuses to start instead)"
                );
                Ok(())
            }
            Ok(None) => {
                tracing::warn!(
                    "Redis did not report its maxmemory-policy: make sure it is noeviction"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not check Redis's maxmemory-policy (CONFIG GET refused?): make sure \
                     it is noeviction"
                );
                Ok(())
            }
        }
    }
}

/// What the API needs to store passwords (see [`crate::custody`]): the fleet's public sealing
/// key, which seals but cannot open, and the key of password fingerprints.
#[derive(Clone, Args)]
pub struct SealingArgs {
    /// The public master key, `KEY_ID:BASE64` as `metasync-worker keygen` prints it.
    #[arg(long = "sealing-key", env = "METASYNC_SEALING_KEY")]
    pub sealing_key: String,
    /// 32 random bytes, base64 (`openssl rand -base64 32`): keys password fingerprints.
    #[arg(
        long = "password-fingerprint-key",
        env = "METASYNC_PASSWORD_FINGERPRINT_KEY",
        hide_env_values = true
    )]
    pub fingerprint_key: String,
}

impl std::fmt::Debug for SealingArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingArgs")
            .field("sealing_key", &self.sealing_key)
            .finish_non_exhaustive()
    }
}

impl SealingArgs {
    /// The public key passwords are sealed to.
    pub fn sealing_key(&self) -> Result<SealingKey, ConfigError> {
        SealingKey::parse(&self.sealing_key)
            .map_err(|e| ConfigError::invalid("METASYNC_SEALING_KEY", e.to_string()))
    }

    /// The fingerprinter of re-sent passwords.
    pub fn fingerprinter(&self) -> Result<Fingerprinter, ConfigError> {
        decode_key32("METASYNC_PASSWORD_FINGERPRINT_KEY", &self.fingerprint_key)
            .map(Fingerprinter::new)
    }
}

/// What a worker needs to open passwords: the private master keys (several while a rotation
/// runs) and, until every record is re-sealed, the key of the earlier AES scheme.
#[derive(Clone, Args)]
pub struct OpeningArgs {
    /// `KEY_ID:BASE64[,KEY_ID:BASE64…]`, as `metasync-worker keygen` prints them.
    #[arg(
        long = "opening-keys",
        env = "METASYNC_OPENING_KEYS",
        hide_env_values = true
    )]
    pub opening_keys: String,
    /// The earlier scheme's AES-256 key (32 bytes, base64), to open records sealed before
    /// `rotate-master-key` re-sealed them; unset once none are left.
    #[arg(
        long = "legacy-secret-key",
        env = "METASYNC_SECRET_KEY",
        hide_env_values = true
    )]
    pub legacy_secret_key: Option<String>,
}

impl std::fmt::Debug for OpeningArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpeningArgs(<redacted>)")
    }
}

impl OpeningArgs {
    /// The keys. Errors name the setting, never the value.
    pub fn keys(&self) -> Result<OpeningKeys, ConfigError> {
        let keys = OpeningKeys::parse(&self.opening_keys)
            .map_err(|e| ConfigError::invalid("METASYNC_OPENING_KEYS", e.to_string()))?;
        match &self.legacy_secret_key {
            Some(legacy) => Ok(keys.with_legacy(&decode_key32("METASYNC_SECRET_KEY", legacy)?)),
            None => Ok(keys),
        }
    }
}

/// Where metasync may connect on a tenant's behalf (see [`crate::outbound`]).
#[derive(Debug, Clone, Default, Args)]
pub struct OutboundArgs {
    /// Comma-separated CIDRs that are otherwise denied but allowed here, e.g.
    /// `10.0.0.0/8,fd00::/8` for sources on a private network, or `127.0.0.0/8,::1/128` for a
    /// laptop. Loopback, private and link-local addresses are refused unless listed.
    #[arg(
        long = "outbound-allow",
        env = "METASYNC_OUTBOUND_ALLOW",
        default_value = ""
    )]
    pub outbound_allow: String,
    /// How host names are resolved: `system` (the default: the operating system's resolver),
    /// or `static:NAME=ADDR,…`, a fixed map used instead of DNS (a name may repeat, once per
    /// address; every other name does not resolve), for runs that must send no DNS query
    /// off the machine, such as the API fuzzing.
    #[arg(
        long = "outbound-resolver",
        env = "METASYNC_OUTBOUND_RESOLVER",
        default_value = "system"
    )]
    pub outbound_resolver: String,
}

impl OutboundArgs {
    /// The policy, resolving names as `METASYNC_OUTBOUND_RESOLVER` says.
    pub fn policy(&self) -> Result<HostPolicy, ConfigError> {
        let allow = HostPolicy::parse_allowlist(&self.outbound_allow)
            .map_err(|e| ConfigError::invalid("METASYNC_OUTBOUND_ALLOW", e))?;
        let resolver = parse_resolver(&self.outbound_resolver)
            .map_err(|e| ConfigError::invalid("METASYNC_OUTBOUND_RESOLVER", e))?;
        Ok(HostPolicy::new(allow, resolver))
    }
}

/// `system` (or empty) or `static:NAME=ADDR,…`.
fn parse_resolver(text: &str) -> Result<std::sync::Arc<dyn Resolver>, String> {
    let text = text.trim();
    if text.is_empty() || text == "system" {
        return Ok(std::sync::Arc::new(SystemResolver));
    }
    let Some(map) = text.strip_prefix("static:") else {
        return Err(format!(
            "{text:?}: expected `system` or `static:NAME=ADDR,…`"
        ));
    };
    let mut names: Vec<(String, Vec<std::net::IpAddr>)> = Vec::new();
    for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry
            .split_once('=')
            .and_then(|(name, addr)| Some((name.trim(), addr.trim().parse().ok()?)))
            .ok_or_else(|| format!("{entry:?} is not NAME=ADDR (e.g. localhost=127.0.0.1)"))?;
        match names.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, addrs)) => addrs.push(addr),
            None => names.push((name.to_ascii_lowercase(), vec![addr])),
        }
    }
    Ok(std::sync::Arc::new(StaticResolver(names)))
}

/// Decodes a base64 32-byte key. The error names the setting and never the value.
pub fn decode_key32(name: &'static str, text: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ConfigError::invalid(name, "is not valid base64"))?;
    bytes
        .try_into()
        .map_err(|_| ConfigError::invalid(name, "must decode to exactly 32 bytes"))
}

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct ConfigError {
    /// The environment variable, e.g. `METASYNC_SECRET_KEY`.
    pub name: &'static str,
    /// Why it is unusable, phrased to follow the name.
    pub reason: String,
}

impl ConfigError {
    /// The error for setting `name`.
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

/// Parses a duration written as whole milliseconds (`250ms`), seconds (`30s`, `30`),
/// minutes (`5m`) or hours (`12h`). Used for every timeout setting so that operators write them one way.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 250ms, 30s, 5m or 12h"))?;
    Ok(Duration::from_millis(n.saturating_mul(scale)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_three_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_bad_secret_key_is_named_but_not_echoed() {
        let err = decode_key32("METASYNC_SECRET_KEY", "c2hvcnQ=")
            .unwrap_err()
            .to_string();
        assert!(err.contains("METASYNC_SECRET_KEY"), "{err}");
        assert!(!err.contains("c2hvcnQ="), "{err}");
    }

    #[tokio::test]
    async fn a_static_resolver_answers_only_its_names() {
        let args = OutboundArgs {
            outbound_allow: "127.0.0.0/8,::1/128".into(),
            outbound_resolver: "static:localhost=127.0.0.1, LOCALHOST=::1".into(),
        };
        let policy = args.policy().unwrap();
        assert_eq!(
            policy.resolve("localhost").await.unwrap(),
            [
                "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            policy.resolve("db.example.com").await,
            Err(crate::outbound::PolicyError::Unresolved)
        );
        for bad in ["dns", "static:localhost", "static:a=not-an-ip"] {
            let args = OutboundArgs {
                outbound_resolver: bad.into(),
                ..OutboundArgs::default()
            };
            let err = args.policy().unwrap_err().to_string();
            assert!(err.contains("METASYNC_OUTBOUND_RESOLVER"), "{bad}: {err}");
        }
    }
}
