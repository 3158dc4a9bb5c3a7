#!/usr/bin/env bash
# Prints the directory holding the Debian package's `prometheus` and `promtool` binaries,
# unpacked (never installed: no daemon, no service) into a cache under /var/tmp the first
# time: `apt-get download prometheus && dpkg -x`. Used by the metrics contract test (promtool
# check metrics), deploy/local/check-observability.sh and check-deploy-style rule checks.
#
#   "$(deploy/local/prometheus.sh)/promtool" check rules deploy/prometheus/alerts.yml
#
# METASYNC_PROMETHEUS_DIR overrides the cache. Exits non-zero (with the reason on stderr) when
# the package cannot be had, so callers can skip loudly.
set -euo pipefail

CACHE="${METASYNC_PROMETHEUS_DIR:-/var/tmp/metasync-prometheus}"
BIN="$CACHE/root/usr/bin"

if [[ ! -x "$BIN/promtool" || ! -x "$BIN/prometheus" ]]; then
    mkdir -p "$CACHE"
    # Another run may be unpacking too: one at a time.
    exec 9>"$CACHE/.lock"
    flock 9
    if [[ ! -x "$BIN/promtool" || ! -x "$BIN/prometheus" ]]; then
        work="$(mktemp -d "$CACHE/dl.XXXXXX")"
        trap 'rm -rf "$work"' EXIT
        (cd "$work" && apt-get download prometheus >&2) || {
            echo "prometheus.sh: apt-get download prometheus failed" >&2
            exit 1
        }
        rm -rf "$CACHE/root"
        dpkg -x "$work"/prometheus_*.deb "$CACHE/root"
    fi
fi
"$BIN/promtool" --version >/dev/null 2>&1 || {
    echo "prometheus.sh: $BIN/promtool does not run" >&2
    exit 1
}
echo "$BIN"
