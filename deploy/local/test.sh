#!/usr/bin/env bash
# Runs the workspace tests against the local PostgreSQL, Redis and MariaDB (started or
# installed as needed). Extra arguments go to `cargo test`; without any, the tests run
# with `-- --test-threads=4`.
#
#   deploy/local/test.sh
#   deploy/local/test.sh -- a_mysql_source      # only tests whose name matches
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh

# Test databases and queues that earlier runs left behind (a test that panics or is killed
# does not clean up). Every test names its own with these prefixes, so this never touches
# anything else. It does break tests that are running right now against the same servers.
drop_test_leftovers() {
    local db_prefix="$1" queue_prefix="$2"
    local like="${db_prefix//_/\\_}%" name count=0

    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        dropdb --force -h 127.0.0.1 "$name"
        count=$((count + 1))
    done < <(psql -X -h 127.0.0.1 -d postgres -Atc \
        "select datname from pg_database where datname like '${like}'")
    echo "test.sh: dropped $count leftover PostgreSQL database(s) ${db_prefix}*"

    count=0
    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        mysql -h127.0.0.1 -uroot -e "drop database if exists \`${name}\`"
        count=$((count + 1))
    done < <(mysql -h127.0.0.1 -uroot -NBe \
        "select schema_name from information_schema.schemata where schema_name like '${like}'")
    echo "test.sh: dropped $count leftover MariaDB database(s) ${db_prefix}*"

    local keys
    keys="$(redis-cli -h 127.0.0.1 --scan --pattern "metasync:{${queue_prefix}*")"
    if [[ -n "$keys" ]]; then
        # Batches keep each DEL (and its command line) bounded.
        printf '%s\n' "$keys" | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null
    fi
    echo "test.sh: deleted $(grep -c . <<<"$keys" || true) leftover Redis key(s) metasync:{${queue_prefix}*"
}

main() {
    ensure_rust
    ensure_services
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/metasync-target}"

    drop_test_leftovers mstest_ test-
    # The MySQL tests connect to the `test` database as their admin connection; fresh
    # MariaDB installs no longer create it.
    mysql -h127.0.0.1 -uroot -e 'create database if not exists test'

    if (($# == 0)); then
        set -- -- --test-threads=4
    fi
    deploy/local/unused-deps.sh
    echo "test.sh: cargo build --bins && cargo test --workspace $* (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    # The fault tests start the real worker binary, so the binaries must exist first.
    cargo build --bins
    local log status=0
    log="$(mktemp)"
    cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
    # cargo ends on the (empty) doc-test and binary suites; close with the totals instead.
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
         END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
    rm -f "$log"
    return "$status"
}

main "$@"
