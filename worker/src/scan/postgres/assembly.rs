//! Assembly: the catalog statement's rows, as they stream in, become the engine-independent
//! [`DatabaseSnapshot`]. Columns, constraints and indexes join their table by relation oid,
//! one row at a time, so the raw result set never sits in memory beside the tables built from
//! it (at 20,000 tables the columns alone are 300,000 rows).

use std::collections::HashMap;

use metasync_shared::catalog::{
    ColumnInfo, ColumnRef, ConstraintInfo, ConstraintKind, DatabaseSnapshot, ForeignKeyAction,
    ForeignKeyMatch, ForeignKeyTarget, IndexInfo, SchemaInfo, SequenceInfo, TableInfo, TypeInfo,
    TypeKind,
};
use metasync_shared::scan_options::ScanOptions;
use serde_json::json;

use super::sql::{
    CatalogRow, ColumnRow, ConstraintRow, IndexRow, RelationRow, SchemaRow, SequenceRow, TypeRow,
};

/// One database's catalog under construction. Relies on the statement's order: schemas and
/// relations arrive before the columns, constraints and indexes that attach to them.
pub(super) struct Assembly<'a> {
    options: &'a ScanOptions,
    schemas: Vec<SchemaInfo>,
    tables: Vec<TableInfo>,
    by_oid: HashMap<i64, usize>,
}

impl<'a> Assembly<'a> {
    pub(super) fn new(options: &'a ScanOptions) -> Self {
        Self {
            options,
            schemas: Vec::new(),
            tables: Vec::new(),
            by_oid: HashMap::new(),
        }
    }

    /// Takes one row; objects the options filter out, and those of filtered-out tables, are
    /// dropped here.
    pub(super) fn add(&mut self, row: CatalogRow) {
        match row {
            CatalogRow::Schema(row) => self.add_schema(row),
            CatalogRow::Relation(row) => self.add_relation(row),
            CatalogRow::Column(row) => self.add_column(row),
            CatalogRow::Constraint(row) => self.add_constraint(row),
            CatalogRow::Index(row) => self.add_index(row),
            CatalogRow::Type(row) => self.add_type(row),
            CatalogRow::Sequence(row) => self.add_sequence(row),
        }
    }

    pub(super) fn finish(mut self, database: &str) -> DatabaseSnapshot {
        // The snapshot lives on through the diff and the write; the growth slack need not.
        self.tables.shrink_to_fit();
        DatabaseSnapshot {
            name: database.to_owned(),
            schemas: self.schemas,
            tables: self.tables,
        }
    }

    fn add_schema(&mut self, row: SchemaRow) {
        if self.options.schema_included(&row.name) {
            self.schemas
                .push(SchemaInfo::new(row.name, row.owner, row.comment));
        }
    }

    fn add_relation(&mut self, row: RelationRow) {
        if !self.options.table_included(&row.schema, &row.name) {
            return;
        }
        let mut details = serde_json::Map::new();
        if let Some(parent) = row.partition_of {
            details.insert("partition_of".into(), json!(parent));
        }
        if let Some(bound) = row.partition_bound {
            details.insert("partition_bound".into(), json!(bound));
        }
        if let Some(key) = row.partition_key {
            details.insert("partition_key".into(), json!(key));
        }
        match row.persistence.as_str() {
            "u" => drop(details.insert("persistence".into(), json!("unlogged"))),
            "t" => drop(details.insert("persistence".into(), json!("temporary"))),
            _ => {}
        }
        if let Some(method) = row.access_method {
            details.insert("access_method".into(), json!(method));
        }
        if let Some(options) = row.reloptions.filter(|o| !o.is_empty()) {
            details.insert("reloptions".into(), json!(options));
        }
        let details = serde_json::Value::Object(details);
        self.by_oid.insert(row.oid, self.tables.len());
        self.tables.push(TableInfo {
            schema: row.schema,
            name: row.name,
            kind: relation_kind(&row.relkind).to_owned(),
            owner: row.owner,
            comment: row.comment,
            row_estimate: row.row_estimate,
            total_bytes: row.total_bytes,
            view_definition: row.view_definition,
            details,
            columns: Vec::new(),
            constraints: Vec::new(),
            indexes: Vec::new(),
        });
    }

    fn table(&mut self, oid: i64) -> Option<&mut TableInfo> {
        let i = *self.by_oid.get(&oid)?;
        Some(&mut self.tables[i])
    }

    fn add_column(&mut self, row: ColumnRow) {
        let Some(table) = self.table(row.oid) else {
            return;
        };
        let mut details = serde_json::Map::new();
        match row.identity.as_str() {
            "a" => drop(details.insert("identity".into(), json!("always"))),
            "d" => drop(details.insert("identity".into(), json!("by_default"))),
            _ => {}
        }
        // A stored generated column's expression is its `pg_attrdef` entry, not a default.
        let (default_value, generated) = if row.generated == "s" {
            (None, row.default)
        } else {
            (row.default, None)
        };
        if let Some(expr) = generated {
            details.insert("generated".into(), json!(expr));
        }
        if let Some(collation) = row.collation {
            details.insert("collation".into(), json!(collation));
        }
        table.columns.push(ColumnInfo {
            position: i32::from(row.position),
            name: row.name,
            data_type: row.data_type,
            nullable: row.nullable,
            default_value,
            comment: row.comment,
            details: serde_json::Value::Object(details),
        });
    }

