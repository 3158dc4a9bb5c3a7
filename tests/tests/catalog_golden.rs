//! The whole catalog the API returns for a fixture schema with every object kind the scanner
//! reads, compared with a committed expected file per engine (`tests/fixtures/catalog/`), so
//! that any change to what is read or how it is sent shows up as a reviewable diff.
//!
//! Ids, timestamps, the generated database name and the statistics (row estimates, sizes, MySQL's
//! create/update times) are replaced by placeholders. To accept a deliberate change, rerun with
//! `METASYNC_BLESS=1`: the expected files are rewritten, and the diff goes in the commit.

use std::path::PathBuf;

use metasync_shared::ids::ResourceId;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/catalog")
        .join(name)
}

/// Schemas, then every table with its definition, as the API sends them.
async fn whole_catalog(s: &Scanner, rid: ResourceId) -> Value {
    let schemas: Vec<Value> = s
        .all_pages(&format!("/v1/resources/{rid}/schemas"), 1000)
        .await;
    let summaries: Vec<Value> = s
        .all_pages(&format!("/v1/resources/{rid}/tables"), 1000)
        .await;
    let mut tables = Vec::new();
    for summary in &summaries {
        let id = summary["id"].as_str().unwrap();
        tables.push(s.get::<Value>(&format!("/v1/tables/{id}")).await);
    }
    json!({ "schemas": schemas, "tables": tables })
}

/// Replaces what differs from run to run: ids, times, statistics, the database name.
fn normalize(value: &mut Value, database: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let placeholder = match key.as_str() {
                    "id" | "resource_id" => Some("<id>"),
                    "last_changed_at" | "created_at" | "updated_at" => Some("<time>"),
                    "estimated_bytes" => Some("<statistic>"),
                    _ => None,
                };
                match placeholder {
                    Some(p) if !v.is_null() => *v = json!(p),
                    // PostgreSQL has none (null) until a table is first vacuumed or analyzed.
                    _ if key == "row_estimate" => *v = json!("<statistic>"),
                    _ => normalize(v, database),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize(v, database)),
        Value::String(s) if s.contains(database) => *s = s.replace(database, "<database>"),
        _ => {}
    }
}

/// Compares with the expected file, or rewrites it under `METASYNC_BLESS=1`.
fn assert_golden(mut catalog: Value, database: &str, expected_file: &str) {
    normalize(&mut catalog, database);
    let actual = serde_json::to_string_pretty(&catalog).unwrap() + "\n";
    let path = fixture(expected_file);
    if std::env::var_os("METASYNC_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (METASYNC_BLESS=1 writes it)", path.display()));
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "the catalog differs from {} from line {}:\n  expected: {}\n  actual:   {}\n\
             (METASYNC_BLESS=1 rewrites the file; review its diff)",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            actual.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

#[tokio::test]
async fn the_postgres_fixture_catalog_is_the_expected_one() {
    let s = scanner().await;
    let sql = std::fs::read_to_string(fixture("postgres.sql")).unwrap();
    let source = create_source(&sql).await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    assert_golden(
        whole_catalog(&s, rid).await,
        &source,
        "postgres.expected.json",
    );
}

#[tokio::test]
async fn the_mariadb_fixture_catalog_is_the_expected_one() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    let sql = std::fs::read_to_string(fixture("mariadb.sql")).unwrap();
    let statements: Vec<String> = sql
        .split(";\n")
        .map(|statement| {
            statement
                .lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|statement| !statement.trim().is_empty())
        .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    db.run(&statements).await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    let catalog = whole_catalog(&s, rid).await;
    let name = db.name.clone();
    db.drop().await;
    assert_golden(catalog, &name, "mariadb.expected.json");
}
