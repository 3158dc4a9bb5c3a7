//! API settings. Each is an environment variable with a matching `--flag`.

use clap::Args;
use metasync_shared::config::{ConfigError, DatabaseArgs, QueueArgs, SecretKeyArgs};
use metasync_shared::maintenance::MaintenanceArgs;
use metasync_shared::retry::RetryArgs;

/// Signing secret for bearer tokens.
#[derive(Clone, Args)]
pub struct JwtArgs {
    /// HS256 secret for bearer tokens; at least 32 bytes.
    #[arg(
        long = "jwt-secret",
        env = "METASYNC_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: String,
}

impl std::fmt::Debug for JwtArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtArgs(<redacted>)")
    }
}

impl JwtArgs {
    pub fn secret(&self) -> Result<&[u8], ConfigError> {
        if self.jwt_secret.len() < 32 {
            return Err(ConfigError::invalid(
                "METASYNC_JWT_SECRET",
                "must be at least 32 bytes long",
            ));
        }
        Ok(self.jwt_secret.as_bytes())
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

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub secret_key: SecretKeyArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
}
