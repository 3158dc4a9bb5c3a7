//! The catalog statement: a whole database in one `union all` statement, one branch per object
//! family, and the rows it returns, decoded by family into named structs ([`CatalogRow`]).
//!
//! Set-based throughout: comments come from joins on `pg_description` rather than
//! `obj_description()`/`col_description()` per row (measured 2-4× faster on the columns of
//! 2,000 tables), and the total size is an estimate from `relpages` of the table, its TOAST
//! table and its indexes, like the row estimate, instead of `pg_total_relation_size()`, which
//! stats every file of every relation (~40% of the relations statement at 2,000 tables).

use std::sync::OnceLock;

use metasync_shared::scan_options::Depth;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row as _};

/// PostgreSQL's `FirstNormalObjectId`: objects made by initdb (the system catalogs, their
/// columns, indexes and constraints) have smaller oids, everything created later has larger
/// ones (the oid counter wraps back to this value, never below). Filtering on it lets each
/// query range-scan the catalogs' oid indexes instead of reading every system row, which on
/// a small database is most of the work (about 4x fewer catalog rows for a one-table source).
const FIRST_USER_OID: u32 = 16384;

/// Schemas that are the server's own, never a user's.
const SYSTEM_SCHEMAS: &str = "n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
     and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'";

/// The databases a scan of `"all"` reads: those that accept connections, templates left out.
pub(super) const DATABASES: &str = "select datname::text from pg_database
                 where datallowconn and not datistemplate order by 1";

/// The whole database in one statement, whatever the table count: one round trip, and one
/// snapshot (a single statement sees one; the session is READ ONLY). Every object family is a
/// branch of a `union all` in one row shape, sorted by family and then as each family needs:
/// schemas and relations by name, columns by position, constraints and indexes by name.
/// Shallower depths leave out the families they do not need.
///
/// Built once per depth and kept: the text depends on nothing else, and assembling it costs
/// about as many instructions as the rest of a tiny job's scan.
pub(super) fn catalog_statement(depth: Depth) -> &'static str {
    static BUILT: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    BUILT[depth as usize - 1].get_or_init(|| build_catalog_statement(depth))
}

fn build_catalog_statement(depth: Depth) -> String {
    let mut branches = vec![schemas_branch()];
    if depth >= Depth::Tables {
        branches.push(relations_branch());
    }
    if depth == Depth::Everything {
        branches.extend([
            opclasses_branch(),
            columns_branch(),
            constraints_branch(),
            indexes_branch(),
            types_branch(),
            sequences_branch(),
        ]);
    }
    format!(
        "{} order by f, t1, t2, oid, pos, t3",
        branches.join("\nunion all\n")
    )
}

/// The object family of a row: the `f` column, which leads the sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Family {
    /// First, so that index rows find the names of their operator classes.
    Opclass = 0,
    Schema = 1,
    Relation = 2,
    Column = 3,
    Constraint = 4,
    Index = 5,
    Type = 6,
    Sequence = 7,
}

impl Family {
    const ALL: [Self; 8] = [
        Self::Opclass,
        Self::Schema,
        Self::Relation,
        Self::Column,
        Self::Constraint,
        Self::Index,
        Self::Type,
        Self::Sequence,
    ];

    fn from_tag(tag: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|family| *family as i32 == tag)
    }
}

/// One row of the catalog statement, decoded as its family's struct.
pub(super) enum CatalogRow {
    Opclass(OpclassRow),
    Schema(SchemaRow),
    Relation(RelationRow),
    Column(ColumnRow),
    Constraint(ConstraintRow),
    Index(IndexRow),
    Type(TypeRow),
    Sequence(SequenceRow),
}

