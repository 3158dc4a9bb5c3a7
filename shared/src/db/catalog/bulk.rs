//! The bulk-insert engine: rows handed over as text go out through `insert … select from
//! unnest(…)` while they are few (held back and sent with the other small inserts of the sync
//! in one statement) and through `COPY … FROM STDIN` once they are many. The writer decides
//! what to write; this module only decides how it travels.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use sqlx::PgConnection;

/// A table and its columns with their SQL types, for [`BulkInsert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Target {
    pub table: &'static str,
    /// `(column, type)`: each is bound as `text[]` and cast to its type.
    pub columns: &'static [(&'static str, &'static str)],
}

/// Below this many rows a bulk insert is one `insert … select from unnest(…)`: a single
/// round trip. `COPY` ends with a small `CopyDone` write right after the data, which Nagle's
/// algorithm holds until the server's delayed ACK (~40 ms on Linux; sqlx sets no
/// `TCP_NODELAY`), so it only pays off for large writes.
const COPY_FROM_ROWS: usize = 10_000;

/// Rows in as text: `COPY … FROM STDIN` (text format, sent in ~1 MiB chunks) for large
/// writes, which costs no parameter arrays and about half the server time of
/// `insert … select from unnest(…)`; that insert, with text arrays cast per column, for
/// small ones.
pub(super) enum BulkInsert<'c> {
    Copy {
        copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
        buf: String,
    },
    Unnest(HeldRows),
}

/// Rows of one target kept for an `unnest` insert, a column at a time (one `text[]` each).
pub(super) struct HeldRows {
    target: Target,
    columns: Vec<Vec<Option<String>>>,
}

/// Small inserts held back to go out as one statement, each a data-modifying CTE: a sync of
/// a small source writes its tables, columns and change rows in one round trip. Foreign keys
/// between them (a column's table) hold, since they are checked at the statement's end.
#[derive(Default)]
pub(super) struct PendingInserts {
    parts: Vec<HeldRows>,
}

impl PendingInserts {
    /// Sends what is held, if anything.
    pub(super) async fn execute(&mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        let parts = std::mem::take(&mut self.parts);
        if parts.is_empty() {
            return Ok(());
        }
        let targets: Vec<Target> = parts.iter().map(|part| part.target).collect();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(insert_statement(&targets)));
        for part in parts {
            for column in part.columns {
                query = query.bind(column);
            }
        }
        query.execute(&mut *tx).await?;
        Ok(())
    }
}

/// The statement that inserts held rows of these targets, in this order: one `insert … select
/// from unnest(…)`, or several as data-modifying CTEs. Built once per sequence of targets (the
/// writer has a handful) and kept: assembling the text cost more instructions per small sync
/// than binding its rows.
fn insert_statement(targets: &[Target]) -> Arc<str> {
    static BUILT: LazyLock<Mutex<HashMap<Vec<Target>, Arc<str>>>> = LazyLock::new(Mutex::default);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sql) = built.get(targets) {
        return sql.clone();
    }
    let sql: Arc<str> = build_insert_statement(targets).into();
    built.insert(targets.to_vec(), sql.clone());
    sql
}

fn build_insert_statement(targets: &[Target]) -> String {
    let mut next_param = 1;
    let mut statements: Vec<String> = targets
        .iter()
        .map(|target| {
            let types = target.columns;
            let names: Vec<&str> = types.iter().map(|(name, _)| *name).collect();
            let casts: Vec<String> = types
                .iter()
                .map(|(name, ty)| format!("u.{name}::{ty}"))
                .collect();
            let arrays: Vec<String> = (next_param..next_param + types.len())
                .map(|i| format!("${i}::text[]"))
                .collect();
            next_param += types.len();
            format!(
                "insert into {table} ({names}) select {casts} from unnest({arrays}) as u ({names})",
                table = target.table,
                names = names.join(", "),
                casts = casts.join(", "),
                arrays = arrays.join(", "),
            )
        })
        .collect();
    if statements.len() == 1 {
        return statements.remove(0);
    }
    let ctes: Vec<String> = statements
        .iter()
        .enumerate()
        .map(|(i, insert)| format!("w{i} as ({insert})"))
        .collect();
    format!("with {} select 1", ctes.join(", "))
}

impl<'c> BulkInsert<'c> {
    const CHUNK: usize = 1 << 20;

    /// A large write flushes `pending` first: what it holds may be referenced by these rows
    /// (a column's table).
    pub(super) async fn start(
        tx: &'c mut PgConnection,
        pending: &mut PendingInserts,
        target: Target,
        rows: usize,
    ) -> Result<Self, sqlx::Error> {
        if rows < COPY_FROM_ROWS {
            return Ok(Self::Unnest(HeldRows {
                target,
                columns: vec![Vec::with_capacity(rows); target.columns.len()],
            }));
        }
        pending.execute(tx).await?;
        let names: Vec<&str> = target.columns.iter().map(|(name, _)| *name).collect();
        let statement = format!("copy {} ({}) from stdin", target.table, names.join(", "));
        Ok(Self::Copy {
            copy: tx.copy_in_raw(&statement).await?,
            buf: String::with_capacity(Self::CHUNK + 4096),
        })
    }

    pub(super) async fn row(&mut self, fields: &[Option<&str>]) -> Result<(), sqlx::Error> {
        match self {
            Self::Copy { copy, buf } => {
                push_copy_row(buf, fields);
                if buf.len() >= Self::CHUNK {
                    copy.send(buf.as_bytes()).await?;
                    buf.clear();
                }
            }
            Self::Unnest(held) => {
                for (column, field) in held.columns.iter_mut().zip(fields) {
                    column.push(field.map(str::to_owned));
                }
            }
        }
        Ok(())
    }

    /// Finishes a COPY, or hands the rows to `pending`, and returns the rows inserted (a plain
    /// insert writes every row or fails). A COPY dropped before this is aborted by sqlx.
    pub(super) async fn finish(self, pending: &mut PendingInserts) -> Result<u64, sqlx::Error> {
        match self {
            Self::Copy { mut copy, buf } => {
                if !buf.is_empty() {
                    copy.send(buf.as_bytes()).await?;
                }
                copy.finish().await
            }
            Self::Unnest(held) => {
                let rows = held.columns.first().map_or(0, Vec::len);
                if rows > 0 {
                    pending.parts.push(held);
                }
                Ok(rows as u64)
            }
        }
    }
}

/// Appends one row in `COPY` text format: tab-separated, `\N` for null, and backslash,
/// tab, newline and carriage return escaped, so any identifier or comment round-trips.
fn push_copy_row(buf: &mut String, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            buf.push('\t');
        }
        match field {
            None => buf.push_str("\\N"),
            Some(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => buf.push_str("\\\\"),
                        '\t' => buf.push_str("\\t"),
                        '\n' => buf.push_str("\\n"),
                        '\r' => buf.push_str("\\r"),
                        c => buf.push(c),
                    }
                }
            }
        }
    }
    buf.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_escape_what_copy_text_format_interprets() {
        let mut buf = String::new();
        let fields = [Some("a\tb\\c\nd\re"), None, Some("\\N")];
        push_copy_row(&mut buf, &fields);
        assert_eq!(buf, "a\\tb\\\\c\\nd\\re\t\\N\t\\\\N\n");
    }
}
