//! `metasync-api serve | migrate | token | openapi`.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use metasync_api::auth::Role;
use metasync_api::config::{JwtArgs, ServeArgs};
use metasync_api::startup::Application;
use metasync_shared::config::DatabaseArgs;
use metasync_shared::ids::TenantId;
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
    /// Print a bearer token for development (HS256 only; production tokens come from your
    /// identity provider). Its lifetime is capped by METASYNC_JWT_MAX_LIFETIME.
    Token {
        /// The tenant; omitted only for the `fleet` role.
        #[arg(long)]
        tenant: Option<String>,
        /// viewer, operator, admin or fleet.
        #[arg(long, default_value = "admin")]
        role: Role,
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Lifetime, e.g. 30m or 12h.
        #[arg(long, default_value = "12h", value_parser = metasync_shared::config::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        jwt: JwtArgs,
    },
    /// Print the OpenAPI 3.1 document (what `GET /openapi.json` serves) and exit.
    Openapi,
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
            role,
            subject,
            ttl,
            jwt,
        } => {
            let verifier = jwt.verifier()?;
            anyhow::ensure!(
                ttl <= jwt.max_lifetime,
                "--ttl {ttl:?} exceeds METASYNC_JWT_MAX_LIFETIME ({:?}): the API would refuse it",
                jwt.max_lifetime
            );
            if let Some(tenant) = &tenant {
                TenantId::parse(tenant).context("--tenant")?;
            }
            anyhow::ensure!(
                tenant.is_some() != (role == Role::Fleet),
                "a fleet token names no tenant; every other role needs --tenant"
            );
            let token = verifier.issue(&subject, role, tenant.as_deref(), ttl)?;
            // The caveat goes to stderr, so `$(metasync-api token …)` captures the token alone.
            eprintln!(
                "metasync-api token: a development token; production tokens come from your identity provider"
            );
            println!("{token}");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", metasync_api::openapi::document_json());
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init_tracing();
    let metrics = telemetry::install_metrics(telemetry::Role::Api, &args.queue.queue)
        .context("installing the metrics recorder")?;
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
