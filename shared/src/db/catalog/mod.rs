//! The stored catalog: the worker's diffing writer ([`write_snapshot`], in `write`), the
//! bulk-insert engine it writes through (`bulk`: `unnest` for small writes, `COPY` for large),
//! and the reads behind the API's catalog endpoints (`read`). Callers use the re-exports here.

mod bulk;
mod read;
mod write;

pub use read::{
    ChangeFilter, SchemaSummary, SearchFilter, SearchHit, SearchHitKind, SearchKey, StoredChange,
    TableDetail, TableFilter, TableSummary, escape_like, get_table, list_changes, list_schemas,
    list_tables, search,
};
pub use write::{Scope, prune_retired_tables, write_snapshot};
