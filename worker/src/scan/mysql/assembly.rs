//! Assembly: the catalog statements' rows become the engine-independent [`DatabaseSnapshot`].
//! Columns, keys and indexes join their table by schema and table name; keys and indexes arrive
//! one row per key column and are gathered back into one entry each.

use std::collections::{HashMap, HashSet};

use metasync_shared::catalog::{
    ColumnInfo, ConstraintInfo, ConstraintKind, DatabaseSnapshot, ForeignKeyAction,
    ForeignKeyMatch, ForeignKeyTarget, IndexInfo, IndexKey, SchemaInfo, SequenceInfo, SortOrder,
    TableInfo,
};
use metasync_shared::scan_options::Filters;
use serde_json::json;

use super::sql::{
    ColumnRow, ConstraintRow, IndexColumnRow, KeyColumnRow, PartitionRow, SchemaRow, SequenceRow,
    TableRow,
};

/// What the catalog statements returned, one vector per object family, except the columns and
/// the key and index columns: those, by far the most rows (15, 1.6 and 3 per table in the
/// benchmark's schema), are assembled as they stream ([`Assembly::add_column`],
/// [`Assembly::add_key_column`], [`Assembly::add_index_column`]) instead of being held first.
#[derive(Default)]
pub(super) struct Rows {
    pub schemas: Vec<SchemaRow>,
    pub tables: Vec<TableRow>,
    pub partitions: Vec<PartitionRow>,
    /// The sequences' `(schema, name)`s, and their settings by index in that list.
    pub sequences: (Vec<(String, String)>, Vec<SequenceRow>),
    pub constraints: Vec<ConstraintRow>,
}

/// One database's tables being assembled: made from the rows read before the columns (the
/// tables, and what a column's assembly needs to know: the server, the JSON checks), then fed
/// the columns one by one, then finished with the keys, constraints and indexes.
pub(super) struct Assembly {
    mariadb: bool,
    /// MariaDB's JSON is a LONGTEXT with a column-level `json_valid` check named after the
    /// column: such a column is reported as `json` (schema, table, column).
    json_columns: HashSet<(String, String, String)>,
    tables: Vec<TableInfo>,
    by_name: HashMap<(String, String), usize>,
}

impl Assembly {
    /// The tables and views of `rows` that `filters` keep, without columns yet.
    pub(super) fn new(filters: &Filters, rows: &mut Rows) -> Self {
        let mariadb = rows
            .schemas
            .first()
            .is_some_and(|row| row.server_version.contains("MariaDB"));
        let json_columns = rows
            .constraints
            .iter()
            .filter(|row| is_json_check(row))
            .map(|row| {
                (
                    row.constraint_schema.clone(),
                    row.table_name.clone(),
                    row.constraint_name.clone(),
                )
            })
            .collect();
        let table_rows = std::mem::take(&mut rows.tables);
        let mut tables: Vec<TableInfo> = Vec::with_capacity(table_rows.len());
        let mut by_name: HashMap<(String, String), usize> =
            HashMap::with_capacity(table_rows.len());
        for row in table_rows {
            // A sequence is listed under its schema (see `finish`), not as a table.
            if !filters.table_included(&row.table_schema, &row.table_name)
                || row.table_type == "SEQUENCE"
            {
                continue;
            }
            let is_view = row.table_type.eq_ignore_ascii_case("VIEW");
            let mut details = serde_json::Map::new();
            if let Some(engine) = row.engine {
                details.insert("engine".into(), json!(engine));
            }
            if let Some(collation) = row.table_collation {
                details.insert("collation".into(), json!(collation));
            }
            if let Some(created) = row.create_time {
                details.insert("created_at".into(), json!(created));
            }
            if let Some(updated) = row.update_time {
                details.insert("updated_at".into(), json!(updated));
            }
            by_name.insert(
                (row.table_schema.clone(), row.table_name.clone()),
                tables.len(),
            );
            tables.push(TableInfo {
                schema: row.table_schema,
                name: row.table_name,
                kind: if is_view { "view" } else { "table" }.to_owned(),
                owner: None,
                // MySQL reports "VIEW" as the comment of every view.
                comment: row
                    .table_comment
                    .filter(|c| !(c.is_empty() || is_view && c == "VIEW")),
                row_estimate: if is_view { None } else { row.table_rows },
                estimated_bytes: if is_view { None } else { row.estimated_bytes },
                view_definition: row.view_definition,
                details: serde_json::Value::Object(details),
                columns: Vec::new(),
                constraints: Vec::new(),
                indexes: Vec::new(),
                // No stable id on MySQL/MariaDB: a rename is a drop and an add.
                source_oid: None,
            });
        }
        add_partitions(&mut tables, &by_name, std::mem::take(&mut rows.partitions));
        Self {
            mariadb,
            json_columns,
            tables,
            by_name,
        }
    }

