-- Change kinds for identity and scope (docs/catalog.md): a PostgreSQL table or column renamed
-- in place (same oid / attnum, same id), and a resource's scan scope (filters, depth,
-- databases) changed, recorded once instead of as removals and additions.
alter table catalog_changes drop constraint catalog_changes_kind_check;
alter table catalog_changes add constraint catalog_changes_kind_check check (kind in (
    'schema_added', 'schema_removed', 'table_added', 'table_removed', 'table_changed',
    'table_renamed', 'column_added', 'column_removed', 'column_changed', 'column_renamed',
    'constraint_added', 'constraint_removed', 'constraint_changed', 'index_added',
    'index_removed', 'index_changed', 'comment_changed', 'type_added', 'type_removed',
    'type_changed', 'sequence_added', 'sequence_removed', 'sequence_changed',
    'scope_changed'));