    fn add_constraint(&mut self, row: ConstraintRow) {
        let Some(table) = self.table(row.oid) else {
            return;
        };
        let references = match (row.ref_schema, row.ref_table) {
            (Some(schema), Some(table)) if row.contype == "f" => Some(ForeignKeyTarget {
                schema,
                table,
                columns: row.ref_columns.unwrap_or_default(),
            }),
            _ => None,
        };
        let kind = constraint_kind(&row.contype);
        let mut constraint = ConstraintInfo::new(row.name, kind, row.columns);
        constraint.references = references;
        constraint.definition = row.definition;
        constraint.on_delete = row.on_delete.as_deref().and_then(fk_action);
        constraint.on_update = row.on_update.as_deref().and_then(fk_action);
        constraint.match_type = row.match_type.as_deref().and_then(fk_match);
        // A check is never deferrable; saying so on every check would only be noise.
        if kind != ConstraintKind::Check {
            constraint.deferrable = Some(row.deferrable);
            constraint.initially_deferred = Some(row.initially_deferred);
        }
        table.constraints.push(constraint);
    }

    fn add_index(&mut self, row: IndexRow) {
        let Some(table) = self.table(row.oid) else {
            return;
        };
        // Built by the statement itself (`json_agg`), so only a server bug could break it;
        // the index then goes without its key parts rather than failing the scan.
        let keys = serde_json::from_str(&row.keys).unwrap_or_else(|e| {
            tracing::warn!(index = %row.name, error = %e, "unreadable index key parts");
            Vec::new()
        });
        table.indexes.push(IndexInfo {
            name: row.name,
            // Expression keys have no column name; they are in `expression`.
            columns: row.columns.into_iter().flatten().collect(),
            expression: row.expression,
            unique: row.unique,
            primary: row.primary,
            method: row.method,
            keys,
            include: row.include,
            predicate: row.predicate,
            definition: Some(row.definition),
        });
    }
}

impl Assembly<'_> {
    /// The schema rows came first (the statement's order), and filtered-out ones are absent.
    fn schema(&mut self, name: &str) -> Option<&mut SchemaInfo> {
        self.schemas.iter_mut().find(|s| s.name == name)
    }

    fn add_type(&mut self, row: TypeRow) {
        let Some(schema) = self.schema(&row.schema) else {
            return;
        };
        let domain = row.typtype == "d";
        // Built by the statement (`json_agg`) in `ConstraintInfo`'s shape; see `add_index`.
        let checks = serde_json::from_str(&row.checks).unwrap_or_else(|e| {
            tracing::warn!(domain = %row.name, error = %e, "unreadable domain checks");
            Vec::new()
        });
        schema.types.push(TypeInfo {
            name: row.name,
            kind: if domain {
                TypeKind::Domain
            } else {
                TypeKind::Enum
            },
            values: row.values,
            base_type: row.base_type,
            nullable: domain.then_some(row.nullable),
            default_value: row.default,
            checks,
            comment: row.comment,
        });
    }

    fn add_sequence(&mut self, row: SequenceRow) {
        let Some(schema) = self.schema(&row.schema) else {
            return;
        };
        let owned_by = match (row.owner_schema, row.owner_table, row.owner_column) {
            (Some(schema), Some(table), Some(column)) => Some(ColumnRef {
                schema,
                table,
                column,
            }),
            _ => None,
        };
        schema.sequences.push(SequenceInfo {
            name: row.name,
            data_type: row.data_type,
            start: row.start,
            increment: row.increment,
            min: row.min.parse().unwrap_or(i64::MIN),
            max: row.max.parse().unwrap_or(i64::MAX),
            cycle: row.cycle,
            owned_by,
            identity: row.identity,
        });
    }
}

fn relation_kind(relkind: &str) -> &'static str {
    match relkind {
        "v" => "view",
        "m" => "materialized_view",
        "p" => "partitioned_table",
        "f" => "foreign_table",
        _ => "table",
    }
}

/// `pg_constraint.confdeltype` / `confupdtype`.
fn fk_action(code: &str) -> Option<ForeignKeyAction> {
    Some(match code {
        "a" => ForeignKeyAction::NoAction,
        "r" => ForeignKeyAction::Restrict,
        "c" => ForeignKeyAction::Cascade,
        "n" => ForeignKeyAction::SetNull,
        "d" => ForeignKeyAction::SetDefault,
        _ => return None,
    })
}

/// `pg_constraint.confmatchtype`.
fn fk_match(code: &str) -> Option<ForeignKeyMatch> {
    Some(match code {
        "s" => ForeignKeyMatch::Simple,
        "f" => ForeignKeyMatch::Full,
        "p" => ForeignKeyMatch::Partial,
        _ => return None,
    })
}

fn constraint_kind(contype: &str) -> ConstraintKind {
    match contype {
        "p" => ConstraintKind::PrimaryKey,
        "f" => ConstraintKind::ForeignKey,
        "u" => ConstraintKind::Unique,
        _ => ConstraintKind::Check,
    }
}
