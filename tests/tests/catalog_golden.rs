//! The whole catalog the API returns for a fixture schema with every object kind the scanner
//! reads, compared with a committed expected file per engine (`tests/fixtures/catalog/`), so
//! that any change to what is read or how it is sent shows up as a reviewable diff.
//!
//! Ids, timestamps, the generated database name and the statistics (row estimates, sizes, MySQL's
//! create/update times) are replaced by placeholders. To accept a deliberate change, rerun with
//! `METASYNC_BLESS=1`: the expected files are rewritten, and the diff goes in the commit.

use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use serde_json::Value;

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
    db.run_script(&std::fs::read_to_string(fixture("mariadb.sql")).unwrap())
        .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    let catalog = whole_catalog(&s, rid).await;
    let name = db.name.clone();
    db.drop().await;
    assert_golden(catalog, &name, "mariadb.expected.json");
}
