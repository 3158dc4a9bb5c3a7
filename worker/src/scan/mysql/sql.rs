//! The catalog statements, one per object family for the whole server (MySQL's schemas are its
//! databases), each restricted to the selected databases, and the rows each returns. Every
//! value is cast to a plain type (`char`, `signed`) so MySQL and MariaDB decode alike.

/// Databases that are the server's own, never a user's.
const SYSTEM_SCHEMAS: &str = "('mysql', 'information_schema', 'performance_schema', 'sys')";

/// Which MySQL databases (its schemas) a scan reads, as a condition on `column` with the
/// names to bind: the resource's database by default, every non-system one for `"all"`.
fn schema_condition(column: &str, names: Option<&[String]>) -> String {
    match names {
        Some(names) => {
            let marks = vec!["?"; names.len()].join(", ");
            format!("{column} in ({marks})")
        }
        None => format!("{column} not in {SYSTEM_SCHEMAS}"),
    }
}

/// A database (`information_schema.schemata`).
#[derive(sqlx::FromRow)]
pub(super) struct SchemaRow {
    pub schema_name: String,
    /// Not read: always null.
    pub schema_comment: Option<String>,
    /// `version()`, the same on every row: MariaDB and MySQL print some columns differently
    /// (MariaDB quotes a string default, and says `NULL` for none).
    pub server_version: String,
}

pub(super) fn schemas(names: Option<&[String]>) -> String {
    format!(
        "select cast(schema_name as char) as schema_name, cast(null as char) as schema_comment,
                cast(version() as char) as server_version
             from information_schema.schemata where {} order by 1",
        schema_condition("schema_name", names)
    )
}

/// A table or view (`information_schema.tables`, with the view's definition).
#[derive(sqlx::FromRow)]
pub(super) struct TableRow {
    pub table_schema: String,
    pub table_name: String,
    /// `BASE TABLE`, `VIEW`, `SYSTEM VIEW`, ….
    pub table_type: String,
    pub engine: Option<String>,
    pub table_rows: Option<i64>,
    /// Data and index length together.
    pub estimated_bytes: Option<i64>,
    pub table_comment: Option<String>,
    pub view_definition: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
    /// The table's default collation; null for a view.
    pub table_collation: Option<String>,
    /// `CREATE_OPTIONS`: says `partitioned` for a partitioned table.
    pub create_options: Option<String>,
}

pub(super) fn tables(names: Option<&[String]>) -> String {
    format!(
        "select cast(t.table_schema as char) as table_schema,
                        cast(t.table_name as char) as table_name,
                        cast(t.table_type as char) as table_type, cast(t.engine as char) as engine,
                        cast(t.table_rows as signed) as table_rows,
                        cast(t.data_length + t.index_length as signed) as estimated_bytes,
                        cast(t.table_comment as char) as table_comment,
                        cast(v.view_definition as char) as view_definition,
                        cast(t.create_time as char) as create_time,
                        cast(t.update_time as char) as update_time,
                        cast(t.table_collation as char) as table_collation,
                        cast(t.create_options as char) as create_options
                 from information_schema.tables t
                      left join information_schema.views v
                             on v.table_schema = t.table_schema
                            and v.table_name = t.table_name
                 where {} order by 1, 2",
        schema_condition("t.table_schema", names)
    )
}

/// A partition or subpartition (`information_schema.partitions`), in order.
#[derive(sqlx::FromRow)]
pub(super) struct PartitionRow {
    pub table_schema: String,
    pub table_name: String,
    pub partition_name: String,
    pub subpartition_name: Option<String>,
    /// `RANGE`, `LIST`, `RANGE COLUMNS`, `LIST COLUMNS`, `HASH`, `LINEAR HASH`, `KEY`, ….
    pub partition_method: String,
    pub subpartition_method: Option<String>,
    pub partition_expression: Option<String>,
    pub subpartition_expression: Option<String>,
    /// A range's upper bound (`MAXVALUE` too) or a list's values; null for hash and key.
    pub partition_description: Option<String>,
}

/// The partitions of the selected databases' tables: run only when the tables statement saw a
/// partitioned table, since it opens every table of those databases, as that one does.
pub(super) fn partitions(names: Option<&[String]>) -> String {
    format!(
        "select cast(table_schema as char) as table_schema,
                        cast(table_name as char) as table_name,
                        cast(partition_name as char) as partition_name,
                        cast(subpartition_name as char) as subpartition_name,
                        cast(partition_method as char) as partition_method,
                        cast(subpartition_method as char) as subpartition_method,
                        cast(partition_expression as char) as partition_expression,
                        cast(subpartition_expression as char) as subpartition_expression,
                        cast(partition_description as char) as partition_description
                 from information_schema.partitions
                 where {} and partition_name is not null
                 order by 1, 2, partition_ordinal_position, subpartition_ordinal_position",
        schema_condition("table_schema", names)
    )
}

