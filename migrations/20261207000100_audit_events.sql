-- The audit log: one row per change a caller made (who, what, which object, when), written in
-- the same transaction as the change. Kept as long as finished jobs are (the maintenance
-- leader's prune duty deletes rows older than METASYNC_JOB_RETENTION).
create table audit_events (
    -- UUID v7: the tie-breaker of events in one transaction (which share `at`).
    id uuid primary key,
    tenant_id text not null,
    -- The JWT `sub`, or `internal-key:<key id>` for the internal API key.
    subject text not null,
    action text not null check (action in (
        'resource.create', 'resource.update', 'resource.delete', 'resource.sync',
        'batch.create', 'job.cancel', 'job.retry')),
    object_type text not null check (object_type in ('resource', 'job', 'batch')),
    -- Not a foreign key: the record outlives the object (a deleted resource keeps its history).
    object_id uuid not null,
    at timestamptz not null default now(),
    -- Non-secret details: names of changed fields, the job a sync created; never a value of a
    -- password.
    details jsonb not null default '{}'
);

create index audit_events_by_tenant on audit_events (tenant_id, at desc, id desc);
create index audit_events_by_object on audit_events (tenant_id, object_id, at desc, id desc);
-- For the prune duty.
create index audit_events_by_time on audit_events (at);
