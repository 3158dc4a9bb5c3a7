//! Chaos runs at the scale: each scenario with 2,000 jobs and 2 worker processes on a
//! private Redis and catalog PostgreSQL (see `metasync_tests::chaos`).
//!
//! `cargo build --release --bins && target/release/chaos [--jobs N] [--lease-secs S]
//! [--reconcile-secs S] [--outage-secs S] [--logs DIR] [SCENARIO...]` (or
//! `deploy/local/chaos.sh`). Without scenarios it runs all of them, one after another:
//! `redis-restart`, `redis-restart-aof`, `redis-restart-failing`, `redis-restart-aof-failing`,
//! `redis-down`, `catalog-down`, `api-killed-after-batch`, `rolling-restart`.
//!
//! Per scenario it prints the time from the fault healing to every job terminal, the attempts
//! histogram, stuck jobs, leftover queue keys and PASS/FAIL against lease + reconcile period +
//! 30 s; a failed scenario keeps its processes' logs. Exits 1 if any scenario failed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metasync_tests::chaos::{self, ChaosSettings, Scenario};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut settings = ChaosSettings::full(std::env::temp_dir().join("metasync-chaos"));
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--jobs" => settings.jobs = value()?.parse()?,
            "--lease-secs" => settings.lease = Duration::from_secs(value()?.parse()?),
            "--reconcile-secs" => {
                settings.reconcile_every = Duration::from_secs(value()?.parse()?);
            }
            "--outage-secs" => settings.outage = Duration::from_secs(value()?.parse()?),
            "--logs" => settings.log_dir = PathBuf::from(value()?),
            name => scenarios.push(
                Scenario::from_name(name).with_context(|| format!("unknown scenario {name}"))?,
            ),
        }
    }
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.to_vec();
    }
    println!(
        "chaos: {} jobs, {} workers, lease {} s, reconcile every {} s, outages {} s: bound {} s",
        settings.jobs,
        settings.workers,
        settings.lease.as_secs(),
        settings.reconcile_every.as_secs(),
        settings.outage.as_secs(),
        settings.bound().as_secs()
    );
    let source = chaos::source_database().await?;
    let mut summary = Vec::new();
    for scenario in scenarios {
        let started = Instant::now();
        // On SIGINT or SIGTERM the run is dropped mid-way: dropping it stops its processes
        // and removes its private Redis and PostgreSQL, so nothing outlives the command.
        let run = tokio::select! {
            run = chaos::run(scenario, &settings, &source) => run,
            () = interrupted() => {
                let _ = metasync_tests::drop_database(&source).await;
                eprintln!("chaos: interrupted during {}; cleaned up", scenario.name());
                std::process::exit(130);
            }
        };
        let line = match run {
            Ok(outcome) => {
                println!("{outcome}");
                let time = outcome
                    .heal_to_terminal
                    .map_or("never".to_owned(), |t| format!("{:.1} s", t.as_secs_f64()));
                let verdict = if outcome.passed() { "PASS" } else { "FAIL" };
                (verdict, format!("{time:>8}  stuck {}", outcome.stuck_count))
            }
            Err(e) => {
                println!(
                    "== {}: ERROR (the harness could not run it): {e:#}",
                    scenario.name()
                );
                ("ERROR", String::new())
            }
        };
        println!(
            "   (scenario took {:.0} s)\n",
            started.elapsed().as_secs_f64()
        );
        summary.push((scenario.name(), line));
    }
    metasync_tests::drop_database(&source).await?;
    println!(
        "summary (healed → all terminal, bound {} s):",
        settings.bound().as_secs()
    );
    for (name, (verdict, line)) in &summary {
        println!("  {verdict:5} {name:26} {line}");
    }
    if summary.iter().any(|(_, (verdict, _))| *verdict != "PASS") {
        std::process::exit(1);
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