impl<'r> FromRow<'r, PgRow> for CatalogRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let tag: i32 = row.try_get("f")?;
        Ok(match Family::from_tag(tag) {
            Some(Family::Opclass) => Self::Opclass(OpclassRow::from_row(row)?),
            Some(Family::Schema) => Self::Schema(SchemaRow::from_row(row)?),
            Some(Family::Relation) => Self::Relation(RelationRow::from_row(row)?),
            Some(Family::Column) => Self::Column(ColumnRow::from_row(row)?),
            Some(Family::Constraint) => Self::Constraint(ConstraintRow::from_row(row)?),
            Some(Family::Index) => Self::Index(IndexRow::from_row(row)?),
            Some(Family::Type) => Self::Type(TypeRow::from_row(row)?),
            Some(Family::Sequence) => Self::Sequence(SequenceRow::from_row(row)?),
            None => {
                return Err(sqlx::Error::Decode(
                    format!("unknown catalog row family {tag}").into(),
                ));
            }
        })
    }
}

/// The columns of the statement's one row shape, with their types. A `union all` has a single
/// row shape, so these are slots that each family fills as its struct below names them (and
/// its `*_branch` function selects them), leaving the rest null. The first five are also the
/// sort key: `f` (the family), then schema and relation names, then table oid and column
/// position; `t3` breaks ties by object name.
const UNIFIED: [(&str, &str); 21] = [
    ("f", "int4"),
    ("t1", "text"),
    ("t2", "text"),
    ("oid", "int8"),
    ("pos", "int2"),
    ("t3", "text"),
    ("t4", "text"),
    ("t5", "text"),
    ("t6", "text"),
    ("t7", "text"),
    ("t8", "text"),
    ("t9", "text"),
    ("t10", "text"),
    ("t11", "text"),
    ("t12", "text"),
    ("b1", "bool"),
    ("b2", "bool"),
    ("i1", "int8"),
    ("i2", "int8"),
    ("a1", "text[]"),
    ("a2", "text[]"),
];

/// One family's `select`, in the unified shape: `fields` maps column names to expressions.
fn branch(family: Family, fields: &[(&str, &str)], from: &str) -> String {
    let select: Vec<String> = UNIFIED
        .iter()
        .map(|(name, ty)| {
            let expr = match *name {
                "f" => (family as i32).to_string(),
                _ => fields
                    .iter()
                    .find(|(field, _)| field == name)
                    .map_or("null", |(_, expr)| expr)
                    .to_owned(),
            };
            format!("({expr})::{ty} as {name}")
        })
        .collect();
    format!("select {} {from}", select.join(", "))
}

/// A schema (`pg_namespace`).
#[derive(sqlx::FromRow)]
pub(super) struct SchemaRow {
    #[sqlx(rename = "t1")]
    pub name: String,
    #[sqlx(rename = "t3")]
    pub owner: Option<String>,
    #[sqlx(rename = "t4")]
    pub comment: Option<String>,
}

fn schemas_branch() -> String {
    branch(
        Family::Schema,
        &[
            ("t1", "n.nspname"),
            ("t3", "pg_get_userbyid(n.nspowner)"),
            ("t4", "ds.description"),
        ],
        &format!(
            "from pg_namespace n
                  left join pg_description ds
                         on ds.objoid = n.oid and ds.classoid = 'pg_namespace'::regclass
                        and ds.objsubid = 0
             where {SYSTEM_SCHEMAS}"
        ),
    )
}

