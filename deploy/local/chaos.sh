#!/usr/bin/env bash
# Chaos runs at the issue's scale: every scenario with 2,000 jobs and 2 worker processes, each
# on a private Redis and catalog PostgreSQL (free ports on 127.0.0.1, temp dirs removed at the
# end), the source database on the local PostgreSQL. Per scenario it prints the time from the
# fault healing to every job terminal, the attempts histogram, stuck jobs, leftover queue keys
# and PASS/FAIL against lease + reconcile period + 30 s (55 s with the defaults); failed
# scenarios keep their processes' logs (path printed). Exits 1 if any scenario failed.
#
#   deploy/local/chaos.sh                               # all scenarios, release build
#   deploy/local/chaos.sh redis-down catalog-down       # some of them
#   deploy/local/chaos.sh --jobs 500 --outage-secs 10   # smaller
#   CHAOS_PROFILE=debug deploy/local/chaos.sh           # the debug build (no release build)
#
# Scenarios: redis-restart, redis-restart-aof, redis-restart-failing, redis-restart-aof-failing,
# redis-down, catalog-down, api-killed-after-batch, rolling-restart (tests/src/chaos.rs says
# what each does). The whole run is bounded by CHAOS_TIMEOUT seconds (default 3600); on timeout
# or Ctrl-C the harness stops its processes and removes its servers before exiting.
set -euo pipefail

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh
ensure_rust
ensure_services
command -v redis-server >/dev/null || { echo "chaos: redis-server is missing" >&2; exit 1; }

profile="${CHAOS_PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [[ "$profile" == release ]]; then
    cargo build --release --bins
else
    cargo build --bins
fi
timeout --signal=TERM --kill-after=60 "${CHAOS_TIMEOUT:-3600}" \
    "$CARGO_TARGET_DIR/$profile/chaos" "$@"
