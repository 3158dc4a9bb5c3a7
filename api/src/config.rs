//! API settings. Each is an environment variable with a matching `--flag`.

use std::time::Duration;

use clap::Args;
use std::num::NonZeroU32;

use jsonwebtoken::Algorithm;
use metasync_shared::config::{
    ConfigError, DatabaseArgs, OutboundArgs, QueueArgs, SealingArgs, parse_duration,
};

use crate::auth::{InternalKeys, JwtPolicy, JwtVerifier};
use crate::quotas::Limits;
use metasync_shared::maintenance::MaintenanceArgs;
use metasync_shared::retry::RetryArgs;

/// How bearer tokens are verified.
#[derive(Clone, Args)]
pub struct JwtArgs {
    /// The one accepted algorithm: HS256 (shared secret) or RS256/ES256 (public keys).
    #[arg(long = "jwt-algorithm", env = "METASYNC_JWT_ALGORITHM", default_value = "HS256", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,
    /// HS256 secret; at least 32 bytes.
    #[arg(
        long = "jwt-secret",
        env = "METASYNC_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// RS256/ES256: a PEM public key, or a JWKS file whose keys are chosen by `kid` (re-read
    /// when a token names an unknown `kid`, so keys rotate without a restart).
    #[arg(long = "jwt-public-keys", env = "METASYNC_JWT_PUBLIC_KEYS")]
    pub public_keys: Option<std::path::PathBuf>,
    /// When set, tokens must carry this `iss`.
    #[arg(long = "jwt-issuer", env = "METASYNC_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`; when not, an `aud` claim is ignored.
    #[arg(long = "jwt-audience", env = "METASYNC_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// The longest lifetime a token may have, e.g. 24h.
    #[arg(long = "jwt-max-lifetime", env = "METASYNC_JWT_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub max_lifetime: Duration,
    /// The claim that names the tenant.
    #[arg(
        long = "jwt-tenant-claim",
        env = "METASYNC_JWT_TENANT_CLAIM",
        default_value = "tenant"
    )]
    pub tenant_claim: String,
}

impl std::fmt::Debug for JwtArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtArgs")
            .field("algorithm", &self.algorithm)
            .field("public_keys", &self.public_keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

impl JwtArgs {
    /// Settings for an HS256 `secret` with every other setting at its default.
    pub fn hs256(secret: impl Into<String>) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            jwt_secret: Some(secret.into()),
            public_keys: None,
            issuer: None,
            audience: None,
            max_lifetime: Duration::from_secs(24 * 3600),
            tenant_claim: "tenant".to_owned(),
        }
    }

    /// The verifier these settings describe; a bad setting stops start-up.
    pub fn verifier(&self) -> Result<JwtVerifier, ConfigError> {
        let policy = JwtPolicy {
            algorithm: self.algorithm,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            max_lifetime: self.max_lifetime,
            tenant_claim: self.tenant_claim.clone(),
        };
        if self.tenant_claim.is_empty() {
            return Err(ConfigError::invalid(
                "METASYNC_JWT_TENANT_CLAIM",
                "must not be empty",
            ));
        }
        match (self.algorithm, &self.jwt_secret, &self.public_keys) {
            (Algorithm::HS256, Some(secret), None) => {
                if secret.len() < 32 {
                    return Err(ConfigError::invalid(
                        "METASYNC_JWT_SECRET",
                        "must be at least 32 bytes long",
                    ));
                }
                Ok(JwtVerifier::hs256(secret.as_bytes(), policy))
            }
            (Algorithm::HS256, _, _) => Err(ConfigError::invalid(
                "METASYNC_JWT_SECRET",
                "HS256 needs a secret and no public keys",
            )),
            (_, None, Some(path)) => JwtVerifier::public_keys(path.clone(), policy)
                .map_err(|e| ConfigError::invalid("METASYNC_JWT_PUBLIC_KEYS", e.to_string())),
            (_, _, _) => Err(ConfigError::invalid(
                "METASYNC_JWT_PUBLIC_KEYS",
                "RS256 and ES256 need public keys and no secret",
            )),
        }
    }
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    match s {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        _ => Err(format!("{s:?}: expected HS256, RS256 or ES256")),
    }
}

/// The internal API keys, for a platform's system service on `/internal/*`.
#[derive(Clone, Default, Args)]
pub struct InternalKeyArgs {
    /// `id:secret[,id:secret…]`: the keys accepted on `/internal/*` as
    /// `Authorization: Bearer <secret>` (several, to rotate one without downtime); secrets at
    /// least 32 bytes. Unset: the internal routes accept nothing.
    #[arg(
        long = "internal-api-keys",
        env = "METASYNC_INTERNAL_API_KEYS",
        hide_env_values = true
    )]
    pub internal_api_keys: Option<String>,
}

