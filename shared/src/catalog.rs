//! The catalog model: what a scan reads from a source, independent of its engine. The worker
//! builds a [`Snapshot`]; [`crate::db::catalog`] diffs it against what is stored and writes
//! only what changed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything one sync read from one source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// One entry per database the scan options selected.
    pub databases: Vec<DatabaseSnapshot>,
    /// Statements issued against the source, all databases together.
    pub statements: u64,
    /// What the scan could not read, recorded with the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::domain::JobWarning>,
}

/// One source database as a scan read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseSnapshot {
    /// The database name on the source server.
    pub name: String,
    /// The schemas read from this database.
    pub schemas: Vec<SchemaInfo>,
    /// Tables of all schemas, each naming its schema.
    pub tables: Vec<TableInfo>,
}

/// A schema as a scan reads it and as `catalog_schemas` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInfo {
    /// Schema name; in MySQL, where a schema is a database, the database name.
    pub name: String,
    /// Owning role; `None` where the engine has no owner (MySQL).
    pub owner: Option<String>,
    /// The schema's comment; `None` when unset.
    pub comment: Option<String>,
    /// User-defined types: enums and domains (PostgreSQL), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<TypeInfo>,
    /// Sequences (PostgreSQL), by name, identity columns' own included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceInfo>,
}

impl SchemaInfo {
    /// A schema with no types or sequences.
    pub fn new(name: String, owner: Option<String>, comment: Option<String>) -> Self {
        Self {
            name,
            owner,
            comment,
            types: Vec::new(),
            sequences: Vec::new(),
        }
    }
}

/// A user-defined type: an enum with its values, or a domain with its base type and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TypeInfo {
    /// Type name, unqualified (its schema is the one it is listed under).
    pub name: String,
    /// `enum` or `domain`.
    pub kind: TypeKind,
    /// An enum's values in their sort order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// A domain's base type, as the engine prints it, e.g. `numeric(10,2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_type: Option<String>,
    /// Whether a domain accepts NULL (`false` for `NOT NULL`); only for a domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    /// A domain's default expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// A domain's `CHECK` constraints, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ConstraintInfo>,
    /// The type's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a [`TypeInfo`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TypeKind {
    /// `CREATE TYPE … AS ENUM`.
    Enum,
    /// `CREATE DOMAIN`.
    Domain,
}

/// A sequence and the column that owns it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SequenceInfo {
    /// Sequence name, unqualified.
    pub name: String,
    /// `smallint`, `integer` or `bigint`.
    pub data_type: String,
    /// First value.
    pub start: i64,
    /// Step.
    pub increment: i64,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Whether it wraps around at the end.
    pub cycle: bool,
    /// The column the sequence belongs to (`OWNED BY`, a `serial`, or an identity column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<ColumnRef>,
    /// Whether it is an identity column's own sequence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub identity: bool,
}

/// A column of a table, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ColumnRef {
    /// Schema of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// A table or view as a scan reads it, and as the catalog stores its definition: the stored
