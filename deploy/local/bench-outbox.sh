#!/usr/bin/env bash
# The webhook outbox trigger's cost on its own: 32,000 job endings by pgbench (8 clients) on a
# catalog database built from migrations/, with and without a webhook subscribed to every
# event, and prints the job endings per second of each. The difference is what the trigger
# adds to the transaction that ends a job (docs/webhooks.md, "Throughput"). The same rounds
# run on a second database built from the migrations before BASELINE (default: the one that
# made the outbox lean), so both triggers are measured in the same run.
#
#   deploy/local/bench-outbox.sh [ROUNDS] [BASELINE]   (PostgreSQL on 127.0.0.1:5432, user postgres)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-2}
baseline=${2:-20261207210100}
psql=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)
work=$(mktemp -d)
drop() { "${psql[@]}" -d postgres -c "drop database if exists metasync_bench_outbox" \
                                 -c "drop database if exists metasync_bench_outbox_base" 2>/dev/null; }
trap 'rm -rf "$work"; drop || true' EXIT

drop
"${psql[@]}" -d postgres -c "create database metasync_bench_outbox" -c "create database metasync_bench_outbox_base"
for migration in migrations/*.sql; do
    "${psql[@]}" -d metasync_bench_outbox -f "$migration" >/dev/null
    if [[ "$(basename "$migration")" < "$baseline" ]]; then
        "${psql[@]}" -d metasync_bench_outbox_base -f "$migration" >/dev/null
    fi
done

cat > "$work/setup.sql" <<'SQL'
truncate jobs cascade; delete from resources; delete from webhooks;
drop table if exists bench_jobs;
insert into resources (id, tenant_id, name, kind, host, port, database, username,
                       password_sealed, password_key_id, password_format)
select gen_random_uuid(), 'a', 'r' || i, 'postgres', 'h', 5432, 'd', 'u', '\x00', 'k', 2
from generate_series(1, 100000) i;
create table bench_jobs as
    select row_number() over () as n, gen_random_uuid() as id, id as resource_id from resources;
alter table bench_jobs add primary key (n);
insert into jobs (id, tenant_id, resource_id, state, started_at)
    select id, 'a', resource_id, 'running', now() from bench_jobs;
-- Two changes per job, as a first sync of a small source writes.
insert into catalog_changes (id, tenant_id, resource_id, job_id, database, schema_name, kind)
    select gen_random_uuid(), 'a', j.resource_id, j.id, 'db', 'public', k
    from jobs j, unnest(array['schema_added', 'table_added']) k;
vacuum analyze;
checkpoint;
SQL
cat > "$work/end-job.sql" <<'SQL'
\set n random(1, 100000)
update jobs set state = 'succeeded', finished_at = now()
where id = (select id from bench_jobs where n = :n) and state = 'running';
SQL

run() { # $1: the database; $2: with a hook (1) or not (0)
    local db=$1
    "${psql[@]}" -d "$db" -f "$work/setup.sql" >/dev/null 2>&1
    if [ "$2" = 1 ]; then
        "${psql[@]}" -d "$db" -c "insert into webhooks (id, tenant_id, url, events, secret_sealed, secret_key_id)
            values (gen_random_uuid(), 'a', 'http://127.0.0.1:9/', array['job.succeeded', 'job.failed', 'catalog.changed'], '\x00', 'k')"
    fi
    pgbench -h 127.0.0.1 -U postgres -n -c 8 -j 2 -t 4000 --random-seed=7 -f "$work/end-job.sql" "$db" 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
for round in $(seq "$rounds"); do
    for db in metasync_bench_outbox_base metasync_bench_outbox; do
        none=$(run "$db" 0)
        hook=$(run "$db" 1)
        deliveries=$("${psql[@]}" -d "$db" -tAc "select count(*) from webhook_deliveries")
        label=$([ "$db" = metasync_bench_outbox ] && echo "now     " || echo "baseline")
        printf 'round %s %s: no hook %6.0f job endings/s, hook %6.0f (%s deliveries), ratio %.3f\n' \
            "$round" "$label" "$none" "$hook" "$deliveries" "$(echo "$hook / $none" | bc -l)"
    done
done
