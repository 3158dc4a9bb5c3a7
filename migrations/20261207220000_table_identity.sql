-- Table identity across renames and scope changes (docs/catalog.md, "Identity").

-- The source's own id of the relation (PostgreSQL's pg_class.oid): a table renamed in place
-- keeps its oid, so the writer matches a vanished name to a new one by it and the table keeps
-- its id. Null on MySQL/MariaDB, which have no stable id, and on rows written before this.
alter table catalog_tables add column source_oid bigint;

-- The ids of tables that left the catalog (dropped on the source, or out of the scan scope),
-- by the name they had: a table that comes back under that name gets its id again, so an old
-- /v1/tables/{id} answers again. Written and reused by the writer's delete statement; the
-- latest table to leave under a name wins. Gone with the resource, or once older than the
-- job retention (the prune duty, by retired_at).
create table catalog_retired_tables (
    resource_id uuid not null references resources (id) on delete cascade,
    tenant_id text not null,
    database text not null,
    schema_name text not null,
    name text not null,
    id uuid not null,
    retired_at timestamptz not null default now(),
    primary key (resource_id, database, schema_name, name)
);

create index catalog_retired_tables_by_age on catalog_retired_tables (retired_at);