/// table ([`crate::db::catalog::TableDetail`]) is this plus where it is stored. Read back from
/// `catalog_tables` with `schema_name as schema`; [`Self::columns`] comes from a second query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TableInfo {
    /// Name of the schema the table is in.
    pub schema: String,
    /// Table name, unqualified.
    pub name: String,
    /// `table`, `view`, `materialized_view`, `partitioned_table` or `foreign_table`.
    pub kind: String,
    /// Owning role; `None` where the engine has no owner (MySQL).
    pub owner: Option<String>,
    /// The table's comment; `None` when unset.
    pub comment: Option<String>,
    /// Row count as the engine's statistics estimate it, not counted; `None` for views (and
    /// on PostgreSQL for a table never analyzed). A statistic: refreshed on every sync, not part
    /// of the fingerprint.
    pub row_estimate: Option<i64>,
    /// Size on disk in bytes, indexes (and TOAST) included, estimated from page counts
    /// (PostgreSQL's `relpages`, MySQL's `DATA_LENGTH + INDEX_LENGTH`), not measured; `None`
    /// for views. A statistic, like [`Self::row_estimate`].
    pub estimated_bytes: Option<i64>,
    /// The `SELECT` behind a view; `None` for other kinds.
    pub view_definition: Option<String>,
    /// Engine-specific facts, e.g. `{"partition_of": "public.events"}` or `{"engine": "InnoDB"}`.
    pub details: serde_json::Value,
    /// In ordinal order; read from `catalog_columns`, hence skipped by `FromRow`.
    #[sqlx(skip)]
    pub columns: Vec<ColumnInfo>,
    /// Stored as JSON in `catalog_tables.constraints`.
    #[sqlx(json)]
    pub constraints: Vec<ConstraintInfo>,
    /// Stored as JSON in `catalog_tables.indexes`.
    #[sqlx(json)]
    pub indexes: Vec<IndexInfo>,
    /// The source's own id of the relation (PostgreSQL's `pg_class.oid`), which a rename keeps:
    /// how the writer tells a renamed table from a dropped one and a new one. `None` on
    /// MySQL/MariaDB, which have no stable id. Not part of the definition (a dump and restore
    /// moves it) nor of the API; stored in `catalog_tables.source_oid`.
    #[serde(skip)]
    #[sqlx(default)]
    pub source_oid: Option<i64>,
}

/// A column as a scan reads it and as `catalog_columns` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ColumnInfo {
    /// Ordinal position, from 1.
    pub position: i32,
    /// Column name.
    pub name: String,
    /// The type as the engine prints it, e.g. `character varying(64)`.
    pub data_type: String,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// The default expression as the engine prints it; `None` when there is none.
    pub default_value: Option<String>,
    /// The column's comment; `None` when unset.
    pub comment: Option<String>,
    /// Identity / generated (PostgreSQL) or `EXTRA` (MySQL); `{}` when there is none.
    pub details: serde_json::Value,
}

/// A table constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConstraintInfo {
    /// Constraint name; unique within the table.
    pub name: String,
    /// What the constraint enforces.
    pub kind: ConstraintKind,
    /// Constrained columns, in key order; empty for a table-level check.
    pub columns: Vec<String>,
    /// The referenced table and columns; only for a foreign key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<ForeignKeyTarget>,
    /// The engine's text of the constraint, e.g. a check expression; `None` when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// A foreign key's `ON DELETE` action; only for a foreign key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<ForeignKeyAction>,
    /// A foreign key's `ON UPDATE` action; only for a foreign key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_update: Option<ForeignKeyAction>,
    /// A foreign key's `MATCH` type; only for a foreign key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_type: Option<ForeignKeyMatch>,
    /// Whether the check can be deferred to commit (`DEFERRABLE`); for foreign keys on both
    /// engines (never on MySQL/MariaDB) and PostgreSQL's primary keys and unique constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferrable: Option<bool>,
    /// Whether a deferrable constraint is checked at commit unless set otherwise
    /// (`INITIALLY DEFERRED`); present where [`Self::deferrable`] is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initially_deferred: Option<bool>,
}

impl ConstraintInfo {
    /// A constraint with only its name, kind and columns; the rest unset.
    pub fn new(name: String, kind: ConstraintKind, columns: Vec<String>) -> Self {
        Self {
            name,
            kind,
            columns,
            references: None,
            definition: None,
            on_delete: None,
            on_update: None,
            match_type: None,
            deferrable: None,
            initially_deferred: None,
        }
    }
}

/// What a foreign key does to the referencing rows when the referenced row is deleted or its
/// key updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForeignKeyAction {
    /// `NO ACTION` (the default): fail, at the end of the statement (or commit if deferred).
    NoAction,
    /// `RESTRICT`: fail at once.
    Restrict,
    /// `CASCADE`: delete or update the referencing rows too.
    Cascade,
    /// `SET NULL`.
    SetNull,
    /// `SET DEFAULT`.
    SetDefault,
}