/// A table, view, materialized view, partitioned or foreign table (`pg_class`).
#[derive(sqlx::FromRow)]
pub(super) struct RelationRow {
    pub oid: i64,
    #[sqlx(rename = "t1")]
    pub schema: String,
    #[sqlx(rename = "t2")]
    pub name: String,
    /// `pg_class.relkind`: `r`, `v`, `m`, `p` or `f`.
    #[sqlx(rename = "t3")]
    pub relkind: String,
    #[sqlx(rename = "t4")]
    pub owner: Option<String>,
    #[sqlx(rename = "t5")]
    pub comment: Option<String>,
    #[sqlx(rename = "t6")]
    pub view_definition: Option<String>,
    /// The parent of a partition, as a quoted `schema.table`.
    #[sqlx(rename = "t7")]
    pub partition_of: Option<String>,
    #[sqlx(rename = "i1")]
    pub row_estimate: Option<i64>,
    #[sqlx(rename = "i2")]
    pub estimated_bytes: Option<i64>,
    /// `pg_class.relpersistence`: `p` (permanent), `u` (unlogged) or `t` (temporary).
    #[sqlx(rename = "t8")]
    pub persistence: String,
    /// The table access method where it is not the default `heap`.
    #[sqlx(rename = "t9")]
    pub access_method: Option<String>,
    /// A partitioned table's `PARTITION BY` clause, e.g. `RANGE (at)`.
    #[sqlx(rename = "t10")]
    pub partition_key: Option<String>,
    /// A partition's bound, e.g. `FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`.
    #[sqlx(rename = "t11")]
    pub partition_bound: Option<String>,
    /// Storage parameters (`WITH (fillfactor=70)`), as `name=value`.
    #[sqlx(rename = "a1")]
    pub reloptions: Option<Vec<String>>,
}

