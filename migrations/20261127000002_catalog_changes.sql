-- Change history: every difference a sync found between the stored catalog and the source.
-- Written in the same transaction as the catalog itself, so the two never disagree.

create table catalog_changes (
    -- UUID v7, so ids sort by creation time.
    id uuid primary key,
    tenant_id text not null,
    resource_id uuid not null references resources (id) on delete cascade,
    -- The job whose sync saw the change; the history outlives the job if jobs are ever purged.
    job_id uuid references jobs (id) on delete set null,
    database text not null,
    schema_name text not null,
    -- Null for a change to the schema itself.
    table_name text,
    kind text not null check (kind in (
        'schema_added', 'schema_removed', 'table_added', 'table_removed', 'table_changed',
        'column_added', 'column_removed', 'column_changed', 'constraint_added',
        'constraint_removed', 'constraint_changed', 'index_added', 'index_removed',
        'index_changed', 'comment_changed')),
    -- The column, constraint or index the change is about; null for schema and table changes.
    object_name text,
    -- {"before": ..., "after": ...}: the object (or, for table_changed, the attributes that
    -- moved) as stored before and as scanned now; one side is absent for additions and removals.
    details jsonb not null default '{}',
    -- The writing transaction's time: one sync's changes share it, and (created_at, id) is the
    -- keyset order the API pages by.
    created_at timestamptz not null default now()
);

create index catalog_changes_by_resource on catalog_changes (resource_id, created_at, id);
create index catalog_changes_by_job on catalog_changes (job_id);
