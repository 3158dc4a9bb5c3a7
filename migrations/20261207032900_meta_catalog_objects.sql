-- Schema-level objects of the catalog (issue 11): a schema's user-defined types (enums with
-- their values, domains with their base type and checks) and its sequences (with the column
-- that owns each), stored as JSON like a table's constraints and indexes, and the change kinds
-- their history needs.

alter table catalog_schemas
    -- [{"name", "kind": "enum"|"domain", "values", "base_type", "nullable", "default_value",
    --   "checks", "comment"}], by name; see catalog::TypeInfo.
    add column types jsonb not null default '[]',
    -- [{"name", "data_type", "start", "increment", "min", "max", "cycle", "owned_by",
    --   "identity"}], by name; see catalog::SequenceInfo.
    add column sequences jsonb not null default '[]';

alter table catalog_changes drop constraint catalog_changes_kind_check;
alter table catalog_changes add constraint catalog_changes_kind_check check (kind in (
    'schema_added', 'schema_removed', 'table_added', 'table_removed', 'table_changed',
    'column_added', 'column_removed', 'column_changed', 'constraint_added',
    'constraint_removed', 'constraint_changed', 'index_added', 'index_removed',
    'index_changed', 'comment_changed', 'type_added', 'type_removed', 'type_changed',
    'sequence_added', 'sequence_removed', 'sequence_changed'));
