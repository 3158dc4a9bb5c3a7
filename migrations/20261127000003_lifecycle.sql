-- Job lifecycle: schedules, per-resource retry policy, batches, exactly-once schedule firing.

-- A resource syncs on a fixed interval or a cron expression (UTC), never both.
alter table resources
    add column sync_interval_seconds integer check (sync_interval_seconds >= 1),
    add column sync_cron text,
    -- The next due time; a scheduler claims due rows with FOR UPDATE SKIP LOCKED and advances it.
    add column next_sync_at timestamptz,
    -- Overrides of the deployment's retry policy: {"base_ms", "factor", "cap_ms", "max_attempts"}.
    add column retry_policy jsonb,
    add constraint resources_one_schedule check (sync_interval_seconds is null or sync_cron is null);

create index resources_due on resources (next_sync_at) where next_sync_at is not null;

create table batches (
    id uuid primary key,
    tenant_id text not null,
    created_at timestamptz not null default now()
);

alter table jobs
    -- The schedule tick that created the job; unique per resource, so a tick fires once however
    -- many schedulers race for it.
    add column scheduled_for timestamptz,
    add constraint jobs_batch_fk foreign key (batch_id) references batches (id) on delete set null;

create unique index jobs_one_per_tick on jobs (resource_id, scheduled_for)
    where scheduled_for is not null;
create index jobs_by_batch on jobs (batch_id) where batch_id is not null;
create index jobs_finished on jobs (finished_at) where finished_at is not null;
