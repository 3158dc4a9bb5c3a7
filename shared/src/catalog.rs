//! The catalog model: what a scan reads from a source, independent of its engine. The worker
//! builds a [`Snapshot`]; [`crate::db::catalog`] diffs it against what is stored and writes
//! only what changed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything one sync read from one source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub databases: Vec<DatabaseSnapshot>,
    /// Statements issued against the source, all databases together.
    pub statements: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseSnapshot {
    pub name: String,
    pub schemas: Vec<SchemaInfo>,
    pub tables: Vec<TableInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInfo {
    pub name: String,
    pub owner: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// `table`, `view`, `materialized_view`, `partitioned_table` or `foreign_table`.
    pub kind: String,
    pub owner: Option<String>,
    pub comment: Option<String>,
    pub row_estimate: Option<i64>,
    pub total_bytes: Option<i64>,
    pub view_definition: Option<String>,
    /// Engine-specific facts, e.g. `{"partition_of": "public.events"}` or `{"engine": "InnoDB"}`.
    pub details: serde_json::Value,
    pub columns: Vec<ColumnInfo>,
    pub constraints: Vec<ConstraintInfo>,
    pub indexes: Vec<IndexInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub position: i32,
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    pub default_value: Option<String>,
    pub comment: Option<String>,
    /// Identity / generated (PostgreSQL) or `EXTRA` (MySQL); `{}` when there is none.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintInfo {
    pub name: String,
    /// `primary_key`, `foreign_key`, `unique` or `check`.
    pub kind: String,
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<ForeignKeyTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKeyTarget {
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub name: String,
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    pub unique: bool,
    pub primary: bool,
    pub method: String,
}

impl TableInfo {
    /// A stable hash of the table's definition. Row estimates and sizes drift on their own and
    /// are left out, so that an unchanged schema resyncs without writing anything.
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
            details: &self.details,
            columns: &self.columns,
            constraints: &self.constraints,
            indexes: &self.indexes,
        };
        let bytes = serde_json::to_vec(&definition).expect("catalog types always serialize");
        hex::encode(&Sha256::digest(&bytes)[..16])
    }
}
