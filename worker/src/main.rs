//! `metasync-worker`: run as many as wanted; each process gets a unique worker id.

use anyhow::Context as _;
use clap::Parser;
use metasync_shared::{ops, telemetry};
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
    let worker = Worker::build(&args).await?;
    if let Some(addr) = args.metrics_addr.0 {
        let metrics = telemetry::install_metrics(telemetry::Role::Worker, &args.queue.queue)
            .context("installing the metrics recorder")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding METASYNC_METRICS_ADDR {addr}"))?;
        ops::spawn(listener, metrics, worker.readiness().as_check());
    }
    worker.run_until(shutdown_signal()).await
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
