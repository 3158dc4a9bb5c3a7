#!/usr/bin/env bash
# Fuzzes the running API from its own OpenAPI document with schemathesis: every operation,
# at least FUZZ_EXAMPLES generated cases each (default 500), every check on. Passes only with
# no server error and no answer that breaks the document (status, content type, headers,
# body schema).
#
#   deploy/local/fuzz.sh                        # build, start the API, fuzz, clean up
#   FUZZ_EXAMPLES=100 deploy/local/fuzz.sh      # a quicker run
#   deploy/local/fuzz.sh --include-path-regex '^/v1/jobs'   # extra arguments go to schemathesis
#
# The API runs alone (no worker, so no sync or connection test ever dials a source: a test
# is answered 503, "no live worker"), on 127.0.0.1, with its own
# catalog database and queue, fresh keys, an admin token, the per-tenant limits raised (the
# 429s stay documented, but the fuzzer should reach the handlers behind them) and
# METASYNC_OUTBOUND_RESOLVER=static:…: the hosts the fuzzer registers are checked against the
# outbound policy without a single DNS query leaving the machine.
#
# schemathesis (4.x, from PyPI) is installed into a venv under /var/tmp when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh

EXAMPLES="${FUZZ_EXAMPLES:-500}"
VENV="${METASYNC_FUZZ_VENV:-/var/tmp/metasync-fuzz-venv}"
SCHEMATHESIS_VERSION='schemathesis>=4.32,<5'
WORK="$(mktemp -d)"
API_PID=""
TOKEN=""
FLEET_TOKEN=""
INTERNAL_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '/+=')"
# Named like the test harness's (`mstest_…_r<pid>_<uuid v7 hex>`, `test-r<pid>-…`), so that
# test.sh removes what a killed run leaves behind.
RUN_ID="$(printf '%012x' "$(date +%s%3N)")$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')"
CATALOG_DB="mstest_fuzz_r$$_${RUN_ID}"
QUEUE="test-r$$-${RUN_ID}"

