#!/usr/bin/env bash
# End-to-end demo on this machine: builds the release binaries, creates a catalog database and
# a small source database, runs the API and two workers, registers the source, syncs it,
# prints the job and what was catalogued, then stops every process it started.
# Exits non-zero unless the sync succeeds. Logs go to .demo/ in the repository root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh

DEMO_DIR="$PWD/.demo"
CATALOG_DB=metasync_demo
SOURCE_DB=metasync_demo_source
OS_USER="$(id -un)"
# Per-run queue name: a second demo (or the tests) on the same Redis never sees our jobs.
QUEUE="metasync-demo-$$"

PIDS=()
NAMES=()

log() { printf 'demo: %s\n' "$*" >&2; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

# Stops what we started (SIGTERM, so the workers hand back their deliveries), waits for it,
# then removes this run's Redis keys. Runs on every exit, including errors and Ctrl-C.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i pid tries rc
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in "${!PIDS[@]}"; do
        pid="${PIDS[$i]}"
        # Bounded: a process that ignores SIGTERM must not hang the demo.
        tries=150
        while kill -0 "$pid" 2>/dev/null && ((tries-- > 0)); do
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${NAMES[$i]} (pid $pid) ignored SIGTERM for 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        log "stopped ${NAMES[$i]} (pid $pid, exit status $rc)"
    done
    # The token dies with this run's JWT secret anyway; do not leave it lying around.
    rm -f "$DEMO_DIR/auth.header"
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h 127.0.0.1 --scan --pattern "metasync:{${QUEUE}}*" |
            xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs COMMAND in the background, output to .demo/NAME.log.
start() {
    local name="$1"
    shift
    "$@" >"$DEMO_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    log "started $name (pid $!, log .demo/$name.log)"
}

show_logs() {
    local name
    for name in "${NAMES[@]}"; do
        printf '\n--- last lines of .demo/%s.log ---\n' "$name" >&2
        tail -n 25 "$DEMO_DIR/$name.log" >&2 || true
    done
}

# The first free port from 18080 on (the API must not collide with anything already running).
pick_port() {
    local port
    for port in $(seq 18080 18179); do
        if python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' \
            "$port" 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port between 18080 and 18179"
}

# api METHOD PATH [JSON]: calls the API with the bearer token. Sets HTTP_STATUS; the body is in
# $RESPONSE and the headers in $RESPONSE_HEADERS.
RESPONSE="$DEMO_DIR/response.json"
RESPONSE_HEADERS="$DEMO_DIR/response.headers"
HTTP_STATUS=""
api() {
    local method="$1" path="$2" data="${3-}"
    # The token comes from a file so it does not show up in `ps`.
    local args=(-sS -X "$method" -o "$RESPONSE" -D "$RESPONSE_HEADERS" -w '%{http_code}'
        --max-time 30 -H "@$DEMO_DIR/auth.header")
    if [[ -n "$data" ]]; then
        args+=(-H 'Content-Type: application/json' --data "$data")
    fi
    HTTP_STATUS="$(curl "${args[@]}" "$BASE$path")" || die "$method $path: curl failed"
}

# expect STATUS WHAT: fails with the response body unless the last call answered STATUS.
expect() {
    if [[ "$HTTP_STATUS" != "$1" ]]; then
        printf 'demo: error: %s: expected HTTP %s, got %s:\n' "$2" "$1" "$HTTP_STATUS" >&2
        cat "$RESPONSE" >&2
        echo >&2
        exit 1
    fi
}

# json_get FIELD [FILE]: a top-level field of a JSON document (python3: no jq needed).
json_get() {
    python3 -c 'import json, sys; v = json.load(open(sys.argv[2]))[sys.argv[1]]; print("" if v is None else v)' \
        "$1" "${2:-$RESPONSE}"
}

create_databases() {
    log "creating databases $CATALOG_DB (catalog) and $SOURCE_DB (source)"
    # Quiet the "does not exist, skipping" notices of a first run.
    PGOPTIONS="-c client_min_messages=warning" dropdb --force --if-exists -h 127.0.0.1 "$CATALOG_DB"
    PGOPTIONS="-c client_min_messages=warning" dropdb --force --if-exists -h 127.0.0.1 "$SOURCE_DB"
    createdb -h 127.0.0.1 "$CATALOG_DB"
    createdb -h 127.0.0.1 "$SOURCE_DB"
    # Something worth cataloguing: two schemas, keys, a foreign key, comments, a quoted
    # mixed-case table, views (one with a space in its name) and an index.
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -d "$SOURCE_DB" <<'SQL'
create schema shop;
comment on schema shop is 'Orders and the customers who place them';
create schema analytics;

create table shop.customers (
    id         bigint generated always as identity primary key,
    email      text not null unique,
    full_name  text not null,
    created_at timestamptz not null default now()
);
comment on table shop.customers is 'People who can place orders';
comment on column shop.customers.email is 'Login and contact address';

create table shop.products (
    sku         text primary key,
    title       text not null,
    price_cents integer not null check (price_cents >= 0),
    tags        text[]
);

create table shop.orders (
    id          bigint generated always as identity primary key,
    customer_id bigint not null references shop.customers (id),
    status      text not null default 'pending',
    total       numeric(12, 2) not null,
    placed_at   timestamptz not null default now(),
    note        text
);
comment on table shop.orders is 'One row per checkout';
comment on column shop.orders.total is 'Order total in EUR';
create index orders_customer_idx on shop.orders (customer_id);

create table shop.order_items (
    order_id bigint not null references shop.orders (id) on delete cascade,
    sku      text not null references shop.products (sku),
    quantity integer not null default 1,
    primary key (order_id, sku)
);

create table analytics."PageViews" (
    "viewId"   uuid primary key,
    "URL"      text not null,
    "viewedAt" timestamp not null
);
comment on table analytics."PageViews" is 'Mixed-case names must survive quoting';

create view analytics."Daily Revenue" as
    select date_trunc('day', placed_at) as day, sum(total) as revenue, count(*) as orders
    from shop.orders
    group by 1;
comment on view analytics."Daily Revenue" is 'Revenue per calendar day';

create view shop.big_spenders as
    select c.id, c.email, sum(o.total) as spent
    from shop.customers c join shop.orders o on o.customer_id = c.id
    group by c.id, c.email
    having sum(o.total) > 100;

insert into shop.customers (email, full_name) values
    ('ada@example.com', 'Ada Lovelace'), ('alan@example.com', 'Alan Turing');
insert into shop.products values
    ('BK-1', 'Notes on the Analytical Engine', 2500, '{book}'),
    ('PC-9', 'Difference Engine (replica)', 990000, null);
insert into shop.orders (customer_id, total, note) values (1, 25.00, null), (2, 9900.00, 'gift');
insert into shop.order_items values (1, 'BK-1', 1), (2, 'PC-9', 1);
-- Row estimates come from statistics.
analyze;
SQL
}

# Time from enqueue to the end state, from the job's own timestamps (RFC 3339, any number of
# fraction digits), and as this script saw it.
print_timing() {
    python3 - "$DEMO_DIR/job.json" "$1" "$2" <<'PY'
import json, re, sys
from datetime import datetime, timedelta, timezone

def parse(ts):
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", ts)
    if not m:
        raise SystemExit(f"demo: cannot parse timestamp {ts!r}")
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    micros = int((m.group(2) or "0").ljust(6, "0")[:6])
    offset = timedelta(0)
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        hours, minutes = m.group(3)[1:].split(":")
        offset = sign * timedelta(hours=int(hours), minutes=int(minutes))
    return (base + timedelta(microseconds=micros) - offset).replace(tzinfo=timezone.utc)

job = json.load(open(sys.argv[1]))
created, finished = job.get("created_at"), job.get("finished_at")
if created and finished:
    ms = (parse(finished) - parse(created)).total_seconds() * 1000
    print(f"enqueue -> {job['state']}: {ms:.1f} ms (job created_at {created} -> finished_at {finished})")
else:
    print(f"enqueue -> {job['state']}: no finished_at in the job")
wall = (float(sys.argv[3]) - float(sys.argv[2])) * 1000
print(f"as seen by this script (request sent -> end state read): {wall:.0f} ms")
PY
}

# Every table of the resource (following next_cursor) with its columns.
print_catalog() {
    local resource_id="$1" cursor="" path table_id
    local ids="$DEMO_DIR/table-ids.txt"
    : >"$ids"
    while :; do
        path="/v1/resources/$resource_id/tables?limit=1000"
        [[ -z "$cursor" ]] || path+="&cursor=$cursor"
        api GET "$path"
        expect 200 "listing the catalogued tables"
        python3 -c 'import json, sys
for t in json.load(open(sys.argv[1]))["items"]:
    print(t["id"])' "$RESPONSE" >>"$ids"
        cursor="$(json_get next_cursor)"
        [[ -n "$cursor" ]] || break
    done
    echo
    echo "Catalogued $(grep -c . "$ids" || true) tables and views of $SOURCE_DB:"
    while IFS= read -r table_id; do
        api GET "/v1/tables/$table_id"
        expect 200 "reading table $table_id"
        python3 - "$RESPONSE" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
cols = t.get("columns") or []
extra = f" - {t['comment']}" if t.get("comment") else ""
print(f"  {t['schema']}.{t['name']} ({t['kind']}), {len(cols)} columns{extra}")
for c in sorted(cols, key=lambda c: c["position"]):
    print(f"      {c['name']} {c['data_type']}{'' if c['nullable'] else ' not null'}")
PY
    done <"$ids"
}

main() {
    ensure_rust
    ensure_services
    ensure_tools curl python3

    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/metasync-target}"
    log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    # Only the two binaries: building the test crate with them would unify its `test-faults`
    # feature into the worker.
    cargo build --release -p metasync-api -p metasync-worker --bins
    local api_bin="$CARGO_TARGET_DIR/release/metasync-api"
    local worker_bin="$CARGO_TARGET_DIR/release/metasync-worker"

    mkdir -p "$DEMO_DIR"
    create_databases

    local port
    port="$(pick_port)"
    BASE="http://127.0.0.1:$port"
    export DATABASE_URL="postgres://$OS_USER@127.0.0.1:5432/$CATALOG_DB"
    export REDIS_URL="redis://127.0.0.1:6379"
    export METASYNC_QUEUE="$QUEUE"
    # Fresh secrets per run: nothing from a demo is meant to outlive it. The master key pair:
    # the API gets the public half (it seals passwords, cannot open them), workers the private.
    local keys opening_keys
    keys="$("$worker_bin" keygen --key-id demo)"
    opening_keys="$(sed -n 's/^METASYNC_OPENING_KEYS=//p' <<<"$keys")"
    METASYNC_SEALING_KEY="$(sed -n 's/^METASYNC_SEALING_KEY=//p' <<<"$keys")"
    METASYNC_PASSWORD_FINGERPRINT_KEY="$(head -c 32 /dev/urandom | base64)"
    METASYNC_JWT_SECRET="$(head -c 48 /dev/urandom | base64)"
    export METASYNC_SEALING_KEY METASYNC_PASSWORD_FINGERPRINT_KEY METASYNC_JWT_SECRET
    export METASYNC_API_ADDR="127.0.0.1:$port"
    # The demo's sources are on this machine; loopback is refused unless allowed explicitly.
    export METASYNC_OUTBOUND_ALLOW="127.0.0.0/8,::1/128"
    export RUST_LOG="${RUST_LOG:-info}"
    # Plain log files, without terminal colour codes.
    export NO_COLOR=1

    log "applying migrations to $CATALOG_DB"
    "$api_bin" migrate >"$DEMO_DIR/migrate.log" 2>&1 || {
        cat "$DEMO_DIR/migrate.log" >&2
        die "metasync-api migrate failed"
    }

    start api "$api_bin" serve
    local api_pid="${PIDS[0]}"
    # Exported only now, so the API (already started) never holds the private key; through the
    # environment, not a command line, so `ps` does not show it.
    export METASYNC_OPENING_KEYS="$opening_keys"
    start worker-1 env METASYNC_WORKER_NAME=demo-worker-1 METASYNC_WORKER_CONCURRENCY=4 "$worker_bin"
    start worker-2 env METASYNC_WORKER_NAME=demo-worker-2 METASYNC_WORKER_CONCURRENCY=4 "$worker_bin"

    log "waiting for $BASE/readyz"
    local tries=150 ready=""
    while ((tries-- > 0)); do
        kill -0 "$api_pid" 2>/dev/null || {
            show_logs
            die "metasync-api exited during start-up"
        }
        ready="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)"
        [[ "$ready" == 200 ]] && break
        sleep 0.2
    done
    [[ "$ready" == 200 ]] || {
        show_logs
        die "GET /readyz did not answer 200 within 30 s (last: ${ready:-no answer})"
    }

    local token
    token="$("$api_bin" token --tenant demo)"
    (
        umask 077
        printf 'Authorization: Bearer %s\n' "$token" >"$DEMO_DIR/auth.header"
    )

    log "registering $SOURCE_DB as a resource"
    api POST /v1/resources "$(printf '{"name":"demo-source","kind":"postgres","host":"127.0.0.1","port":5432,"database":"%s","username":"%s","password":"demo-password"}' \
        "$SOURCE_DB" "$OS_USER")"
    expect 201 "POST /v1/resources"
    local resource_id
    resource_id="$(json_get id)"
    log "resource $resource_id"

    local t_enqueue t_done job_id state location
    t_enqueue="$(date +%s.%N)"
    api POST "/v1/resources/$resource_id/sync"
    expect 202 "POST /v1/resources/$resource_id/sync"
    job_id="$(json_get id)"
    location="$(tr -d '\r' <"$RESPONSE_HEADERS" | sed -n 's/^[Ll]ocation: *//p')"
    [[ "$location" == "/v1/jobs/$job_id" ]] ||
        log "warning: Location header is '$location', expected '/v1/jobs/$job_id'"
    log "job $job_id enqueued; waiting for it to finish"

    # Long-poll: each request returns as soon as the job changes (or after 10 s).
    local deadline=$((SECONDS + 60))
    while :; do
        api GET "/v1/jobs/$job_id?wait=10"
        expect 200 "GET /v1/jobs/$job_id"
        state="$(json_get state)"
        case "$state" in
        succeeded | failed | cancelled) break ;;
        esac
        ((SECONDS < deadline)) || {
            show_logs
            die "job $job_id is still '$state' after 60 s"
        }
    done
    t_done="$(date +%s.%N)"
    cp "$RESPONSE" "$DEMO_DIR/job.json"

    echo
    echo "Job $job_id ended '$state':"
    python3 -m json.tool "$DEMO_DIR/job.json"
    print_timing "$t_enqueue" "$t_done"

    if [[ "$state" != succeeded ]]; then
        show_logs
        die "the sync did not succeed (state '$state')"
    fi
    print_catalog "$resource_id"
    echo
    log "done; logs are in .demo/"
}

main "$@"