impl std::fmt::Debug for InternalKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalKeyArgs").finish_non_exhaustive()
    }
}

impl InternalKeyArgs {
    /// The keys these settings describe (none when unset); a bad setting stops start-up.
    pub fn keys(&self) -> Result<InternalKeys, ConfigError> {
        match &self.internal_api_keys {
            None => Ok(InternalKeys::default()),
            Some(text) => InternalKeys::parse(text)
                .map_err(|e| ConfigError::invalid("METASYNC_INTERNAL_API_KEYS", e)),
        }
    }
}

/// Per-tenant limits and HTTP server timeouts (see [`crate::quotas`]).
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// Resource creations, changes and deletions per minute per tenant (a quarter of it at once).
    #[arg(long, env = "METASYNC_RATE_WRITES_PER_MINUTE", default_value = "120")]
    pub writes_per_minute: NonZeroU32,
    /// Sync requests (a resource, a batch, a retry) per minute per tenant.
    #[arg(long, env = "METASYNC_RATE_SYNCS_PER_MINUTE", default_value = "120")]
    pub syncs_per_minute: NonZeroU32,
    /// Test-connection requests per minute per tenant (each makes a worker dial the source).
    #[arg(long, env = "METASYNC_RATE_TESTS_PER_MINUTE", default_value = "30")]
    pub tests_per_minute: NonZeroU32,
    /// Most resources per tenant.
    #[arg(long, env = "METASYNC_MAX_RESOURCES", default_value = "1000")]
    pub max_resources: u32,
    /// Most unfinished jobs per tenant; a batch counts all its jobs.
    #[arg(long, env = "METASYNC_MAX_ACTIVE_JOBS", default_value = "10000")]
    pub max_active_jobs: u32,
    /// Most long-polls (`?wait=`) per tenant at once.
    #[arg(long, env = "METASYNC_MAX_WAITERS", default_value = "20")]
    pub max_waiters: u32,
    /// The longest a long-poll holds, whatever `?wait=` asks for.
    #[arg(long, env = "METASYNC_MAX_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// How often a long-poll re-reads its job even without a wake-up: the bound on seeing a
    /// change that is not announced (a claim, a rescue by a maintenance duty).
    #[arg(long, env = "METASYNC_WAIT_RECHECK", default_value = "1s", value_parser = parse_duration)]
    pub wait_recheck: Duration,
    /// Shortest schedule interval, and shortest gap between two firings of a cron schedule.
    #[arg(long, env = "METASYNC_MIN_SCHEDULE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub min_schedule_interval: Duration,
    /// A connection is closed when a request's headers are not complete this long after it
    /// opened or after the previous response (so also an idle keep-alive connection).
    #[arg(long, env = "METASYNC_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
}

impl QuotaArgs {
    /// The per-tenant limits.
    pub fn limits(&self) -> Limits {
        Limits {
            writes_per_minute: self.writes_per_minute,
            syncs_per_minute: self.syncs_per_minute,
            tests_per_minute: self.tests_per_minute,
            max_resources: self.max_resources,
            max_active_jobs: self.max_active_jobs,
            max_waiters: self.max_waiters,
            max_wait: self.max_wait,
            wait_recheck: self.wait_recheck,
            min_schedule_interval: self.min_schedule_interval,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long = "addr",
        env = "METASYNC_API_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: std::net::SocketAddr,

    /// The operations listener (`/metrics`, `/healthz`, `/readyz`), apart from the public API
    /// so that neither scrapes nor probes need a token and the public port exposes no metrics;
    /// `off` for none.
    #[arg(long, env = "METASYNC_METRICS_ADDR", default_value = "127.0.0.1:9091",
          value_parser = metasync_shared::ops::parse_listen_addr)]
    pub metrics_addr: metasync_shared::ops::ListenAddr,

    /// How long a request waits for a catalog database connection before it answers 503 with
    /// `Retry-After` (the database is down, restarting or out of connections).
    #[arg(long, env = "METASYNC_API_DB_ACQUIRE_TIMEOUT", default_value = "500ms",
          value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,

    /// How long a test-connection request waits for a worker's answer before a 504 (or a 503
    /// when no worker took it). Keep it above the workers' METASYNC_CONNECT_TIMEOUT (10s) plus
    /// a few seconds for the policy check, a connection permit and the checks on the session.
    #[arg(long, env = "METASYNC_CONNECTION_TEST_TIMEOUT", default_value = "15s",
          value_parser = parse_duration)]
    pub connection_test_timeout: Duration,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub sealing: SealingArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub internal: InternalKeyArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub outbound: OutboundArgs,
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
}
