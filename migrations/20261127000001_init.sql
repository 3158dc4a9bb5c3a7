-- metasync catalog schema. Every tenant-owned table carries tenant_id, and every query filters by it.
-- Migrations are append-only: never edit one that has been applied.

create extension if not exists pg_trgm;

create table resources (
    id uuid primary key,
    tenant_id text not null,
    name text not null,
    kind text not null check (kind in ('postgres', 'mysql')),
    host text not null,
    port integer not null check (port between 1 and 65535),
    database text not null,
    username text not null,
    -- AES-256-GCM: nonce || ciphertext || tag, sealed with the resource id as associated data.
    password_sealed bytea not null,
    options jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (tenant_id, name)
);

create table jobs (
    -- UUID v7, so ids sort by creation time.
    id uuid primary key,
    tenant_id text not null,
    resource_id uuid not null references resources (id) on delete cascade,
    state text not null
        check (state in ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    attempts integer not null default 0,
    max_attempts integer not null default 5,
    worker_id text,
    -- Fencing token of the current attempt: a write commits only while the row still holds it.
    lease_token uuid,
    -- The running attempt's worker renews this; once it lapses another worker may take the job over.
    lease_expires_at timestamptz,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    next_attempt_at timestamptz,
    error text,
    error_class text check (error_class in ('transient', 'permanent')),
    stats jsonb,
    progress jsonb,
    cancel_requested boolean not null default false,
    retry_of uuid references jobs (id) on delete set null,
    batch_id uuid
);

create index jobs_by_tenant on jobs (tenant_id, id desc);
create index jobs_by_resource on jobs (resource_id, id desc);
-- Single flight: at most one active job per resource, whatever races the API loses.
create unique index jobs_one_active_per_resource on jobs (resource_id)
    where state in ('queued', 'running', 'retrying');
create index jobs_unfinished on jobs (state, lease_expires_at)
    where state in ('queued', 'running', 'retrying');

create table job_attempts (
    job_id uuid not null references jobs (id) on delete cascade,
    attempt integer not null,
    tenant_id text not null,
    worker_id text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    error_class text,
    error text,
    primary key (job_id, attempt)
);

create table catalog_schemas (
    id uuid primary key,
    tenant_id text not null,
    resource_id uuid not null references resources (id) on delete cascade,
    database text not null,
    name text not null,
    owner text,
    comment text,
    unique (resource_id, database, name)
);

create table catalog_tables (
    id uuid primary key,
    tenant_id text not null,
    resource_id uuid not null references resources (id) on delete cascade,
    database text not null,
    schema_name text not null,
    name text not null,
    -- table | view | materialized_view | partitioned_table | foreign_table
    kind text not null,
    owner text,
    comment text,
    row_estimate bigint,
    total_bytes bigint,
    view_definition text,
    -- Engine-specific facts (partition parent, MySQL engine, create/update time).
    details jsonb not null default '{}',
    constraints jsonb not null default '[]',
    indexes jsonb not null default '[]',
    -- Hash of the definition (columns, constraints, indexes, comments): a resync rewrites only
    -- the tables whose fingerprint moved.
    fingerprint text not null,
    last_job_id uuid,
    created_at timestamptz not null default now(),
    last_changed_at timestamptz not null default now(),
    unique (resource_id, database, schema_name, name)
);

create index catalog_tables_by_tenant on catalog_tables (tenant_id, resource_id, schema_name, name);
create index catalog_tables_name_trgm on catalog_tables using gin (name gin_trgm_ops);

create table catalog_columns (
    table_id uuid not null references catalog_tables (id) on delete cascade,
    tenant_id text not null,
    position integer not null,
    name text not null,
    data_type text not null,
    nullable boolean not null,
    default_value text,
    comment text,
    -- identity / generated (PostgreSQL) or EXTRA (MySQL).
    details jsonb not null default '{}',
    primary key (table_id, position)
);

create index catalog_columns_name_trgm on catalog_columns using gin (name gin_trgm_ops);
