-- Deleting a resource keeps its jobs readable (an audit trail): the resource row goes, with its
-- catalog, change history and sealed password; a tombstone keeps its id, name and kind; jobs no
-- longer cascade (their active ones are cancelled by the delete, in its transaction).
create table resource_tombstones (
    id uuid primary key,
    tenant_id text not null,
    name text not null,
    kind text not null,
    deleted_at timestamptz not null default now()
);
create index resource_tombstones_by_tenant on resource_tombstones (tenant_id, id);

alter table jobs drop constraint jobs_resource_id_fkey;