/// How a multi-column foreign key matches when some referencing columns are NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForeignKeyMatch {
    /// `MATCH SIMPLE` (the default; MySQL/MariaDB's `NONE`): any NULL column passes.
    Simple,
    /// `MATCH FULL`: all NULL or none.
    Full,
    /// `MATCH PARTIAL` (not implemented by either engine, kept for completeness).
    Partial,
}

/// What a [`ConstraintInfo`] enforces. Stored inside `catalog_tables.constraints` (JSON) and
/// sent as the same string (`primary_key`, …). The variants are in the order of those strings,
/// so sorting by kind orders as sorting the strings did (the MySQL scanner sorts by it, and a
/// table's fingerprint hashes the sorted list).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintKind {
    /// `CHECK (…)`.
    Check,
    /// `FOREIGN KEY … REFERENCES …`.
    ForeignKey,
    /// `PRIMARY KEY`.
    PrimaryKey,
    /// `UNIQUE`.
    Unique,
}

/// The referenced side of a foreign key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForeignKeyTarget {
    /// Schema of the referenced table.
    pub schema: String,
    /// Referenced table.
    pub table: String,
    /// Referenced columns, paired in order with the constraint's columns.
    pub columns: Vec<String>,
}

/// An index of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IndexInfo {
    /// Index name; MySQL names the primary key's index `PRIMARY`.
    pub name: String,
    /// The key's plain columns in key order (not the `INCLUDE` columns, see [`Self::include`]);
    /// empty for a purely expression index. [`Self::keys`] has every key part in order.
    pub columns: Vec<String>,
    /// The indexed expression(s), for an expression index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Whether it enforces uniqueness.
    pub unique: bool,
    /// Whether it backs the primary key.
    pub primary: bool,
    /// Access method in lower case, e.g. `btree`, `hash`, `gin`.
    pub method: String,
    /// Every key part in key order: a column or an expression, with its order, nulls
    /// placement, operator class and prefix length where they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<IndexKey>,
    /// Non-key columns stored in the index (PostgreSQL's `INCLUDE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// The `WHERE` of a partial index (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// The statement that would create the index: PostgreSQL's `pg_get_indexdef`; on
    /// MySQL/MariaDB the key's clause as `SHOW CREATE TABLE` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

/// One key part of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IndexKey {
    /// The column; `None` for an expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The expression, for an expression key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// `asc` or `desc`; `None` where the method keeps no order (gin, hash, fulltext, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortOrder>,
    /// Where NULLs sort (PostgreSQL); `None` where the method keeps no order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<NullsOrder>,
    /// The operator class, only when it is not the type's default (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opclass: Option<String>,
    /// The collation, only when it is not the column's own (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// How many leading characters (bytes for binary types) are indexed (MySQL/MariaDB's
    /// prefix index, `col(10)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<i64>,
}

/// The order of an index key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// Where an index key part sorts NULLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NullsOrder {
    /// `NULLS FIRST` (PostgreSQL's default for `DESC`).
    First,
    /// `NULLS LAST` (PostgreSQL's default for `ASC`).
    Last,
}

/// Keys of [`TableInfo::details`] that move without any change to the definition: MySQL's
/// `UPDATE_TIME` moves on every write to the table's rows, and `CREATE_TIME` on every rebuild
/// (`OPTIMIZE TABLE` as much as `ALTER TABLE`).
const VOLATILE_DETAILS: &[&str] = &["created_at", "updated_at"];

