-- The scan options the resource's catalog was last written with: a sync whose options differ
-- records one scope_changed change, and what left or entered the scope because of it is not
-- reported as removed or added. Null until the first sync after this migration.
alter table resources add column catalog_scope jsonb;