    /// Adds a column to its table (none when the table is filtered out).
    pub(super) fn add_column(&mut self, row: ColumnRow) {
        let Some(&i) = self.by_name.get(&(row.table_schema, row.table_name)) else {
            return;
        };
        let mut details = serde_json::Map::new();
        if !row.extra.is_empty() {
            details.insert("extra".into(), json!(row.extra));
        }
        if let Some(charset) = row.character_set_name {
            details.insert("charset".into(), json!(charset));
        }
        if let Some(collation) = row.collation_name {
            details.insert("collation".into(), json!(collation));
        }
        let generated = row.generation_expression.is_some();
        if let Some(expr) = row.generation_expression {
            details.insert("generated".into(), json!(expr));
        }
        let table = &mut self.tables[i];
        let is_json = row.column_type.eq_ignore_ascii_case("longtext")
            && self.json_columns.contains(&(
                table.schema.clone(),
                table.name.clone(),
                row.column_name.clone(),
            ));
        // MariaDB prints a string default quoted and no default as the bare word NULL; a
        // view's column repeats its base column's default, which the view does not have.
        let default_value = row
            .column_default
            .filter(|d| !(self.mariadb && d == "NULL") && table.kind != "view" && !generated);
        table.columns.push(ColumnInfo {
            position: row.ordinal_position as i32,
            name: row.column_name,
            data_type: if is_json {
                "json".to_owned()
            } else {
                row.column_type
            },
            nullable: row.is_nullable.eq_ignore_ascii_case("YES"),
            default_value,
            comment: Some(row.column_comment).filter(|c| !c.is_empty()),
            details: serde_json::Value::Object(details),
        });
    }

    /// Adds one column of a primary, unique or foreign key to its constraint (made on its first column).
    pub(super) fn add_key_column(&mut self, row: KeyColumnRow) {
        let Some(&i) = self.by_name.get(&(row.table_schema, row.table_name)) else {
            return;
        };
        let kind = match row.constraint_type.as_str() {
            "PRIMARY KEY" => ConstraintKind::PrimaryKey,
            "FOREIGN KEY" => ConstraintKind::ForeignKey,
            _ => ConstraintKind::Unique,
        };
        let name = row.constraint_name;
        let table_constraints = &mut self.tables[i].constraints;
        let existing = table_constraints
            .iter()
            .position(|c| c.name == name && c.kind == kind);
        let index = match existing {
            Some(index) => index,
            None => {
                table_constraints.push(ConstraintInfo::new(name, kind, Vec::new()));
                table_constraints.len() - 1
            }
        };
        let constraint = &mut table_constraints[index];
        if let Some(column) = row.column_name {
            constraint.columns.push(column);
        }
        if let (Some(schema), Some(table)) =
            (row.referenced_table_schema, row.referenced_table_name)
        {
            let target = constraint.references.get_or_insert(ForeignKeyTarget {
                schema,
                table,
                columns: Vec::new(),
            });
            target.columns.extend(row.referenced_column_name);
        }
    }

    /// Adds one key of an index to its index (made on its first key).
    pub(super) fn add_index_column(&mut self, row: IndexColumnRow) {
        let Some(&i) = self.by_name.get(&(row.table_schema, row.table_name)) else {
            return;
        };
        let name = row.index_name;
        let indexes = &mut self.tables[i].indexes;
        let index = match indexes.iter().position(|x| x.name == name) {
            Some(index) => index,
            None => {
                indexes.push(IndexInfo {
                    primary: name == "PRIMARY",
                    name,
                    columns: Vec::new(),
                    expression: row.expression.clone(),
                    unique: row.non_unique == 0,
                    method: row.index_type.to_lowercase(),
                    keys: Vec::new(),
                    include: Vec::new(),
                    predicate: None,
                    definition: None,
                });
                indexes.len() - 1
            }
        };
        let index = &mut indexes[index];
        index.columns.extend(row.column_name.clone());
        index.keys.push(IndexKey {
            column: row.column_name,
            expression: row.expression,
            order: match row.collation.as_deref() {
                Some("A") => Some(SortOrder::Asc),
                Some("D") => Some(SortOrder::Desc),
                _ => None,
            },
            nulls: None,
            opclass: None,
            collation: None,
            prefix_length: row.sub_part,
        });
    }

