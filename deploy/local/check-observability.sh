#!/usr/bin/env bash
# Proves the metrics, the dashboard and the alerts against a real Prometheus, on loopback:
#
#   - `promtool check rules` and `promtool test rules` (a firing and a quiet case per alert) on
#     deploy/prometheus/, and deploy/grafana/metasync.json matching its generator;
#   - the API and a worker from the debug build, with their own catalog database and queue and
#     their operations listeners on free ports, run a small workload: good sources (one on a
#     schedule), a refused port (transient, retried until out of attempts), and a database
#     that does not exist (permanent);
#   - the Debian package's Prometheus (deploy/local/prometheus.sh), on a free port of
#     127.0.0.1 with a temporary directory, scrapes both every second and evaluates the alert
#     rules every second;
#   - through Prometheus's HTTP API: every alert rule is loaded and evaluates without error,
#     the dashboard's queue variable lists the queue, and every panel query (with `$queue` set
#     to the queue) parses and returns data.
#
#   deploy/local/check-observability.sh
#
# Ends with the verdict line `observability: N passed, M failed` that test.sh adds to its
# totals. About a minute with the binaries built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh

WORK="$(mktemp -d)"
PIDS=()
# Named like the test harness's, so that test.sh removes what a killed run leaves behind.
RUN_ID="$(printf '%012x' "$(date +%s%3N)")$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')"
CATALOG_DB="mstest_obs_r$$_${RUN_ID}"
SOURCE_DB="mstest_obssrc_r$$_${RUN_ID}"
QUEUE="test-r$$-${RUN_ID}"
PASSED=0
FAILED=0
VERDICT=""

log() { printf 'observability: %s\n' "$*" >&2; }