impl TableInfo {
    /// [`Self::details`] without the volatile keys: what the fingerprint and the diff see.
    fn definition_details(&self) -> serde_json::Value {
        match &self.details {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .filter(|(k, _)| !VOLATILE_DETAILS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A stable hash of the table's definition. Row estimates, sizes and volatile details
    /// drift on their own and are left out, so that an unchanged schema resyncs without
    /// writing anything.
    pub fn fingerprint(&self) -> String {
        #[derive(Serialize)]
        struct Definition<'a> {
            kind: &'a str,
            owner: &'a Option<String>,
            comment: &'a Option<String>,
            view_definition: &'a Option<String>,
            details: &'a serde_json::Value,
            columns: &'a [ColumnInfo],
            constraints: &'a [ConstraintInfo],
            indexes: &'a [IndexInfo],
        }
        let definition = Definition {
            kind: &self.kind,
            owner: &self.owner,
            comment: &self.comment,
            view_definition: &self.view_definition,
            details: &self.definition_details(),
            columns: &self.columns,
            constraints: &self.constraints,
            indexes: &self.indexes,
        };
        let bytes = serde_json::to_vec(&definition).expect("catalog types always serialize");
        hex::encode(&Sha256::digest(&bytes)[..16])
    }
}

/// What kind of difference a change-history entry records. Stored as text in
/// `catalog_changes.kind` and sent as the same string (`table_added`, …).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ChangeKind {
    /// A schema appeared on the source.
    SchemaAdded,
    /// A schema disappeared from the source.
    SchemaRemoved,
    /// A table appeared.
    TableAdded,
    /// A table disappeared.
    TableRemoved,
    /// Kind, owner, view definition or engine details moved.
    TableChanged,
    /// Renamed in place (PostgreSQL, by oid): same table, same id, a new name.
    TableRenamed,
    /// A column appeared.
    ColumnAdded,
    /// A column disappeared.
    ColumnRemoved,
    /// Type, nullability, default, comment or identity/generated moved.
    ColumnChanged,
    /// Renamed in place (PostgreSQL, by attnum).
    ColumnRenamed,
    /// A constraint appeared.
    ConstraintAdded,
    /// A constraint disappeared.
    ConstraintRemoved,
    /// Same name, different columns, target or definition.
    ConstraintChanged,
    /// An index appeared.
    IndexAdded,
    /// An index disappeared.
    IndexRemoved,
    /// Same name, different columns, expression, uniqueness or method.
    IndexChanged,
    /// The comment of a table (or, with no table, of a schema).
    CommentChanged,
    /// A type (enum or domain) appeared in an existing schema.
    TypeAdded,
    /// A type disappeared.
    TypeRemoved,
    /// Same name, different values (e.g. `ALTER TYPE … ADD VALUE`), base type, checks, ….
    TypeChanged,
    /// A sequence appeared in an existing schema.
    SequenceAdded,
    /// A sequence disappeared.
    SequenceRemoved,
    /// Same name, different type, bounds, step, cycle or owner.
    SequenceChanged,
    /// The resource's scan scope (databases, filters, depth) changed: recorded once, and the
    /// objects that left or entered the scope because of it are not reported one by one.
    ScopeChanged,
}

impl ChangeKind {
    /// The stored and wire form, for rows written as text (`COPY`, text arrays).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SchemaAdded => "schema_added",
            Self::SchemaRemoved => "schema_removed",
            Self::TableAdded => "table_added",
            Self::TableRemoved => "table_removed",
            Self::TableChanged => "table_changed",
            Self::TableRenamed => "table_renamed",
            Self::ColumnAdded => "column_added",
            Self::ColumnRemoved => "column_removed",
            Self::ColumnChanged => "column_changed",
            Self::ColumnRenamed => "column_renamed",
            Self::ConstraintAdded => "constraint_added",
            Self::ConstraintRemoved => "constraint_removed",
            Self::ConstraintChanged => "constraint_changed",
            Self::IndexAdded => "index_added",
            Self::IndexRemoved => "index_removed",
            Self::IndexChanged => "index_changed",
            Self::CommentChanged => "comment_changed",
            Self::TypeAdded => "type_added",
            Self::TypeRemoved => "type_removed",
            Self::TypeChanged => "type_changed",
            Self::SequenceAdded => "sequence_added",
            Self::SequenceRemoved => "sequence_removed",
            Self::SequenceChanged => "sequence_changed",
            Self::ScopeChanged => "scope_changed",
        }
    }
}

