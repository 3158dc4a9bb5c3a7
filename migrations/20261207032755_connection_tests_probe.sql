-- Test-connection requests (`POST /v1/resources/test`, `POST /v1/resources/{id}/test`): the API
-- cannot open passwords or dial sources, so it stores the request here, pushes its id to the
-- workers' test lane in Redis and polls for the result. A row lives seconds: the API deletes it
-- once it has the result or gives up, and the maintenance leader's prune duty deletes any row
-- past `expires_at` (an API process that died mid-wait).
create table connection_tests (
    -- UUID v7. For an unsaved definition, also the `resource` its password is sealed for.
    id uuid primary key,
    tenant_id text not null,
    -- The stored resource tested; null for an unsaved definition. Not a foreign key: deleting
    -- a resource while its test runs must not wait for the test.
    resource_id uuid,
    kind text not null,
    host text not null,
    port integer not null,
    database text not null,
    username text not null,
    tls jsonb not null,
    -- Sealed for (tenant, coalesce(resource_id, id), kind, host, port, user, database), exactly
    -- as a resource's (shared/src/custody.rs); copied from the resource for a stored one.
    password_sealed bytea not null,
    password_key_id text not null,
    created_at timestamptz not null default now(),
    -- The API stops waiting then; a worker does not start a test past it.
    expires_at timestamptz not null,
    -- The worker's answer (`ConnectionTestResult`); null until then.
    result jsonb,
    finished_at timestamptz
);

-- For the prune duty.
create index connection_tests_by_expiry on connection_tests (expires_at);

-- Testing a stored resource is recorded in the audit log (it sends the stored password).
alter table audit_events drop constraint audit_events_action_check;
alter table audit_events add constraint audit_events_action_check check (action in (
    'resource.create', 'resource.update', 'resource.delete', 'resource.sync', 'resource.test',
    'batch.create', 'job.cancel', 'job.retry'));