/// A MariaDB sequence's settings, read from the sequence itself; `n` is its index in the list
/// the statement was built from.
#[derive(sqlx::FromRow)]
pub(super) struct SequenceRow {
    pub n: i64,
    pub start: i64,
    pub min_value: i64,
    pub max_value: i64,
    pub step: i64,
    pub cycle: i64,
}

/// One statement for every sequence, `(schema, name)` in order: MariaDB 10.11 has no
/// `information_schema.sequences`, and a sequence reads as a one-row table. Identifiers are
/// quoted, nothing else comes from the source. `None` when there is none.
pub(super) fn sequences(sequences: &[(&str, &str)]) -> Option<String> {
    let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
    let branches: Vec<String> = sequences
        .iter()
        .enumerate()
        .map(|(n, (schema, name))| {
            format!(
                "select {n} as n, cast(start_value as signed) as start,
                        cast(minimum_value as signed) as min_value,
                        cast(maximum_value as signed) as max_value,
                        cast(increment as signed) as step, cast(cycle_option as signed) as cycle
                 from {}.{}",
                quote(schema),
                quote(name)
            )
        })
        .collect();
    (!branches.is_empty()).then(|| branches.join("\nunion all\n"))
}

/// A column (`information_schema.columns`).
#[derive(sqlx::FromRow)]
pub(super) struct ColumnRow {
    pub table_schema: String,
    pub table_name: String,
    pub ordinal_position: i64,
    pub column_name: String,
    pub column_type: String,
    /// `YES` or `NO`.
    pub is_nullable: String,
    pub column_default: Option<String>,
    /// `auto_increment`, `on update …`, `VIRTUAL GENERATED`, … or empty.
    pub extra: String,
    /// Empty when there is none.
    pub column_comment: String,
    /// A generated column's expression.
    pub generation_expression: Option<String>,
    /// A text column's character set and collation.
    pub character_set_name: Option<String>,
    pub collation_name: Option<String>,
}

pub(super) fn columns(names: Option<&[String]>) -> String {
    format!(
        "select cast(table_schema as char) as table_schema,
                        cast(table_name as char) as table_name,
                        cast(ordinal_position as signed) as ordinal_position,
                        cast(column_name as char) as column_name,
                        cast(column_type as char) as column_type,
                        cast(is_nullable as char) as is_nullable,
                        cast(column_default as char) as column_default,
                        cast(extra as char) as extra,
                        cast(column_comment as char) as column_comment,
                        cast(case when is_generated = 'ALWAYS' then generation_expression end
                             as char) as generation_expression,
                        cast(character_set_name as char) as character_set_name,
                        cast(collation_name as char) as collation_name
                 from information_schema.columns
                 where {} order by 1, 2, 3",
        schema_condition("table_schema", names)
    )
}

/// One column of a primary, unique or foreign key (`information_schema.key_column_usage`), in
/// key order; a key of n columns is n rows.
#[derive(sqlx::FromRow)]
pub(super) struct KeyColumnRow {
    pub table_schema: String,
    pub table_name: String,
    pub constraint_name: String,
    /// `PRIMARY KEY`, `FOREIGN KEY` or `UNIQUE`.
    pub constraint_type: String,
    pub column_name: Option<String>,
    pub referenced_table_schema: Option<String>,
    pub referenced_table_name: Option<String>,
    pub referenced_column_name: Option<String>,
}

/// Key columns of primary, unique and foreign keys. KEY_COLUMN_USAGE alone: joining it to
/// TABLE_CONSTRAINTS makes MariaDB re-open every table per row (0.03 s alone, 1 s joined at
/// 2,000 tables), and the kind follows from the row (check constraints come from
/// [`checks`]).
pub(super) fn key_columns(names: Option<&[String]>) -> String {
    format!(
        "select cast(table_schema as char) as table_schema,
                        cast(table_name as char) as table_name,
                        cast(constraint_name as char) as constraint_name,
                        case when constraint_name = 'PRIMARY' then 'PRIMARY KEY'
                             when referenced_table_name is not null then 'FOREIGN KEY'
                             else 'UNIQUE' end as constraint_type,
                        cast(column_name as char) as column_name,
                        cast(referenced_table_schema as char) as referenced_table_schema,
                        cast(referenced_table_name as char) as referenced_table_name,
                        cast(referenced_column_name as char) as referenced_column_name
                 from information_schema.key_column_usage
                 where {}
                 order by 1, 2, 3, ordinal_position",
        schema_condition("table_schema", names)
    )
}

