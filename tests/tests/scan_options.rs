//! Scan options: include/exclude filters, depths and lists of databases shape what is
//! stored, and bad options are refused with a clear message.

use metasync_shared::ids::ResourceId;
use metasync_tests::assert::stats;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use reqwest::Method;
use serde_json::json;

const FILTER_FIXTURE: &str = r"
create schema sales; create schema sales_archive; create schema hr;
create table sales.orders (id int); create table sales.tmp_orders (id int);
create table sales_archive.orders (id int);
create table hr.people (id int, name text);
create view hr.people_view as select id from hr.people;
";

#[tokio::test]
async fn filters_and_depths_shape_what_is_stored() {
    let s = scanner().await;
    let source = create_source(FILTER_FIXTURE).await.unwrap();
    let rid = s
        .register(
            "postgres",
            &source,
            5432,
            json!({
                "include_schemas": ["sales.*", "hr"],
                "exclude_schemas": [".*_archive"],
                "exclude_tables": ["tmp_.*"],
            }),
        )
        .await;
    s.sync(rid).await;
    let tables = s.qualified_names(rid).await;
    assert_eq!(
        tables,
        ["hr.people", "hr.people_view", "sales.orders"]
            .map(String::from)
            .into()
    );
    assert_eq!(schema_names(&s, rid).await, ["hr", "sales"]);

    // Depth 2: tables without columns; fewer statements.
    s.set_options(rid, json!({"depth": 2, "include_tables": ["people"]}))
        .await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).source_statements, 1, "{job:?}");
    assert_eq!(stats(&job).tables, 1, "{job:?}");
    assert_eq!(stats(&job).tables_removed, 2, "{job:?}");
    let people = s.table(rid, "hr", "people").await;
    assert!(people.definition.columns.is_empty(), "{people:?}");
    assert_eq!(
        schema_names(&s, rid).await,
        ["hr", "public", "sales", "sales_archive"]
    );

    // Depth 1: schemas only.
    s.set_options(rid, json!({"depth": 1})).await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).source_statements, 1, "{job:?}");
    assert_eq!(stats(&job).tables, 0, "{job:?}");
    assert!(s.tables(rid).await.is_empty());
    assert_eq!(stats(&job).schemas, 4, "{job:?}");

    // Depth 3 again: everything, with columns.
    s.set_options(rid, json!({"depth": 3})).await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).tables, 5, "{job:?}");
    let people = s.table(rid, "hr", "people").await;
    assert_eq!(column_names(&people), ["id", "name"]);
}

#[tokio::test]
async fn a_list_of_databases_is_scanned_one_by_one() {
    let s = scanner().await;
    let first = create_source("create table one (id int);").await.unwrap();
    let second = create_source("create schema s; create table s.two (id int);")
        .await
        .unwrap();
    let rid = s
        .register(
            "postgres",
            &first,
            5432,
            json!({"databases": [first, second]}),
        )
        .await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).databases, 2, "{job:?}");
    assert_eq!(stats(&job).source_statements, 2, "1 per database: {job:?}");
    let tables = s.table_pairs(rid, |t| (t.database, t.name)).await;
    assert_eq!(
        tables,
        [
            (first.clone(), "one".to_owned()),
            (second.clone(), "two".to_owned())
        ]
        .into()
    );

    // MariaDB: the listed databases, filtered by table name.
    let a = MariaDb::create().await;
    let b = MariaDb::create().await;
    a.run(&[
        "create table `{db}`.keep (id int)",
        "create table `{db}`.tmp_x (id int)",
    ])
    .await;
    b.run(&["create table `{db}`.other (id int)"]).await;
    let rid = s
        .register(
            "mysql",
            &a.name,
            3306,
            json!({"databases": [a.name, b.name], "exclude_tables": ["tmp_.*"]}),
        )
        .await;
    s.sync(rid).await;
    let tables = s.qualified_names(rid).await;
    assert_eq!(
        tables,
        [format!("{}.keep", a.name), format!("{}.other", b.name)].into()
    );
    a.drop().await;
    b.drop().await;
}

/// The stored schemas' names, in listing order.
async fn schema_names(s: &Scanner, rid: ResourceId) -> Vec<String> {
    s.schemas(rid).await.into_iter().map(|x| x.name).collect()
}

// The refusals are checked on the raw answer: their problem+json body is what is under test.
#[tokio::test]
async fn bad_options_are_refused_with_a_clear_message() {
    let s = scanner().await;
    for (options, needle) in [
        (json!({"depth": 0}), "`options.depth` must be 1, 2 or 3"),
        (json!({"databases": "everything"}), "`options.databases`"),
        (
            json!({"include_schemas": ["("]}),
            "not a valid regular expression",
        ),
        (
            json!({"exclude_tables": "tmp"}),
            "`options.exclude_tables` must be a list",
        ),
        (
            json!({"include_schema": []}),
            "`options.include_schema` is not a scan option",
        ),
        (json!([]), "`options` must be a JSON object"),
    ] {
        let (status, content_type, body) = s
            .try_register("postgres", "postgres", 5432, options.clone())
            .await;
        assert_eq!(status, 422, "{options}: {body}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{options}: {body}"
        );
    }
    let rid = s.register("postgres", "postgres", 5432, json!({})).await;
    let (status, _, body) = s
        .app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({"options": {"depth": "deep"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
}
