-- Webhooks: a tenant's HTTP receivers of job outcomes and catalog changes (docs/webhooks.md).
--
-- `webhooks` holds the subscriptions; `webhook_deliveries` is the outbox: one row per event and
-- subscribed hook, inserted by a trigger in the transaction that ends the job (and so writes
-- its catalog changes), then sent by workers on a lane of their own; `webhook_attempts` records
-- every try.

create table webhooks (
    -- UUID v7.
    id uuid primary key,
    tenant_id text not null,
    url text not null,
    -- Subset of 'job.failed', 'job.succeeded', 'catalog.changed' (checked by the API).
    events text[] not null,
    -- The signing secret, sealed to the workers' master key like a source password
    -- (shared/src/custody.rs, bound to tenant, hook id and url): the API cannot read it back.
    secret_sealed bytea not null,
    secret_key_id text not null,
    -- False once the receiver answered 410 Gone (or a PATCH turned it off); its pending
    -- deliveries are dropped and no new ones are made.
    enabled boolean not null default true,
    disabled_reason text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index webhooks_by_tenant on webhooks (tenant_id, id);

-- v7 ids made in SQL (PostgreSQL 15 has no uuidv7()): a millisecond timestamp, then random.
create function metasync_uuid_v7() returns uuid language sql volatile as $$
    select encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
                    from 1 for 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

create table webhook_deliveries (
    -- UUID v7; also the `webhook-id` header, the same on every attempt (receivers dedupe by it).
    id uuid primary key,
    tenant_id text not null,
    webhook_id uuid not null references webhooks (id) on delete cascade,
    event text not null,
    -- The body sent, fixed when the event happened: {"type", "timestamp", "data"}.
    payload jsonb not null,
    state text not null default 'pending'
        check (state in ('pending', 'delivering', 'succeeded', 'failed', 'dropped')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    -- While `delivering`: when a worker that died mid-send stops holding it.
    lease_expires_at timestamptz,
    last_status integer,
    last_error text,
    created_at timestamptz not null default now(),
    finished_at timestamptz
);

create index webhook_deliveries_by_hook on webhook_deliveries (webhook_id, id desc);
-- What the workers claim: due pending rows, and lapsed leases.
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where state = 'pending';
create index webhook_deliveries_delivering on webhook_deliveries (lease_expires_at)
    where state = 'delivering';

create table webhook_attempts (
    delivery_id uuid not null references webhook_deliveries (id) on delete cascade,
    attempt integer not null,
    tenant_id text not null,
    started_at timestamptz not null,
    duration_ms integer not null,
    -- The receiver's HTTP status; null when none came (refused by policy, timeout, reset).
    status_code integer,
    error text,
    primary key (delivery_id, attempt)
);

-- The outbox writer. On the jobs table, like the freshness trigger, because every path that
-- ends a job is an UPDATE of `jobs.state`; a success's catalog changes are written earlier in
-- the same transaction (`catalog::write_snapshot` then `jobs::succeed`), so they are counted
-- here and the event commits or rolls back with them.
create function record_webhook_events() returns trigger language plpgsql as $$
declare
    job_event text := case new.state when 'succeeded' then 'job.succeeded' else 'job.failed' end;
    data jsonb;
    summary jsonb;
begin
    -- The common case, no hook for this tenant, costs one index probe.
    if not exists (select 1 from webhooks w where w.tenant_id = new.tenant_id and w.enabled) then
        return null;
    end if;
    data := jsonb_build_object(
        'job_id', new.id, 'resource_id', new.resource_id, 'state', new.state,
        'attempts', new.attempts, 'error', new.error, 'error_class', new.error_class,
        'finished_at', new.finished_at, 'stats', new.stats);
    insert into webhook_deliveries (id, tenant_id, webhook_id, event, payload)
    select metasync_uuid_v7(), w.tenant_id, w.id, job_event,
           jsonb_build_object('type', job_event, 'timestamp', now(), 'data', data)
    from webhooks w
    where w.tenant_id = new.tenant_id and w.enabled and job_event = any (w.events);

    if new.state = 'succeeded' then
        select jsonb_object_agg(kind, n) into summary
        from (select kind, count(*) as n from catalog_changes
              where job_id = new.id group by kind) c;
        if summary is not null then
            insert into webhook_deliveries (id, tenant_id, webhook_id, event, payload)
            select metasync_uuid_v7(), w.tenant_id, w.id, 'catalog.changed',
                   jsonb_build_object('type', 'catalog.changed', 'timestamp', now(),
                       'data', jsonb_build_object(
                           'resource_id', new.resource_id, 'job_id', new.id,
                           'changes', summary,
                           'total', (select sum(v::bigint) from jsonb_each_text(summary) s (k, v))))
            from webhooks w
            where w.tenant_id = new.tenant_id and w.enabled and 'catalog.changed' = any (w.events);
        end if;
    end if;
    return null;
end
$$;

create trigger jobs_record_webhook_events
    after update of state on jobs
    for each row
    when (new.state in ('succeeded', 'failed') and old.state is distinct from new.state)
    execute function record_webhook_events();
