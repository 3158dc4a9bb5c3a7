#!/usr/bin/env bash
# Runs the workspace tests against the local PostgreSQL, Redis and MariaDB (started or
# installed as needed), then validates the deployment files offline
# (deploy/local/check-deploy.sh; CHECK_DEPLOY=0 skips it), proves the metrics, dashboard and
# alerts against a real Prometheus (deploy/local/check-observability.sh; OBSERVABILITY=0
# skips it) and fuzzes the API
# (deploy/local/fuzz.sh; FUZZ=0 skips it). Extra
# arguments go to `cargo test`; without any, the tests run with `-- --test-threads=4`.
#
#   deploy/local/test.sh
#   deploy/local/test.sh -- a_mysql_source      # only tests whose name matches
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh

# Test databases, queues and private servers that earlier runs left behind (a test that panics
# or is killed does not clean up). The harness names each with a UUID v7 (its creation time)
# and, under this script, the run's id: `mstest_cat_r<pid>_<uuid>`, `test-r<pid>-<uuid>`,
# `$TMPDIR/mstest-pg-r<pid>-<uuid>` (see `unique_name` in tests/src/lib.rs). Only what is
# stale goes: its run's process has ended, or, for names without a run id (tests started by
# plain `cargo test`), it is older than STALE_AFTER_MS. What runs beside this one are using
# stays. Names the harness did not make are never touched.
STALE_AFTER_MS=$((2 * 3600 * 1000))   # no test or benchmark runs this long
LONGEST_RUN_MS=$((24 * 3600 * 1000))  # past this, a live pid is a reused one