fn relations_branch() -> String {
    branch(
        Family::Relation,
        &[
            ("t1", "n.nspname"),
            ("t2", "c.relname"),
            ("oid", "c.oid"),
            ("t3", "c.relkind"),
            ("t4", "pg_get_userbyid(c.relowner)"),
            ("t5", "ds.description"),
            (
                "t6",
                "case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end",
            ),
            (
                "t7",
                "quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)",
            ),
            ("t8", "c.relpersistence"),
            ("t9", "case when am.amname <> 'heap' then am.amname end"),
            (
                "t10",
                "case when c.relkind = 'p' then pg_get_partkeydef(c.oid) end",
            ),
            (
                "t11",
                "case when c.relispartition then pg_get_expr(c.relpartbound, c.oid) end",
            ),
            ("a1", "c.reloptions"),
            (
                "i1",
                "case when c.reltuples >= 0 then c.reltuples::int8 end",
            ),
            (
                "i2",
                "case when c.relkind in ('r', 'm') then
                     (c.relpages::int8 + coalesce(toast.relpages, 0) + coalesce(ix.pages, 0))
                     * current_setting('block_size')::int8
                 end",
            ),
        ],
        &format!(
            "from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  left join pg_description ds
                         on ds.objoid = c.oid and ds.classoid = 'pg_class'::regclass
                        and ds.objsubid = 0
                  left join pg_class toast on toast.oid = c.reltoastrelid
                  left join (select i.indrelid, sum(ic.relpages) as pages
                             from pg_index i join pg_class ic on ic.oid = i.indexrelid
                             where i.indrelid >= {FIRST_USER_OID}
                             group by i.indrelid) ix on ix.indrelid = c.oid
                  left join pg_am am on am.oid = c.relam
                  left join pg_inherits inh on inh.inhrelid = c.oid and c.relispartition
                  left join pg_class pc on pc.oid = inh.inhparent
                  left join pg_namespace pn on pn.oid = pc.relnamespace
             where c.oid >= {FIRST_USER_OID} and c.relkind in ('r', 'v', 'm', 'p', 'f')
               and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// A column of a relation (`pg_attribute`), by the relation's oid.
#[derive(sqlx::FromRow)]
pub(super) struct ColumnRow {
    pub oid: i64,
    #[sqlx(rename = "pos")]
    pub position: i16,
    #[sqlx(rename = "t3")]
    pub name: String,
    #[sqlx(rename = "t4")]
    pub data_type: String,
    /// The default, or a stored generated column's expression.
    #[sqlx(rename = "t5")]
    pub default: Option<String>,
    #[sqlx(rename = "t6")]
    pub comment: Option<String>,
    /// `pg_attribute.attidentity`: `a` (always), `d` (by default) or empty.
    #[sqlx(rename = "t7")]
    pub identity: String,
    /// `pg_attribute.attgenerated`: `s` (stored) or empty.
    #[sqlx(rename = "t8")]
    pub generated: String,
    #[sqlx(rename = "b1")]
    pub nullable: bool,
    /// The collation where it is not the type's default one.
    #[sqlx(rename = "t9")]
    pub collation: Option<String>,
}

fn columns_branch() -> String {
    branch(
        Family::Column,
        &[
            ("oid", "a.attrelid"),
            ("pos", "a.attnum"),
            ("t3", "a.attname"),
            ("t4", "format_type(a.atttypid, a.atttypmod)"),
            ("t5", "pg_get_expr(d.adbin, d.adrelid)"),
            ("t6", "ds.description"),
            ("t7", "a.attidentity"),
            ("t8", "a.attgenerated"),
            ("b1", "not a.attnotnull"),
            (
                "t9",
                "case when a.attcollation <> ty.typcollation then
                     (select co.collname from pg_collation co where co.oid = a.attcollation)
                 end",
            ),
        ],
        &format!(
            "from pg_attribute a
                  join pg_class c on c.oid = a.attrelid
                  join pg_namespace n on n.oid = c.relnamespace
                  join pg_type ty on ty.oid = a.atttypid
                  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                  left join pg_description ds
                         on ds.objoid = a.attrelid and ds.classoid = 'pg_class'::regclass
                        and ds.objsubid = a.attnum
             where a.attrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID}
               and a.attnum > 0 and not a.attisdropped
               and c.relkind in ('r', 'v', 'm', 'p', 'f') and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// A primary key, foreign key, unique or check constraint (`pg_constraint`), by its table's oid.
#[derive(sqlx::FromRow)]
pub(super) struct ConstraintRow {
    pub oid: i64,
    #[sqlx(rename = "t3")]
    pub name: String,
    /// `pg_constraint.contype`: `p`, `f`, `u` or `c`.
    #[sqlx(rename = "t4")]
    pub contype: String,
    #[sqlx(rename = "a1")]
    pub columns: Vec<String>,
    /// A foreign key's referenced schema, table and columns.
    #[sqlx(rename = "t5")]
    pub ref_schema: Option<String>,
    #[sqlx(rename = "t6")]
    pub ref_table: Option<String>,
    #[sqlx(rename = "a2")]
    pub ref_columns: Option<Vec<String>>,
    /// A check constraint's definition.
    #[sqlx(rename = "t7")]
    pub definition: Option<String>,
    /// A foreign key's `confdeltype`, `confupdtype` and `confmatchtype`.
    #[sqlx(rename = "t8")]
    pub on_delete: Option<String>,
    #[sqlx(rename = "t9")]
    pub on_update: Option<String>,
    #[sqlx(rename = "t10")]
    pub match_type: Option<String>,
    #[sqlx(rename = "b1")]
    pub deferrable: bool,
    #[sqlx(rename = "b2")]
    pub initially_deferred: bool,
}

fn constraints_branch() -> String {
    branch(
        Family::Constraint,
        &[
            ("oid", "con.conrelid"),
            ("t3", "con.conname"),
            ("t4", "con.contype"),
            ("t5", "fn.nspname"),
            ("t6", "fc.relname"),
            (
                "t7",
                "case when con.contype = 'c' then pg_get_constraintdef(con.oid) end",
            ),
            ("t8", "case when con.contype = 'f' then con.confdeltype end"),
            ("t9", "case when con.contype = 'f' then con.confupdtype end"),
            (
                "t10",
                "case when con.contype = 'f' then con.confmatchtype end",
            ),
            ("b1", "con.condeferrable"),
            ("b2", "con.condeferred"),
            (
                "a1",
                "array(select a.attname::text
                       from unnest(con.conkey) with ordinality k (num, ord)
                            join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num
                       order by k.ord)",
            ),
            (
                "a2",
                "case when con.contype = 'f' then
                     array(select a.attname::text
                           from unnest(con.confkey) with ordinality k (num, ord)
                                join pg_attribute a
                                  on a.attrelid = con.confrelid and a.attnum = k.num
                           order by k.ord)
                 end",
            ),
        ],
        &format!(
            "from pg_constraint con
                  join pg_class c on c.oid = con.conrelid
                  join pg_namespace n on n.oid = c.relnamespace
                  left join pg_class fc on fc.oid = con.confrelid
                  left join pg_namespace fn on fn.oid = fc.relnamespace
             where con.conrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID}
               and con.contype in ('p', 'f', 'u', 'c') and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// An index (`pg_index`), by its table's oid.
#[derive(sqlx::FromRow)]
pub(super) struct IndexRow {
    pub oid: i64,
    #[sqlx(rename = "t3")]
    pub name: String,
    /// The key expressions, if any.
    #[sqlx(rename = "t7")]
    pub expression: Option<String>,
    #[sqlx(rename = "b1")]
    pub unique: bool,
    #[sqlx(rename = "b2")]
    pub primary: bool,
    /// The access method: `btree`, `gin`, ….
    #[sqlx(rename = "t8")]
    pub method: String,
    /// The definition up to its key parts: `CREATE [UNIQUE] INDEX name ON schema.table USING
    /// method`, quoted as `pg_get_indexdef` quotes.
    #[sqlx(rename = "t4")]
    pub head: String,
    /// A partial index's `WHERE`.
    #[sqlx(rename = "t5")]
    pub predicate: Option<String>,
    /// `indnkeyatts`: the first this many parts are the key, the rest `INCLUDE` columns.
    #[sqlx(rename = "i1")]
    pub key_parts: i64,
    /// Every part, key and `INCLUDE`, a JSON array of objects in
    /// [`metasync_shared::catalog::IndexKey`]'s shape, with `opclass` as the operator class's
    /// oid (named through the [`OpclassRow`]s) and `quoted`, the column as an identifier.
    #[sqlx(rename = "t9")]
    pub parts: String,
}

/// The parts of index `i` (on access method `am`) as a JSON array. Order and nulls only where
/// the method keeps an order, the collation only where it is not the column's. The operator
/// class goes as an oid, resolved from the few non-default ones ([`opclasses_branch`]): a
/// lookup of `pg_opclass` per part is planned as a scan of it per part (measured 3x the cost
/// of the whole branch at 6,000 indexes), and `pg_get_indexdef`, which would print it all, as
/// much again, so the worker composes the definition.
const INDEX_PARTS: &str = "coalesce((
    select json_agg(json_build_object(
               'column', a.attname,
               'quoted', quote_ident(a.attname),
               'expression', case when k.num = 0
                                  then pg_get_indexdef(i.indexrelid, k.ord::int, false) end,
               'order', case when k.ord <= i.indnkeyatts
                                  and pg_indexam_has_property(am.oid, 'can_order') then
                            case when i.indoption[(k.ord - 1)::int]::int & 1 = 1
                                 then 'desc' else 'asc' end end,
               'nulls', case when k.ord <= i.indnkeyatts
                                  and pg_indexam_has_property(am.oid, 'can_order') then
                            case when i.indoption[(k.ord - 1)::int]::int & 2 = 2
                                 then 'first' else 'last' end end,
               'opclass', case when k.ord <= i.indnkeyatts
                               then i.indclass[(k.ord - 1)::int]::text end,
               'collation', case when k.ord <= i.indnkeyatts
                                      and i.indcollation[(k.ord - 1)::int] not in
                                          (0, coalesce(a.attcollation, 100))
                                 then (select co.collname::text from pg_collation co
                                       where co.oid = i.indcollation[(k.ord - 1)::int]) end)
           order by k.ord)
    from unnest(i.indkey::int2[]) with ordinality k (num, ord)
         left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.num), '[]')";

fn indexes_branch() -> String {
    branch(
        Family::Index,
        &[
            ("oid", "i.indrelid"),
            ("t3", "ic.relname"),
            (
                "t4",
                "'CREATE ' || case when i.indisunique then 'UNIQUE ' else '' end || 'INDEX '
                 || quote_ident(ic.relname) || ' ON ' || quote_ident(n.nspname) || '.'
                 || quote_ident(c.relname) || ' USING ' || quote_ident(am.amname)",
            ),
            ("t5", "pg_get_expr(i.indpred, i.indrelid)"),
            ("t7", "pg_get_expr(i.indexprs, i.indrelid)"),
            ("t8", "am.amname"),
            ("t9", INDEX_PARTS),
            ("i1", "i.indnkeyatts"),
            ("b1", "i.indisunique"),
            ("b2", "i.indisprimary"),
        ],
        &format!(
            "from pg_index i
                  join pg_class ic on ic.oid = i.indexrelid
                  join pg_am am on am.oid = ic.relam
                  join pg_class c on c.oid = i.indrelid
                  join pg_namespace n on n.oid = c.relnamespace
             where i.indrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID} and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// An operator class that is not its type's default (`pg_opclass`): few (58 on a fresh
/// server), read whole so an index part names its class by oid.
#[derive(sqlx::FromRow)]
pub(super) struct OpclassRow {
    pub oid: i64,
    #[sqlx(rename = "t3")]
    pub name: String,
}

fn opclasses_branch() -> String {
    branch(
        Family::Opclass,
        &[("oid", "o.oid"), ("t3", "o.opcname")],
        "from pg_opclass o where not o.opcdefault",
    )
}

/// An enum or a domain (`pg_type`), by its schema's name.
#[derive(sqlx::FromRow)]
pub(super) struct TypeRow {
    #[sqlx(rename = "t1")]
    pub schema: String,
    #[sqlx(rename = "t3")]
    pub name: String,
    /// `pg_type.typtype`: `e` (enum) or `d` (domain).
    #[sqlx(rename = "t4")]
    pub typtype: String,
    /// A domain's base type.
    #[sqlx(rename = "t5")]
    pub base_type: Option<String>,
    /// A domain's default.
    #[sqlx(rename = "t6")]
    pub default: Option<String>,
    #[sqlx(rename = "t7")]
    pub comment: Option<String>,
    /// A domain's checks, a JSON array of `ConstraintInfo`s.
    #[sqlx(rename = "t9")]
    pub checks: String,
    #[sqlx(rename = "b1")]
    pub nullable: bool,
    /// An enum's values in sort order.
    #[sqlx(rename = "a1")]
    pub values: Vec<String>,
}

fn types_branch() -> String {
    branch(
        Family::Type,
        &[
            ("t1", "n.nspname"),
            ("t3", "t.typname"),
            ("t4", "t.typtype"),
            (
                "t5",
                "case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) end",
            ),
            ("t6", "t.typdefault"),
            ("t7", "ds.description"),
            (
                "t9",
                "coalesce((select json_agg(json_build_object(
                                    'name', con.conname, 'kind', 'check', 'columns', '[]'::json,
                                    'definition', pg_get_constraintdef(con.oid))
                                order by con.conname)
                           from pg_constraint con
                           where con.contypid = t.oid and con.contype = 'c'), '[]')",
            ),
            ("b1", "not t.typnotnull"),
            (
                "a1",
                "array(select e.enumlabel::text from pg_enum e where e.enumtypid = t.oid
                       order by e.enumsortorder)",
            ),
        ],
        &format!(
            "from pg_type t join pg_namespace n on n.oid = t.typnamespace
                  left join pg_description ds
                         on ds.objoid = t.oid and ds.classoid = 'pg_type'::regclass
                        and ds.objsubid = 0
             where t.oid >= {FIRST_USER_OID} and t.typtype in ('e', 'd') and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// A sequence (`pg_sequence`) and the column that owns it, if any, by its schema's name.
#[derive(sqlx::FromRow)]
pub(super) struct SequenceRow {
    #[sqlx(rename = "t1")]
    pub schema: String,
    #[sqlx(rename = "t3")]
    pub name: String,
    #[sqlx(rename = "t4")]
    pub data_type: String,
    /// `seqmin` and `seqmax`, as text: two more integer slots would widen every row.
    #[sqlx(rename = "t5")]
    pub min: String,
    #[sqlx(rename = "t6")]
    pub max: String,
    /// The owning column's schema, table and name.
    #[sqlx(rename = "t7")]
    pub owner_schema: Option<String>,
    #[sqlx(rename = "t8")]
    pub owner_table: Option<String>,
    #[sqlx(rename = "t9")]
    pub owner_column: Option<String>,
    #[sqlx(rename = "i1")]
    pub start: i64,
    #[sqlx(rename = "i2")]
    pub increment: i64,
    #[sqlx(rename = "b1")]
    pub cycle: bool,
    /// Whether the owner is an identity column (`pg_depend.deptype = 'i'`).
    #[sqlx(rename = "b2")]
    pub identity: bool,
}

fn sequences_branch() -> String {
    branch(
        Family::Sequence,
        &[
            ("t1", "n.nspname"),
            ("t3", "c.relname"),
            ("t4", "format_type(s.seqtypid, null)"),
            ("t5", "s.seqmin"),
            ("t6", "s.seqmax"),
            ("t7", "on_.nspname"),
            ("t8", "oc.relname"),
            ("t9", "oa.attname"),
            ("i1", "s.seqstart"),
            ("i2", "s.seqincrement"),
            ("b1", "s.seqcycle"),
            ("b2", "coalesce(d.deptype = 'i', false)"),
        ],
        &format!(
            "from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  join pg_sequence s on s.seqrelid = c.oid
                  left join pg_depend d
                         on d.classid = 'pg_class'::regclass and d.objid = c.oid
                        and d.refclassid = 'pg_class'::regclass and d.refobjsubid > 0
                        and d.deptype in ('a', 'i')
                  left join pg_class oc on oc.oid = d.refobjid
                  left join pg_namespace on_ on on_.oid = oc.relnamespace
                  left join pg_attribute oa
                         on oa.attrelid = d.refobjid and oa.attnum = d.refobjsubid
             where c.oid >= {FIRST_USER_OID} and c.relkind = 'S' and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// The catalogs [`catalog_statement`] and [`DATABASES`] read, for test-connection's grant check.
pub(super) const CATALOGS_READ: [&str; 16] = [
    "pg_catalog.pg_am",
    "pg_catalog.pg_attrdef",
    "pg_catalog.pg_attribute",
    "pg_catalog.pg_class",
    "pg_catalog.pg_collation",
    "pg_catalog.pg_constraint",
    "pg_catalog.pg_database",
    "pg_catalog.pg_depend",
    "pg_catalog.pg_description",
    "pg_catalog.pg_enum",
    "pg_catalog.pg_index",
    "pg_catalog.pg_inherits",
    "pg_catalog.pg_namespace",
    "pg_catalog.pg_opclass",
    "pg_catalog.pg_sequence",
    "pg_catalog.pg_type",
];

/// Test-connection's one statement: the server's version, whether this session is encrypted,
/// and which of the catalogs bound as `$1` ([`CATALOGS_READ`]) the user may not read.
pub(super) const PROBE: &str = "select current_setting('server_version') as version,
       coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as tls,
       array(select c from unnest($1::text[]) as c
             where not has_table_privilege(c, 'select')) as unreadable";

/// What [`PROBE`] answers.
#[derive(Debug, FromRow)]
pub(super) struct ProbeRow {
    pub version: String,
    pub tls: bool,
    pub unreadable: Vec<String>,
}
