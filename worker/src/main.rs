//! `metasync-worker`: run as many as wanted; each process gets a unique worker id.

use anyhow::Context as _;
use clap::Parser;
use metasync_shared::telemetry;
use metasync_worker::config::WorkerArgs;
use metasync_worker::custody;
use metasync_worker::startup::Worker;

#[derive(Parser)]
#[command(name = "metasync-worker", version, about = "The metasync sync worker")]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The custody subcommands take their own settings; a plain start takes the worker's.
    let argv: Vec<String> = std::env::args().collect();
    if custody::is_custody_command(&argv) {
        telemetry::init_tracing();
        return custody::run(custody::CustodyCli::parse()).await;
    }
    let args = Cli::parse().args;
    telemetry::init_tracing();
    if let Some(addr) = args.metrics_addr {
        telemetry::serve_metrics(addr).context("serving METASYNC_METRICS_ADDR")?;
    }
    Worker::build(&args)
        .await?
        .run_until(shutdown_signal())
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested");
}
