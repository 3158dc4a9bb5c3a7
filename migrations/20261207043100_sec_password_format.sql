-- What a sealed password's associated data covers (shared/src/custody.rs, `RecordFormat`):
-- 1 = the connection target (tenant, resource, kind, host, port, user, database) and key id;
-- 2 = also the source's TLS settings (`tls`: mode and CA), so a `tls` weakened in this table
-- cannot be opened. Existing records are format 1 and keep opening; `metasync-worker
-- rotate-master-key` re-seals them as format 2. No default: every write names its format.
alter table resources add column password_format smallint not null default 1
    check (password_format in (1, 2));
alter table resources alter column password_format drop default;

-- Test-connection requests carry a sealed password too (sealed for the definition, or copied
-- from the resource with its format).
alter table connection_tests add column password_format smallint not null default 1
    check (password_format in (1, 2));
alter table connection_tests alter column password_format drop default;
