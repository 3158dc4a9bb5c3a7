//! Assembly: the catalog statement's rows, as they stream in, become the engine-independent
//! [`DatabaseSnapshot`]. Columns, constraints and indexes join their table by relation oid,
//! one row at a time, so the raw result set never sits in memory beside the tables built from
//! it (at 20,000 tables the columns alone are 300,000 rows).

use std::collections::HashMap;

use metasync_shared::catalog::{
    ColumnInfo, ColumnRef, ConstraintInfo, ConstraintKind, DatabaseSnapshot, ForeignKeyAction,
    ForeignKeyMatch, ForeignKeyTarget, IndexInfo, IndexKey, NullsOrder, SchemaInfo, SequenceInfo,
    SortOrder, TableInfo, TypeInfo, TypeKind,
};
use metasync_shared::scan_options::Filters;
use serde_json::json;

use super::sql::{
    CatalogRow, ColumnRow, ConstraintRow, IndexRow, RelationRow, SchemaRow, SequenceRow, TypeRow,
};

/// One database's catalog under construction. Relies on the statement's order: schemas and
/// relations arrive before the columns, constraints and indexes that attach to them.
pub(super) struct Assembly<'a> {
    filters: &'a Filters,
    schemas: Vec<SchemaInfo>,
    tables: Vec<TableInfo>,
    by_oid: HashMap<i64, usize>,
    /// The names of the non-default operator classes, by oid.
    opclasses: HashMap<i64, String>,
}

impl<'a> Assembly<'a> {
    pub(super) fn new(filters: &'a Filters) -> Self {
        Self {
            filters,
            schemas: Vec::new(),
            tables: Vec::new(),
            by_oid: HashMap::new(),
            opclasses: HashMap::new(),
        }
    }

    /// Takes one row; objects the options filter out, and those of filtered-out tables, are
    /// dropped here.
    pub(super) fn add(&mut self, row: CatalogRow) {
        match row {
            CatalogRow::Opclass(row) => drop(self.opclasses.insert(row.oid, row.name)),
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
        if self.filters.schema_included(&row.name) {
            self.schemas
                .push(SchemaInfo::new(row.name, row.owner, row.comment));
        }
    }

    fn add_relation(&mut self, row: RelationRow) {
        if !self.filters.table_included(&row.schema, &row.name) {
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
            estimated_bytes: row.estimated_bytes,
            view_definition: row.view_definition,
            details,
            columns: Vec::new(),
            constraints: Vec::new(),
            indexes: Vec::new(),
            source_oid: Some(row.oid),
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
        let Some(i) = self.by_oid.get(&row.oid).copied() else {
            return;
        };
        // Built by the statement itself (`json_agg`), so only a server bug could break it;
        // the index then goes without its parts rather than failing the scan.
        let parts: Vec<serde_json::Value> = serde_json::from_str(&row.parts).unwrap_or_else(|e| {
            tracing::warn!(index = %row.name, error = %e, "unreadable index parts");
            Vec::new()
        });
        let key_parts = usize::try_from(row.key_parts).unwrap_or(0);
        let (mut keys, mut key_sql, mut include, mut include_sql) =
            (vec![], vec![], vec![], vec![]);
        for (n, part) in parts.into_iter().enumerate() {
            let quoted = part["quoted"].as_str().map(str::to_owned);
            let Ok(mut key) = serde_json::from_value::<IndexKey>(part) else {
                continue;
            };
            if n >= key_parts {
                include.extend(key.column);
                include_sql.extend(quoted);
                continue;
            }
            key.opclass = key
                .opclass
                .and_then(|oid| oid.parse::<i64>().ok())
                .and_then(|oid| self.opclasses.get(&oid).cloned());
            key_sql.push(part_sql(&key, quoted));
            keys.push(key);
        }
        let mut definition = format!("{} ({})", row.head, key_sql.join(", "));
        if !include_sql.is_empty() {
            definition.push_str(&format!(" INCLUDE ({})", include_sql.join(", ")));
        }
        if let Some(predicate) = &row.predicate {
            definition.push_str(&format!(" WHERE {predicate}"));
        }
        self.tables[i].indexes.push(IndexInfo {
            name: row.name,
            // Expression keys have no column name; they are in `expression`.
            columns: keys.iter().filter_map(|k| k.column.clone()).collect(),
            expression: row.expression,
            unique: row.unique,
            primary: row.primary,
            method: row.method,
            keys,
            include,
            predicate: row.predicate,
            definition: Some(definition),
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

/// One key part as `pg_get_indexdef` prints it: the column (as quoted by the statement) or
/// expression, then collation, operator class, and order where not the default.
fn part_sql(key: &IndexKey, quoted: Option<String>) -> String {
    let mut out = quoted
        .or_else(|| key.expression.clone())
        .unwrap_or_default();
    if let Some(collation) = &key.collation {
        out.push_str(&format!(" COLLATE {}", quote_ident(collation)));
    }
    if let Some(opclass) = &key.opclass {
        out.push_str(&format!(" {}", quote_ident(opclass)));
    }
    match (key.order, key.nulls) {
        (Some(SortOrder::Desc), Some(NullsOrder::Last)) => out.push_str(" DESC NULLS LAST"),
        (Some(SortOrder::Desc), _) => out.push_str(" DESC"),
        (_, Some(NullsOrder::First)) => out.push_str(" NULLS FIRST"),
        _ => {}
    }
    out
}

/// An identifier as PostgreSQL quotes it, keywords aside (for collation and operator class
/// names, which are seldom keywords; columns come quoted by the server's `quote_ident`).
fn quote_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
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
