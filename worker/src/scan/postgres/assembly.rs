//! Assembly: the catalog statement's rows, as they stream in, become the engine-independent
//! [`DatabaseSnapshot`]. Columns, constraints and indexes join their table by relation oid,
//! one row at a time, so the raw result set never sits in memory beside the tables built from
//! it (at 20,000 tables the columns alone are 300,000 rows).

use std::collections::HashMap;

use metasync_shared::catalog::{
    ColumnInfo, ConstraintInfo, ConstraintKind, DatabaseSnapshot, ForeignKeyTarget, IndexInfo,
    SchemaInfo, TableInfo,
};
use metasync_shared::scan_options::Filters;
use serde_json::json;

use super::sql::{CatalogRow, ColumnRow, ConstraintRow, IndexRow, RelationRow, SchemaRow};

/// One database's catalog under construction. Relies on the statement's order: schemas and
/// relations arrive before the columns, constraints and indexes that attach to them.
pub(super) struct Assembly<'a> {
    filters: &'a Filters,
    schemas: Vec<SchemaInfo>,
    tables: Vec<TableInfo>,
    by_oid: HashMap<i64, usize>,
}

impl<'a> Assembly<'a> {
    pub(super) fn new(filters: &'a Filters) -> Self {
        Self {
            filters,
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
        if self.filters.schema_included(&row.name) {
            self.schemas.push(SchemaInfo {
                name: row.name,
                owner: row.owner,
                comment: row.comment,
            });
        }
    }

    fn add_relation(&mut self, row: RelationRow) {
        if !self.filters.table_included(&row.schema, &row.name) {
            return;
        }
        let details = match row.partition_of {
            Some(parent) => json!({ "partition_of": parent }),
            None => json!({}),
        };
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
        table.constraints.push(ConstraintInfo {
            name: row.name,
            kind: constraint_kind(&row.contype),
            columns: row.columns,
            references,
            definition: row.definition,
        });
    }

    fn add_index(&mut self, row: IndexRow) {
        let Some(table) = self.table(row.oid) else {
            return;
        };
        table.indexes.push(IndexInfo {
            name: row.name,
            // Expression keys have no column name; they are in `expression`.
            columns: row.columns.into_iter().flatten().collect(),
            expression: row.expression,
            unique: row.unique,
            primary: row.primary,
            method: row.method,
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

fn constraint_kind(contype: &str) -> ConstraintKind {
    match contype {
        "p" => ConstraintKind::PrimaryKey,
        "f" => ConstraintKind::ForeignKey,
        "u" => ConstraintKind::Unique,
        _ => ConstraintKind::Check,
    }
}