    /// The views that got no column (`schema.name`): the server could not resolve them.
    pub(super) fn views_without_columns(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| t.kind == "view" && t.columns.is_empty())
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect()
    }

    /// The snapshot: keys, constraints and indexes joined to their tables, and the schemas.
    pub(super) fn finish(self, database: &str, filters: &Filters, rows: Rows) -> DatabaseSnapshot {
        let Rows {
            schemas,
            sequences,
            constraints,
            ..
        } = rows;
        let Self {
            tables: mut out,
            by_name,
            ..
        } = self;
        for row in constraints {
            let json_check = is_json_check(&row);
            let Some(&i) = by_name.get(&(row.constraint_schema, row.table_name)) else {
                continue;
            };
            let table = &mut out[i];
            if row.kind == "FOREIGN KEY" {
                let fk = table.constraints.iter_mut().find(|c| {
                    c.kind == ConstraintKind::ForeignKey && c.name == row.constraint_name
                });
                if let Some(fk) = fk {
                    fk.on_delete = row.delete_rule.as_deref().and_then(fk_action);
                    fk.on_update = row.update_rule.as_deref().and_then(fk_action);
                    fk.match_type = row.match_option.as_deref().and_then(fk_match);
                    fk.deferrable = Some(false);
                    fk.initially_deferred = Some(false);
                }
                continue;
            }
            let implements_json = json_check
                && table
                    .columns
                    .iter()
                    .any(|c| c.name == row.constraint_name && c.data_type == "json");
            if implements_json {
                continue;
            }
            let clause = row.check_clause.unwrap_or_default();
            // A check written on a column is named after it; a table's names its columns inside.
            let columns = if row.check_level.as_deref() == Some("Column") {
                vec![row.constraint_name.clone()]
            } else {
                quoted_names(&clause)
                    .into_iter()
                    .filter(|name| table.columns.iter().any(|c| &c.name == name))
                    .collect()
            };
            let mut check =
                ConstraintInfo::new(row.constraint_name, ConstraintKind::Check, columns);
            check.definition = Some(clause);
            table.constraints.push(check);
        }
        // One order whatever the statement each kind came from, so fingerprints are stable.
        for table in &mut out {
            table
                .constraints
                .sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
        }
        for index in out.iter_mut().flat_map(|t| t.indexes.iter_mut()) {
            index.definition = Some(index_definition(index));
        }
        let mut schemas: Vec<SchemaInfo> = schemas
            .into_iter()
            .filter(|row| filters.schema_included(&row.schema_name))
            .map(|row| SchemaInfo::new(row.schema_name, None, row.schema_comment))
            .collect();
        let (names, settings) = sequences;
        for row in settings {
            let Some((schema, name)) = usize::try_from(row.n).ok().and_then(|n| names.get(n))
            else {
                continue;
            };
            if let Some(schema) = schemas.iter_mut().find(|s| &s.name == schema) {
                schema.sequences.push(SequenceInfo {
                    name: name.clone(),
                    data_type: "bigint".to_owned(),
                    start: row.start,
                    increment: row.step,
                    min: row.min_value,
                    max: row.max_value,
                    cycle: row.cycle != 0,
                    owned_by: None,
                    identity: false,
                });
            }
        }
        DatabaseSnapshot {
            name: database.to_owned(),
            schemas,
            tables: out,
        }
    }
}

