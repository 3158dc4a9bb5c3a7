//! Logging and metrics set-up for both binaries. Metric names follow
//! `metasync_<name>_<unit>[_total]`; `docs/metrics.md` is their contract.

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber: `RUST_LOG` filters (default `info`), and
/// `METASYNC_LOG_FORMAT=json` switches to one JSON object per line for log shippers.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("METASYNC_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests start several components in one process) is harmless.
    let _ = result;
}

fn prometheus() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new().set_buckets(&[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

/// Installs the Prometheus recorder; the operations listener (`crate::ops`) renders the handle.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    prometheus()?.install_recorder()
}