/// One difference inside a table, found by [`diff_table`].
#[derive(Debug, Clone, PartialEq)]
pub struct TableChange {
    /// What changed.
    pub kind: ChangeKind,
    /// The column, constraint or index; `None` for the table itself.
    pub object_name: Option<String>,
    /// `{"before": …, "after": …}`, one side absent for additions and removals.
    pub details: serde_json::Value,
}

impl TableChange {
    /// Builds a change whose `details` hold `before` and `after`, each only when given.
    pub fn new(
        kind: ChangeKind,
        object_name: Option<&str>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Self {
        let mut details = serde_json::Map::new();
        if let Some(before) = before {
            details.insert("before".into(), before);
        }
        if let Some(after) = after {
            details.insert("after".into(), after);
        }
        Self {
            kind,
            object_name: object_name.map(str::to_owned),
            details: serde_json::Value::Object(details),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("catalog types always serialize")
}

/// The type and sequence changes of a schema that was stored before, matched by name like a
/// table's columns; the changes name no table.
pub fn diff_schema_objects(before: &SchemaInfo, after: &SchemaInfo) -> Vec<TableChange> {
    let mut out = Vec::new();
    diff_named(
        &before.types,
        &after.types,
        |t| &t.name,
        |a, b| a == b,
        [
            ChangeKind::TypeAdded,
            ChangeKind::TypeRemoved,
            ChangeKind::TypeChanged,
        ],
        &mut out,
    );
    diff_named(
        &before.sequences,
        &after.sequences,
        |s| &s.name,
        |a, b| a == b,
        [
            ChangeKind::SequenceAdded,
            ChangeKind::SequenceRemoved,
            ChangeKind::SequenceChanged,
        ],
        &mut out,
    );
    out
}

/// Added, removed and changed items of two lists keyed by name, in `after`'s order then
/// `before`'s. `same` decides whether two items with one name are equal.
fn diff_named<T: Serialize>(
    before: &[T],
    after: &[T],
    name: impl Fn(&T) -> &str,
    same: impl Fn(&T, &T) -> bool,
    [added, removed, changed]: [ChangeKind; 3],
    out: &mut Vec<TableChange>,
) {
    for new in after {
        match before.iter().find(|old| name(old) == name(new)) {
            None => out.push(TableChange::new(
                added,
                Some(name(new)),
                None,
                Some(to_json(new)),
            )),
            Some(old) if !same(old, new) => out.push(TableChange::new(
                changed,
                Some(name(new)),
                Some(to_json(old)),
                Some(to_json(new)),
            )),
            Some(_) => {}
        }
    }
    for old in before {
        if !after.iter().any(|new| name(new) == name(old)) {
            out.push(TableChange::new(
                removed,
                Some(name(old)),
                Some(to_json(old)),
                None,
            ));
        }
    }
}

/// The column changes of one relation scanned twice (same oid): columns are matched by
/// position, PostgreSQL's `attnum`, which a rename keeps and which is never reused, so a
/// column renamed in place is `column_renamed` (with `column_changed` too if more moved), not
/// a removal and an addition.
fn diff_columns_in_place(before: &[ColumnInfo], after: &[ColumnInfo], out: &mut Vec<TableChange>) {
    for new in after {
        let Some(old) = before.iter().find(|old| old.position == new.position) else {
            out.push(TableChange::new(
                ChangeKind::ColumnAdded,
                Some(&new.name),
                None,
                Some(to_json(new)),
            ));
            continue;
        };
        if old.name != new.name {
            out.push(TableChange::new(
                ChangeKind::ColumnRenamed,
                Some(&new.name),
                Some(serde_json::json!({ "name": old.name })),
                Some(serde_json::json!({ "name": new.name })),
            ));
        }
        let renamed = ColumnInfo {
            name: new.name.clone(),
            ..old.clone()
        };
        if renamed != *new {
            out.push(TableChange::new(
                ChangeKind::ColumnChanged,
                Some(&new.name),
                Some(to_json(old)),
                Some(to_json(new)),
            ));
        }
    }
    for old in before {
        if !after.iter().any(|new| new.position == old.position) {
            out.push(TableChange::new(
                ChangeKind::ColumnRemoved,
                Some(&old.name),
                Some(to_json(old)),
                None,
            ));
        }
    }
}

/// Every difference between the stored definition of a table and the scanned one. Columns,
/// constraints and indexes are matched by name; a column's position alone is not a change
/// (MySQL renumbers the columns after a dropped one). When both sides carry the same
/// [`TableInfo::source_oid`] (the same PostgreSQL relation), columns are matched by position
/// instead, so a renamed column is recognised. The table's own name is not compared: a
/// rename is the writer's `table_renamed`.
pub fn diff_table(before: &TableInfo, after: &TableInfo) -> Vec<TableChange> {
    let mut out = Vec::new();
    if before.comment != after.comment {
        out.push(TableChange::new(
            ChangeKind::CommentChanged,
            None,
            Some(to_json(&before.comment)),
            Some(to_json(&after.comment)),
        ));
    }
    let (old_details, new_details) = (before.definition_details(), after.definition_details());
    let mut old_attrs = serde_json::Map::new();
    let mut new_attrs = serde_json::Map::new();
    let attributes = [
        ("kind", to_json(&before.kind), to_json(&after.kind)),
        ("owner", to_json(&before.owner), to_json(&after.owner)),
        (
            "view_definition",
            to_json(&before.view_definition),
            to_json(&after.view_definition),
        ),
        ("details", old_details, new_details),
    ];
    for (key, old, new) in attributes {
        if old != new {
            old_attrs.insert(key.into(), old);
            new_attrs.insert(key.into(), new);
        }
    }
    if !old_attrs.is_empty() {
        out.push(TableChange::new(
            ChangeKind::TableChanged,
            None,
            Some(old_attrs.into()),
            Some(new_attrs.into()),
        ));
    }
    if before.source_oid.is_some() && before.source_oid == after.source_oid {
        diff_columns_in_place(&before.columns, &after.columns, &mut out);
    } else {
        diff_named(
            &before.columns,
            &after.columns,
            |c| &c.name,
            |a, b| {
                ColumnInfo {
                    position: b.position,
                    ..a.clone()
                } == *b
            },
            [
                ChangeKind::ColumnAdded,
                ChangeKind::ColumnRemoved,
                ChangeKind::ColumnChanged,
            ],
            &mut out,
        );
    }
    diff_named(
        &before.constraints,
        &after.constraints,
        |c| &c.name,
        |a, b| a == b,
        [
            ChangeKind::ConstraintAdded,
            ChangeKind::ConstraintRemoved,
            ChangeKind::ConstraintChanged,
        ],
        &mut out,
    );
    // An index's definition text names its table; a rename moves it and nothing else.
    let renamed = (&before.schema, &before.name) != (&after.schema, &after.name);
    diff_named(
        &before.indexes,
        &after.indexes,
        |i| &i.name,
        |a, b| {
            if renamed {
                IndexInfo {
                    definition: b.definition.clone(),
                    ..a.clone()
                } == *b
            } else {
                a == b
            }
        },
        [
            ChangeKind::IndexAdded,
            ChangeKind::IndexRemoved,
            ChangeKind::IndexChanged,
        ],
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn column(position: i32, name: &str, data_type: &str) -> ColumnInfo {
        ColumnInfo {
            position,
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
            default_value: None,
            comment: None,
            details: json!({}),
        }
    }

    fn table(columns: Vec<ColumnInfo>) -> TableInfo {
        TableInfo {
            schema: "s".into(),
            name: "t".into(),
            kind: "table".into(),
            owner: None,
            comment: None,
            row_estimate: Some(1),
            estimated_bytes: Some(8192),
            view_definition: None,
            details: json!({"engine": "InnoDB", "updated_at": "2026-01-01"}),
            columns,
            constraints: vec![],
            indexes: vec![],
            source_oid: None,
        }
    }

    #[test]
    fn volatile_facts_do_not_move_the_fingerprint() {
        let a = table(vec![column(1, "id", "int")]);
        let mut b = a.clone();
        b.row_estimate = Some(1000);
        b.estimated_bytes = None;
        b.details["updated_at"] = json!("2026-02-02");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(diff_table(&a, &b).is_empty());
        b.details["engine"] = json!("Aria");
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(diff_table(&a, &b)[0].kind, ChangeKind::TableChanged);
    }

    #[test]
    fn index_and_foreign_key_details_move_the_fingerprint() {
        let mut a = table(vec![column(1, "id", "int")]);
        a.indexes.push(IndexInfo {
            name: "i".into(),
            columns: vec!["id".into()],
            expression: None,
            unique: false,
            primary: false,
            method: "btree".into(),
            keys: vec![IndexKey {
                column: Some("id".into()),
                expression: None,
                order: Some(SortOrder::Asc),
                nulls: Some(NullsOrder::Last),
                opclass: None,
                collation: None,
                prefix_length: None,
            }],
            include: vec![],
            predicate: Some("(id > 0)".into()),
            definition: None,
        });
        let mut fk = ConstraintInfo::new("fk".into(), ConstraintKind::ForeignKey, vec![]);
        fk.on_delete = Some(ForeignKeyAction::NoAction);
        a.constraints.push(fk);
        let changes: [fn(&mut TableInfo); 5] = [
            |t| t.indexes[0].predicate = Some("(id > 1)".into()),
            |t| t.indexes[0].keys[0].order = Some(SortOrder::Desc),
            |t| t.indexes[0].include.push("x".into()),
            |t| t.constraints[0].on_delete = Some(ForeignKeyAction::Cascade),
            |t| t.constraints[0].deferrable = Some(true),
        ];
        for change in changes {
            let mut b = a.clone();
            change(&mut b);
            assert_ne!(a.fingerprint(), b.fingerprint(), "{b:?}");
            assert_eq!(diff_table(&a, &b).len(), 1);
        }
    }

    #[test]
    fn stored_definitions_without_the_new_fields_still_read() {
        let index: IndexInfo = serde_json::from_value(json!({
            "name": "i", "columns": ["id"], "unique": true, "primary": true, "method": "btree"
        }))
        .unwrap();
        assert!(index.keys.is_empty() && index.predicate.is_none());
        let fk: ConstraintInfo = serde_json::from_value(json!({
            "name": "fk", "kind": "foreign_key", "columns": ["p"]
        }))
        .unwrap();
        assert_eq!(fk.on_delete, None);
        let schema: SchemaInfo =
            serde_json::from_value(json!({"name": "s", "owner": null, "comment": null})).unwrap();
        assert!(schema.types.is_empty() && schema.sequences.is_empty());
    }

    #[test]
    fn change_kinds_are_stored_and_sent_as_their_names() {
        let kinds = [
            (ChangeKind::SchemaAdded, "schema_added"),
            (ChangeKind::SchemaRemoved, "schema_removed"),
            (ChangeKind::TableAdded, "table_added"),
            (ChangeKind::TableRemoved, "table_removed"),
            (ChangeKind::TableChanged, "table_changed"),
            (ChangeKind::ColumnAdded, "column_added"),
            (ChangeKind::ColumnRemoved, "column_removed"),
            (ChangeKind::ColumnChanged, "column_changed"),
            (ChangeKind::ConstraintAdded, "constraint_added"),
            (ChangeKind::ConstraintRemoved, "constraint_removed"),
            (ChangeKind::ConstraintChanged, "constraint_changed"),
            (ChangeKind::IndexAdded, "index_added"),
            (ChangeKind::IndexRemoved, "index_removed"),
            (ChangeKind::IndexChanged, "index_changed"),
            (ChangeKind::CommentChanged, "comment_changed"),
            (ChangeKind::TypeAdded, "type_added"),
            (ChangeKind::TypeRemoved, "type_removed"),
            (ChangeKind::TypeChanged, "type_changed"),
            (ChangeKind::SequenceAdded, "sequence_added"),
            (ChangeKind::SequenceRemoved, "sequence_removed"),
            (ChangeKind::SequenceChanged, "sequence_changed"),
            (ChangeKind::TableRenamed, "table_renamed"),
            (ChangeKind::ColumnRenamed, "column_renamed"),
            (ChangeKind::ScopeChanged, "scope_changed"),
        ];
        for (kind, name) in kinds {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
        }
    }

    #[test]
    fn constraint_kinds_are_sent_as_their_names_in_their_order() {
        let kinds = [
            (ConstraintKind::Check, "check"),
            (ConstraintKind::ForeignKey, "foreign_key"),
            (ConstraintKind::PrimaryKey, "primary_key"),
            (ConstraintKind::Unique, "unique"),
        ];
        for (kind, name) in kinds {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<ConstraintKind>(json!(name)).unwrap(),
                kind
            );
        }
        assert!(kinds.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }

    /// What `diff_table` found, as (kind, object) pairs.
    fn kinds_and_objects(a: &TableInfo, b: &TableInfo) -> Vec<(ChangeKind, Option<String>)> {
        diff_table(a, b)
            .into_iter()
            .map(|c| (c.kind, c.object_name))
            .collect()
    }

    #[test]
    fn columns_of_one_relation_are_matched_by_position() {
        let mut a = table(vec![column(1, "id", "int"), column(2, "v", "text")]);
        a.source_oid = Some(16384);
        let mut b = a.clone();
        b.columns = vec![column(1, "id", "int"), column(2, "w", "varchar(10)")];
        b.columns.push(column(4, "v", "text"));
        let kinds = kinds_and_objects(&a, &b);
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::ColumnRenamed, Some("w".into())),
                (ChangeKind::ColumnChanged, Some("w".into())),
                (ChangeKind::ColumnAdded, Some("v".into())),
            ]
        );
        // Another relation under the same name (dropped and re-created): by name, as before.
        b.source_oid = Some(16400);
        let kinds: Vec<ChangeKind> = diff_table(&a, &b).into_iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ChangeKind::ColumnAdded]);
        // The oid is not part of the definition.
        assert_eq!(
            a.fingerprint(),
            TableInfo {
                source_oid: None,
                ..a.clone()
            }
            .fingerprint()
        );
        assert!(
            serde_json::to_value(&a)
                .unwrap()
                .get("source_oid")
                .is_none()
        );
    }

    #[test]
    fn columns_are_matched_by_name() {
        let a = table(vec![
            column(1, "id", "int"),
            column(2, "x", "int"),
            column(3, "y", "int"),
        ]);
        let mut b = table(vec![
            column(1, "id", "bigint"),
            column(2, "y", "int"),
            column(3, "z", "text"),
        ]);
        b.comment = Some("new".into());
        let kinds = kinds_and_objects(&a, &b);
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::CommentChanged, None),
                (ChangeKind::ColumnChanged, Some("id".into())),
                (ChangeKind::ColumnAdded, Some("z".into())),
                (ChangeKind::ColumnRemoved, Some("x".into())),
            ]
        );
    }
}