/// A check constraint (`information_schema.check_constraints`) or a foreign key's rules
/// (`information_schema.referential_constraints`): one statement for both, so that the rules
/// cost no statement of their own. `kind` tells them apart.
#[derive(sqlx::FromRow)]
pub(super) struct ConstraintRow {
    /// `CHECK` or `FOREIGN KEY`.
    pub kind: String,
    pub constraint_schema: String,
    pub table_name: String,
    pub constraint_name: String,
    /// A check's clause.
    pub check_clause: Option<String>,
    /// A check's `LEVEL`: `Column` for one written on a column (named after it), `Table`.
    pub check_level: Option<String>,
    /// A foreign key's `DELETE_RULE`, `UPDATE_RULE` and `MATCH_OPTION`.
    pub delete_rule: Option<String>,
    pub update_rule: Option<String>,
    pub match_option: Option<String>,
}

pub(super) fn constraints(names: Option<&[String]>) -> String {
    format!(
        "select 'CHECK' as kind, cast(constraint_schema as char) as constraint_schema,
                        cast(table_name as char) as table_name,
                        cast(constraint_name as char) as constraint_name,
                        cast(check_clause as char) as check_clause,
                        cast(level as char) as check_level,
                        cast(null as char) as delete_rule, cast(null as char) as update_rule,
                        cast(null as char) as match_option
                 from information_schema.check_constraints where {}
         union all
         select 'FOREIGN KEY', cast(constraint_schema as char), cast(table_name as char),
                        cast(constraint_name as char), null, null, cast(delete_rule as char),
                        cast(update_rule as char), cast(match_option as char)
                 from information_schema.referential_constraints where {}",
        schema_condition("constraint_schema", names),
        schema_condition("constraint_schema", names)
    )
}

/// One column of an index (`information_schema.statistics`), in key order; an index of n
/// columns is n rows.
#[derive(sqlx::FromRow)]
pub(super) struct IndexColumnRow {
    pub table_schema: String,
    pub table_name: String,
    pub index_name: String,
    pub non_unique: i64,
    /// Null for a functional key part.
    pub column_name: Option<String>,
    /// Not read: always null.
    pub expression: Option<String>,
    /// `BTREE`, `HASH`, `FULLTEXT`, ….
    pub index_type: String,
    /// `A` (ascending), `D` (descending) or null (no order: fulltext, hash).
    pub collation: Option<String>,
    /// A prefix index's length (`col(10)`).
    pub sub_part: Option<i64>,
}

pub(super) fn index_columns(names: Option<&[String]>) -> String {
    format!(
        "select cast(table_schema as char) as table_schema,
                        cast(table_name as char) as table_name,
                        cast(index_name as char) as index_name,
                        cast(non_unique as signed) as non_unique,
                        cast(column_name as char) as column_name,
                        cast(null as char) as expression,
                        cast(index_type as char) as index_type,
                        cast(collation as char) as collation,
                        cast(sub_part as signed) as sub_part
                 from information_schema.statistics
                 where {}
                 order by 1, 2, 3, seq_in_index",
        schema_condition("table_schema", names)
    )
}

/// Test-connection: whether the session is encrypted (an empty cipher: it is not).
pub(super) const SSL_CIPHER: &str = "show session status like 'Ssl_cipher'";

/// Test-connection: the server's version and the privileges the current user holds globally
/// or on the database bound as `?` (patterns such as `shop\_%` included, as MySQL matches
/// them), comma-separated. Privileges held through roles are not seen.
pub(super) const PROBE: &str = "select version() as version,
       cast(group_concat(distinct p.privilege_type) as char) as held
from (select concat('''', left(current_user(), length(current_user())
                                 - length(substring_index(current_user(), '@', -1)) - 1),
                    '''@''', substring_index(current_user(), '@', -1), '''') as grantee) g
left join (
    select grantee, privilege_type, null as table_schema
    from information_schema.user_privileges
    union all
    select grantee, privilege_type, table_schema from information_schema.schema_privileges
) p on p.grantee = g.grantee and (p.table_schema is null or ? like p.table_schema)";

/// What [`PROBE`] answers.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ProbeRow {
    pub version: String,
    pub held: Option<String>,
}

/// The privileges a complete scan needs on its database, and what it misses without each.
pub(super) const NEEDED: [(&str, &str); 2] = [
    (
        "SELECT",
        "information_schema shows only the tables the user holds a privilege on: the scan \
         misses the others",
    ),
    ("SHOW VIEW", "views are read without their definitions"),
];