log() { printf 'fuzz: %s\n' "$*" >&2; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$API_PID" ]]; then
        kill -TERM "$API_PID" 2>/dev/null || true
        wait "$API_PID" 2>/dev/null || true
    fi
    dropdb --force --if-exists -h 127.0.0.1 "$CATALOG_DB" 2>/dev/null || true
    redis-cli -h 127.0.0.1 --scan --pattern "metasync:{${QUEUE}}*" |
        xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
    if ((status != 0)) && [[ -f "$WORK/api.log" ]]; then
        log "the API's log (last 40 lines):"
        tail -40 "$WORK/api.log" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT INT TERM

ensure_schemathesis() {
    if [[ -x "$VENV/bin/schemathesis" ]]; then
        return
    fi
    log "installing $SCHEMATHESIS_VERSION into $VENV"
    ensure_venv "$VENV" "$SCHEMATHESIS_VERSION"
}

# fuzz_part NAME BASE SEED [ARGS]: one schemathesis run, its output in $WORK/NAME.log and its
# events in $WORK/NAME.ndjson.
fuzz_part() {
    local name="$1" base="$2" seed="$3"
    shift 3
    # The token goes in through the environment (schemathesis.toml reads it), not `ps`.
    METASYNC_FUZZ_TOKEN="$TOKEN" METASYNC_FUZZ_FLEET_TOKEN="$FLEET_TOKEN" \
        METASYNC_FUZZ_INTERNAL_KEY="$INTERNAL_KEY" "$VENV/bin/schemathesis" \
        --config-file deploy/local/schemathesis.toml --no-color \
        run "$base/openapi.json" \
        --checks all \
        --max-examples "$EXAMPLES" \
        --workers 1 \
        --request-timeout 10 \
        --seed "$seed" \
        --report ndjson --report-ndjson-path "$WORK/$name.ndjson" \
        "$@" >"$WORK/$name.log" 2>&1
}

pick_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

main() {
    ensure_rust
    ensure_services
    ensure_schemathesis
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/metasync-target}"
    cargo build --bins
    local api_bin="$CARGO_TARGET_DIR/debug/metasync-api"
    local worker_bin="$CARGO_TARGET_DIR/debug/metasync-worker"

    createdb -h 127.0.0.1 "$CATALOG_DB"
    local port keys
    port="$(pick_port)"
    local base="http://127.0.0.1:$port"
    keys="$("$worker_bin" keygen --key-id fuzz)"
    METASYNC_SEALING_KEY="$(sed -n 's/^METASYNC_SEALING_KEY=//p' <<<"$keys")"
    METASYNC_PASSWORD_FINGERPRINT_KEY="$(head -c 32 /dev/urandom | base64)"
    METASYNC_JWT_SECRET="$(head -c 48 /dev/urandom | base64)"
    export METASYNC_SEALING_KEY METASYNC_PASSWORD_FINGERPRINT_KEY METASYNC_JWT_SECRET
    export DATABASE_URL="postgres://$(id -un)@127.0.0.1:5432/$CATALOG_DB"
    export REDIS_URL="redis://127.0.0.1:6379" METASYNC_QUEUE="$QUEUE"
    export METASYNC_API_ADDR="127.0.0.1:$port"
    # No name leaves the machine: `localhost` is the only name that resolves, and only
    # loopback is allowed besides public addresses (which are checked, never dialled).
    export METASYNC_OUTBOUND_RESOLVER="static:localhost=127.0.0.1,localhost=::1"
    export METASYNC_OUTBOUND_ALLOW="127.0.0.0/8,::1/128"
    export METASYNC_RATE_WRITES_PER_MINUTE=1000000 METASYNC_RATE_SYNCS_PER_MINUTE=1000000
    export METASYNC_RATE_TESTS_PER_MINUTE=1000000
    export METASYNC_MAX_RESOURCES=1000000 METASYNC_MAX_ACTIVE_JOBS=10000000 METASYNC_MAX_WAITERS=1000
    # With no worker a job never changes: a long-poll on one would hold its full time.
    export METASYNC_MAX_WAIT=100ms
    # Nothing to schedule or repair without workers.
    export METASYNC_MAINTENANCE=false
    # Metrics and probes are not fuzzed; no operations listener (its default port may be taken).
    export METASYNC_METRICS_ADDR=off
    # The internal API's key, so its route is fuzzed past authentication.
    export METASYNC_INTERNAL_API_KEYS="fuzz:$INTERNAL_KEY"
    export RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1

    "$api_bin" serve >"$WORK/api.log" 2>&1 &
    API_PID=$!
    local tries=150
    until curl -fsS "$base/readyz" >/dev/null 2>&1; do
        kill -0 "$API_PID" 2>/dev/null || { log "metasync-api exited during start-up"; exit 1; }
        ((tries-- > 0)) || { log "metasync-api not ready after 30 s"; exit 1; }
        sleep 0.2
    done
    TOKEN="$("$api_bin" token --tenant fuzz --role admin --ttl 1h 2>/dev/null)"
    FLEET_TOKEN="$("$api_bin" token --role fleet --ttl 1h 2>/dev/null)"

    log "schemathesis against $base/openapi.json: $EXAMPLES cases per operation, every check"
    # Two schemathesis processes, one on the /v1/resources tree, one on the rest: each is
    # bound by its own (single-threaded) test generation, so two use both cores. One worker
    # each: with several, hypothesis (on Python 3.11) fails now and then with "AST constructor
    # recursion depth mismatch".
    local seed="${FUZZ_SEED:-$RANDOM}" status=0
    fuzz_part resources "$base" "$seed" --include-path-regex '^/v1/resources' "$@" &
    local resources=$!
    {
        local failed=0
        fuzz_part rest "$base" "$seed" --exclude-path-regex '^/v1/resources' "$@" || failed=1
        # schemathesis stops fuzzing an operation after 10 `405`s in a row, and counts the
        # coverage phase's probes of unlisted methods on /v1/resources/{id} (rightly 405) against
        # DELETE, the path's last operation: so DELETE gets its own fuzzing-only run.
        fuzz_part delete "$base" "$seed" --include-operation-id deleteResource --phases fuzzing "$@" ||
            failed=1
        exit "$failed"
    } &
    local rest=$!
    wait "$resources" || status=$?
    wait "$rest" || status=$?
    cat "$WORK/resources.log" "$WORK/rest.log" "$WORK/delete.log" 2>/dev/null
    # Cases per operation, from the runs' events (the summaries give only totals).
    "$VENV/bin/python" - "$WORK"/*.ndjson <<'PY' || true
import collections, json, sys

cases = collections.Counter()
for path in sys.argv[1:]:
    for line in open(path):
        finished = json.loads(line).get("ScenarioFinished")
        if finished:
            recorder = finished.get("recorder") or {}
            cases[recorder.get("label", "?")] += len(recorder.get("cases", {}))
print("fuzz: cases per operation (examples, coverage and fuzzing phases; stateful separately):")
for label, count in sorted(cases.items(), key=lambda item: item[0].split(" ")[-1]):
    print(f"fuzz: {count:7d}  {label}")
PY
    if grep -q 'panicked' "$WORK/api.log"; then
        log "the API panicked:"
        grep -A5 'panicked' "$WORK/api.log" >&2
        status=1
    fi
    if ((status == 0)); then
        echo "fuzz: 1 passed, 0 failed"
    else
        echo "fuzz: 0 passed, 1 failed"
    fi
    return "$status"
}

main "$@"