/// Partitioning in the partitioned table's `details`, in the shape PostgreSQL's has where it
/// can: `partition_key` (e.g. ``RANGE (year(`at`))``), `subpartition_key`, and `partitions`
/// in order, each `{"name", "bound"?, "subpartitions"?}` (MariaDB's partitions are not tables).
fn add_partitions(
    out: &mut [TableInfo],
    by_name: &HashMap<(String, String), usize>,
    rows: Vec<PartitionRow>,
) {
    for row in rows {
        let Some(&i) = by_name.get(&(row.table_schema, row.table_name)) else {
            continue;
        };
        let serde_json::Value::Object(details) = &mut out[i].details else {
            continue;
        };
        let key = |method: &str, expression: Option<&str>| {
            format!("{method} ({})", expression.unwrap_or_default())
        };
        details.entry("partition_key").or_insert_with(|| {
            json!(key(
                &row.partition_method,
                row.partition_expression.as_deref()
            ))
        });
        if let Some(method) = &row.subpartition_method {
            details
                .entry("subpartition_key")
                .or_insert_with(|| json!(key(method, row.subpartition_expression.as_deref())));
        }
        let partitions = details
            .entry("partitions")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("partitions is an array");
        let same = partitions
            .last()
            .is_some_and(|p| p["name"] == row.partition_name.as_str());
        if !same {
            let mut partition = serde_json::Map::new();
            partition.insert("name".into(), json!(row.partition_name));
            let bound = match (row.partition_method.as_str(), &row.partition_description) {
                (_, None) => None,
                (m, Some(d)) if m.starts_with("RANGE") && d == "MAXVALUE" => {
                    Some("VALUES LESS THAN MAXVALUE".to_owned())
                }
                (m, Some(d)) if m.starts_with("RANGE") => Some(format!("VALUES LESS THAN ({d})")),
                (_, Some(d)) => Some(format!("VALUES IN ({d})")),
            };
            if let Some(bound) = bound {
                partition.insert("bound".into(), json!(bound));
            }
            partitions.push(serde_json::Value::Object(partition));
        }
        if let Some(sub) = row.subpartition_name {
            let last = partitions.last_mut().expect("pushed above");
            last.as_object_mut()
                .expect("a partition is an object")
                .entry("subpartitions")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("subpartitions is an array")
                .push(json!(sub));
        }
    }
}

/// A column-level `json_valid(`col`)` check: how MariaDB implements a JSON column.
fn is_json_check(row: &ConstraintRow) -> bool {
    row.kind == "CHECK"
        && row.check_level.as_deref() == Some("Column")
        && row.check_clause.as_deref()
            == Some(&format!("json_valid({})", quote(&row.constraint_name)))
}

/// `name` as a MySQL identifier in backticks.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The backquoted identifiers in an expression, each once, in order of appearance. String
/// literals are skipped, so a quoted backtick inside one is not taken for a name.
fn quoted_names(expression: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut chars = expression.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '`' => {
                let mut name = String::new();
                while let Some(d) = chars.next() {
                    if d == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            name.push('`');
                        } else {
                            break;
                        }
                    } else {
                        name.push(d);
                    }
                }
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            _ => {}
        }
    }
    out
}

/// The index's clause as `SHOW CREATE TABLE` prints it, e.g. ``KEY `ab` (`a`(10),`b` DESC)``.
fn index_definition(index: &IndexInfo) -> String {
    let parts: Vec<String> = index
        .keys
        .iter()
        .map(|key| {
            let mut part = match (&key.column, &key.expression) {
                (Some(column), _) => quote(column),
                (None, Some(expression)) => format!("({expression})"),
                (None, None) => String::new(),
            };
            if let Some(length) = key.prefix_length {
                part.push_str(&format!("({length})"));
            }
            if key.order == Some(SortOrder::Desc) {
                part.push_str(" DESC");
            }
            part
        })
        .collect();
    let head = if index.primary {
        "PRIMARY KEY".to_owned()
    } else {
        let kind = match index.method.as_str() {
            "fulltext" => "FULLTEXT KEY",
            "spatial" => "SPATIAL KEY",
            _ if index.unique => "UNIQUE KEY",
            _ => "KEY",
        };
        format!("{kind} {}", quote(&index.name))
    };
    let using = if index.method == "hash" {
        " USING HASH"
    } else {
        ""
    };
    format!("{head} ({}){using}", parts.join(","))
}

/// `DELETE_RULE` / `UPDATE_RULE`.
fn fk_action(rule: &str) -> Option<ForeignKeyAction> {
    Some(match rule {
        "NO ACTION" => ForeignKeyAction::NoAction,
        "RESTRICT" => ForeignKeyAction::Restrict,
        "CASCADE" => ForeignKeyAction::Cascade,
        "SET NULL" => ForeignKeyAction::SetNull,
        "SET DEFAULT" => ForeignKeyAction::SetDefault,
        _ => return None,
    })
}

/// `MATCH_OPTION`: `NONE` is SQL's `MATCH SIMPLE`.
fn fk_match(option: &str) -> Option<ForeignKeyMatch> {
    Some(match option {
        "NONE" | "SIMPLE" => ForeignKeyMatch::Simple,
        "FULL" => ForeignKeyMatch::Full,
        "PARTIAL" => ForeignKeyMatch::Partial,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_columns_are_the_quoted_names_outside_strings() {
        assert_eq!(
            quoted_names("`c` > 0 and `a` <> 'x`y' and `we``ird` = `c`"),
            ["c", "a", "we`ird"]
        );
        assert_eq!(quoted_names("'it''s `not`' = `b`"), ["b"]);
    }
}
