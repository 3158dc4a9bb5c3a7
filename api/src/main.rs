//! `metasync-api serve | migrate | token`.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use metasync_api::auth::JwtKeys;
use metasync_api::config::{JwtArgs, ServeArgs};
use metasync_api::startup::Application;
use metasync_shared::config::DatabaseArgs;
use metasync_shared::{db, telemetry};

#[derive(Parser)]
#[command(name = "metasync-api", version, about = "The metasync REST API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve the API until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Apply pending migrations and exit.
    Migrate(DatabaseArgs),
    /// Print a development bearer token for a tenant.
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Lifetime, e.g. 30m or 12h.
        #[arg(long, default_value = "12h", value_parser = metasync_shared::config::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        jwt: JwtArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => {
            telemetry::init_tracing();
            let pool = db::connect(&args)
                .await
                .context("connecting to DATABASE_URL")?;
            db::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token {
            tenant,
            subject,
            ttl,
            jwt,
        } => {
            let keys = JwtKeys::new(jwt.secret()?);
            println!("{}", keys.issue(&subject, &tenant, ttl));
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init_tracing();
    let metrics = telemetry::install_metrics().context("installing the metrics recorder")?;
    let app = Application::build(&args, Some(metrics)).await?;
    app.run_until(shutdown_signal()).await?;
    tracing::info!("metasync-api stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