check() {
    local what="$1"
    shift
    if "$@" >"$WORK/check.log" 2>&1; then
        PASSED=$((PASSED + 1))
        log "ok: $what"
    else
        FAILED=$((FAILED + 1))
        log "FAILED: $what"
        sed 's/^/    /' "$WORK/check.log" >&2
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((status != 0)) && [[ -z "$VERDICT" ]]; then
        # Stopped before the end (a step of the set-up failed): still a verdict for test.sh.
        echo "observability: $PASSED passed, $((FAILED + 1)) failed"
    fi
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    dropdb --force --if-exists -h 127.0.0.1 "$CATALOG_DB" 2>/dev/null || true
    dropdb --force --if-exists -h 127.0.0.1 "$SOURCE_DB" 2>/dev/null || true
    redis-cli -h 127.0.0.1 --scan --pattern "metasync:{${QUEUE}}*" |
        xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
    if ((FAILED > 0 || status != 0)); then
        for f in migrate api worker prometheus; do
            [[ -f "$WORK/$f.log" ]] || continue
            log "$f.log (last 20 lines):"
            tail -20 "$WORK/$f.log" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT INT TERM

pick_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for URL WHAT: polls for up to 60 s (the machine may be busy building).
wait_for() {
    local tries=300
    until curl -fsS "$1" >/dev/null 2>&1; do
        ((tries-- > 0)) || { log "$2 did not answer $1 within 60 s"; return 1; }
        sleep 0.2
    done
}

# api METHOD PATH [BODY]: a call to the API as the workload's tenant; prints the body.
api() {
    curl -fsS -X "$1" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        "$API/$2" ${3:+-d "$3"}
}

# resource NAME PORT DATABASE [EXTRA JSON]: registers a source and prints its id.
resource() {
    local body
    body="{\"name\":\"$1\",\"kind\":\"postgres\",\"host\":\"127.0.0.1\",\"port\":$2,\"database\":\"$3\",\"username\":\"$(id -un)\",\"password\":\"not-used\"${4:+,$4}}"
    api POST v1/resources "$body" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

main() {
    ensure_rust
    ensure_services
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/metasync-target}"
    local prom
    if ! prom="$(deploy/local/prometheus.sh)"; then
        log "cannot obtain Prometheus (deploy/local/prometheus.sh failed)"
        VERDICT="observability: 0 passed, 1 failed"
        echo "$VERDICT"
        return 1
    fi

    check "promtool check rules deploy/prometheus/alerts.yml" \
        "$prom/promtool" check rules deploy/prometheus/alerts.yml
    check "promtool test rules deploy/prometheus/alerts_test.yml" \
        "$prom/promtool" test rules deploy/prometheus/alerts_test.yml
    check "deploy/grafana/metasync.json matches its generator" \
        python3 deploy/grafana/gen-dashboard.py --check

    [[ -x "$CARGO_TARGET_DIR/debug/metasync-api" && -x "$CARGO_TARGET_DIR/debug/metasync-worker" ]] ||
        cargo build --bins
    local api_bin="$CARGO_TARGET_DIR/debug/metasync-api"
    local worker_bin="$CARGO_TARGET_DIR/debug/metasync-worker"

    createdb -h 127.0.0.1 "$CATALOG_DB"
    createdb -h 127.0.0.1 "$SOURCE_DB"
    psql -X -q -h 127.0.0.1 -d "$SOURCE_DB" -c 'create table orders (id int primary key, note text)'
    local keys api_port api_ops worker_ops prom_port refused_port
    api_port="$(pick_port)" api_ops="$(pick_port)" worker_ops="$(pick_port)"
    prom_port="$(pick_port)" refused_port="$(pick_port)"
    API="http://127.0.0.1:$api_port"
    keys="$("$worker_bin" keygen --key-id obs)"
    DATABASE_URL="postgres://$(id -un)@127.0.0.1:5432/$CATALOG_DB"
    export DATABASE_URL
    export REDIS_URL="redis://127.0.0.1:6379" METASYNC_QUEUE="$QUEUE"
    export METASYNC_JWT_SECRET
    METASYNC_JWT_SECRET="$(head -c 48 /dev/urandom | base64)"
    export METASYNC_OUTBOUND_RESOLVER="static:localhost=127.0.0.1"
    export METASYNC_OUTBOUND_ALLOW="127.0.0.0/8"
    # Short leases and retries: the gauges refresh every second, and a refused port runs out
    # of attempts within seconds.
    export METASYNC_LEASE=3s METASYNC_RECONCILE_EVERY=1s METASYNC_RETRY_BASE=100ms METASYNC_RETRY_CAP=500ms
    export METASYNC_MIN_SCHEDULE_INTERVAL=1s
    export RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1
    "$api_bin" migrate >"$WORK/migrate.log" 2>&1

    METASYNC_SEALING_KEY="$(sed -n 's/^METASYNC_SEALING_KEY=//p' <<<"$keys")" \
        METASYNC_PASSWORD_FINGERPRINT_KEY="$(head -c 32 /dev/urandom | base64)" \
        METASYNC_API_ADDR="127.0.0.1:$api_port" METASYNC_METRICS_ADDR="127.0.0.1:$api_ops" \
        "$api_bin" serve >"$WORK/api.log" 2>&1 &
    PIDS+=($!)
    METASYNC_OPENING_KEYS="$(sed -n 's/^METASYNC_OPENING_KEYS=//p' <<<"$keys")" \
        METASYNC_METRICS_ADDR="127.0.0.1:$worker_ops" METASYNC_WORKER_NAME=obs \
        "$worker_bin" >"$WORK/worker.log" 2>&1 &
    PIDS+=($!)

    mkdir -p "$WORK/prometheus"
    cp deploy/prometheus/alerts.yml "$WORK/prometheus/"
    cat >"$WORK/prometheus/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: metasync
    static_configs:
      - targets: ["127.0.0.1:$api_ops", "127.0.0.1:$worker_ops"]
YML
    "$prom/prometheus" --config.file="$WORK/prometheus/prometheus.yml" \
        --storage.tsdb.path="$WORK/prometheus/data" \
        --web.listen-address="127.0.0.1:$prom_port" >"$WORK/prometheus.log" 2>&1 &
    PIDS+=($!)
    local prom_url="http://127.0.0.1:$prom_port"

    wait_for "$API/readyz" metasync-api
    wait_for "http://127.0.0.1:$worker_ops/readyz" metasync-worker
    wait_for "$prom_url/-/ready" prometheus
    TOKEN="$("$api_bin" token --tenant obs --role admin --ttl 1h 2>/dev/null)"

    # The workload.
    local good scheduled refused missing jobs=() id
    good="$(resource good "5432" "$SOURCE_DB")"
    scheduled="$(resource scheduled "5432" "$SOURCE_DB" '"schedule":{"interval_seconds":2}')"
    refused="$(resource refused "$refused_port" "$SOURCE_DB" '"retry_policy":{"max_attempts":3}')"
    missing="$(resource missing "5432" "no_such_database_$RUN_ID")"
    for id in "$good" "$scheduled" "$refused" "$missing"; do
        jobs+=("$(api POST "v1/resources/$id/sync" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')")
    done
    local job state deadline=$((SECONDS + 40))
    for job in "${jobs[@]}"; do
        while :; do
            state="$(api GET "v1/jobs/$job?wait=5" | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])')"
            [[ "$state" == succeeded || "$state" == failed || "$state" == cancelled ]] && break
            ((SECONDS < deadline)) || { log "job $job still $state after 40 s"; break; }
        done
        log "job $job: $state"
    done
    api GET "v1/resources/$good" >/dev/null

    # Prometheus hands new targets to its scrapers on a 5 s tick after start-up, so on a fast
    # machine the workload can be over before the first scrape: wait until both targets are up
    # (30 s at most), then for enough scrapes for every rate window to hold two samples.
    local up_tries=150
    until [[ "$(curl -fsS "$prom_url/api/v1/query" --data-urlencode 'query=count(up{job="metasync"} == 1)' 2>/dev/null |
        python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null)" == 2 ]]; do
        ((up_tries-- > 0)) || { log "the targets were not both up within 30 s"; break; }
        sleep 0.2
    done
    sleep 3
    check "Prometheus scrapes the API and the worker" python3 - "$prom_url" <<'PY'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="metasync"} == 1'})
result = json.load(urllib.request.urlopen(url))["data"]["result"]
assert len(result) == 2, f"targets up: {result}"
PY
    check "every alert rule loaded and evaluated without error" python3 - "$prom_url" <<'PY'
import json, sys, time, urllib.request, yaml
want = {r["alert"] for g in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"] for r in g["rules"]}
for _ in range(50):
    groups = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/rules"))["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    if want <= rules.keys() and all(rules[n].get("lastEvaluation", "").startswith("20") for n in want):
        break
    time.sleep(0.2)
missing = want - rules.keys()
assert not missing, f"not loaded: {missing}"
bad = {n: rules[n].get("lastError") for n in want if rules[n].get("health") != "ok"}
assert not bad, f"unhealthy: {bad}"
print(f"{len(want)} rules healthy")
PY
    check "the dashboard's queue variable lists the queue" python3 - "$prom_url" "$QUEUE" <<'PY'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/label/queue/values?" + urllib.parse.urlencode({"match[]": "metasync_build_info"})
values = json.load(urllib.request.urlopen(url))["data"]
assert sys.argv[2] in values, values
PY
    # One check per panel: every query parses and returns data.
    local panels
    panels="$(python3 -c 'import json; print(len(json.load(open("deploy/grafana/metasync.json"))["panels"]))')"
    local i
    for ((i = 0; i < panels; i++)); do
        check "panel $(python3 -c "import json; print(json.load(open('deploy/grafana/metasync.json'))['panels'][$i]['title'])")" \
            python3 - "$prom_url" "$QUEUE" "$i" <<'PY'
import json, sys, urllib.error, urllib.parse, urllib.request
base, queue, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
panel = json.load(open("deploy/grafana/metasync.json"))["panels"][index]
for target in panel["targets"]:
    expr = target["expr"].replace("$queue", queue).replace("$__rate_interval", "30s")
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        answer = json.load(urllib.request.urlopen(url))
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{target['refId']}: {json.load(e).get('error')}: {expr}")
    assert answer["status"] == "success", answer
    assert answer["data"]["result"], f"{target['refId']} returned no data: {expr}"
PY
    done

    VERDICT="observability: $PASSED passed, $FAILED failed"
    echo "$VERDICT"
    ((FAILED == 0))
}

main "$@"