# Whether the harness-made NAME is stale at NOW_MS.
is_stale() {
    local name="$1" now_ms="$2" created age
    [[ "$name" =~ ([0-9a-f]{32})$ ]] || return 1
    created=$((16#${BASH_REMATCH[1]:0:12}))
    age=$((now_ms - created))
    if [[ "$name" =~ [_-]r([0-9]+)[_-][0-9a-f]{32}$ ]]; then
        # kill -0 fails on another user's live process too; /proc tells them apart.
        local pid="${BASH_REMATCH[1]}"
        { ! kill -0 "$pid" 2>/dev/null && [[ ! -d "/proc/$pid" ]]; } || ((age > LONGEST_RUN_MS))
    else
        ((age > STALE_AFTER_MS))
    fi
}

drop_test_leftovers() {
    local db_prefix="$1" queue_prefix="$2"
    local like="${db_prefix//_/\\_}%" name count=0 kept=0 now_ms
    now_ms="$(date +%s%3N)"

    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        if is_stale "$name" "$now_ms"; then
            dropdb --force --if-exists -h 127.0.0.1 "$name"
            count=$((count + 1))
        else
            kept=$((kept + 1))
        fi
    done < <(psql -X -h 127.0.0.1 -d postgres -Atc \
        "select datname from pg_database where datname like '${like}'")
    echo "test.sh: dropped $count stale PostgreSQL database(s) ${db_prefix}*, kept $kept in use"

    count=0 kept=0
    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        if is_stale "$name" "$now_ms"; then
            mysql -h127.0.0.1 -uroot -e "drop database if exists \`${name}\`"
            count=$((count + 1))
        else
            kept=$((kept + 1))
        fi
    done < <(mysql -h127.0.0.1 -uroot -NBe \
        "select schema_name from information_schema.schemata where schema_name like '${like}'")
    echo "test.sh: dropped $count stale MariaDB database(s) ${db_prefix}*, kept $kept in use"

    # Keys are metasync:{<queue>}:…; a queue is stale as a whole.
    local keys stale_keys="" queue
    keys="$(redis-cli -h 127.0.0.1 --scan --pattern "metasync:{${queue_prefix}*")"
    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        queue="${name#metasync:\{}"
        queue="${queue%%\}*}"
        if is_stale "$queue" "$now_ms"; then
            stale_keys+="$name"$'\n'
        fi
    done <<<"$keys"
    if [[ -n "$stale_keys" ]]; then
        # Batches keep each DEL (and its command line) bounded.
        printf '%s' "$stale_keys" | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null
    fi
    echo "test.sh: deleted $(grep -c . <<<"$stale_keys" || true) stale Redis key(s) metasync:{${queue_prefix}*"

    # Private servers of killed tests (PostgresServer, RedisServer, RedisCluster, MariaDbServer)
    # keep running: stop the PostgreSQL, MariaDB and Redis Cluster ones by the pid in their
    # directory, then remove the directories (and the test CAs' files).
    local dir pid pidfile
    count=0
    for dir in "${TMPDIR:-/tmp}"/mstest-pg-* "${TMPDIR:-/tmp}"/mstest-redis-* \
        "${TMPDIR:-/tmp}"/mstest-mariadb-* "${TMPDIR:-/tmp}"/mstest-ca-*; do
        [[ -d "$dir" ]] && is_stale "$(basename "$dir")" "$now_ms" || continue
        if [[ -f "$dir/data/postmaster.pid" ]]; then
            pid="$(head -1 "$dir/data/postmaster.pid")"
            kill -QUIT "$pid" 2>/dev/null || true
        fi
        # A RedisCluster keeps one node per subdirectory, each with its pid.
        for pidfile in "$dir/pid" "$dir"/*/pid; do
            [[ -f "$pidfile" ]] || continue
            pid="$(head -1 "$pidfile")"
            kill -KILL "$pid" 2>/dev/null || true
        done
        rm -rf "$dir"
        count=$((count + 1))
    done
    echo "test.sh: removed $count stale private server director(ies)"
}

main() {
    ensure_rust
    ensure_services
    # The CLI's terminal test runs it under tmux; the README's "Running it" test uses curl and jq.
    ensure_tools tmux jq curl
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/metasync-target}"

    drop_test_leftovers mstest_ test-
    # This run's id: the harness puts it in every name it makes, so that runs beside this one
    # (and later runs, while this one lives) leave them alone.
    export METASYNC_TEST_RUN="$$"
    # The MySQL tests connect to the `test` database as their admin connection; fresh
    # MariaDB installs no longer create it.
    mysql -h127.0.0.1 -uroot -e 'create database if not exists test'

    if (($# == 0)); then
        # Every suite runs even when one fails, so the totals below count them all.
        set -- --no-fail-fast -- --test-threads=4
    fi
    deploy/local/unused-deps.sh
    echo "test.sh: cargo build --bins && cargo test --workspace $* (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    # The fault tests start the real worker binary, so the binaries must exist first.
    cargo build --bins
    local log status=0
    log="$(mktemp)"
    cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
    # The manifests, the image and the compose file, validated offline (a few seconds once its
    # venv exists); CHECK_DEPLOY=0 skips it. Its verdict ("deploy: 17 passed, 0 failed") joins
    # the totals below.
    if [[ "${CHECK_DEPLOY:-1}" != 0 ]]; then
        deploy/local/check-deploy.sh 2>&1 | tee -a "$log" || status=$?
    fi
    # The metrics, dashboard and alerts against a real Prometheus and a small fleet (promtool
    # check and test rules, every panel query and alert expression; under a minute once the
    # binaries exist); OBSERVABILITY=0 skips it. Its verdict ("observability: 23 passed,
    # 0 failed") joins the totals below.
    if [[ "${OBSERVABILITY:-1}" != 0 ]]; then
        deploy/local/check-observability.sh 2>&1 | tee -a "$log" || status=$?
    fi
    # The API fuzzed from its OpenAPI document (about 3 minutes); FUZZ=0 skips it. Its verdict
    # ("fuzz: 1 passed, 0 failed") joins the totals below.
    if [[ "${FUZZ:-1}" != 0 ]]; then
        deploy/local/fuzz.sh 2>&1 | tee -a "$log" || status=$?
    fi
    # cargo ends on the (empty) doc-test and binary suites; close with the totals instead.
    # Only "N passed" / "N failed" count (a check's own line may say "job …: failed").
    awk '/^(test result|fuzz|deploy|observability):/ { for (i = 2; i <= NF; i++) { if ($(i-1) !~ /^[0-9]+$/) continue; if ($(i) ~ /^passed[;,]?$/) p += $(i-1); if ($(i) ~ /^failed[;,]?$/) f += $(i-1) } }
         END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
    rm -f "$log"
    return "$status"
}

main "$@"
