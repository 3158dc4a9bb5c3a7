//! Reading the catalog: cursor pagination, search, conditional reads (ETag → 304) and tenancy.

use std::collections::BTreeSet;

use metasync_api::pagination::Page;
use metasync_shared::db::catalog::{SearchHit, SearchHitKind, StoredChange, TableSummary};
use metasync_shared::ids::{ChangeId, TableId};
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn cursor_pagination_never_skips_or_repeats() {
    let s = scanner().await;
    let mut sql = String::from("create schema z; create schema \"A\";");
    for i in 0..250 {
        let schema = if i % 3 == 0 { "\"A\"" } else { "z" };
        // Names that sort differently byte-wise, case-wise and numerically.
        sql.push_str(&format!(
            "create table {schema}.\"T_{i}\" (c{i} int, shared_col int);"
        ));
    }
    let source = create_source(&sql).await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;

    let pages: Vec<TableSummary> = s.all_pages(&format!("/v1/resources/{rid}/tables"), 7).await;
    let ids: Vec<TableId> = pages.iter().map(|t| t.id).collect();
    let unique: BTreeSet<&TableId> = ids.iter().collect();
    assert_eq!(ids.len(), 250, "every table once");
    assert_eq!(unique.len(), 250, "no table twice");
    let whole = s.tables(rid).await;
    assert_eq!(
        whole.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids,
        "pages concatenate to the whole, in order"
    );

    let filtered: Vec<TableSummary> = s
        .all_pages(&format!("/v1/resources/{rid}/tables?schema=A"), 7)
        .await;
    assert_eq!(filtered.len(), 84);

    let changes: Vec<StoredChange> = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 7)
        .await;
    let change_ids: BTreeSet<ChangeId> = changes.iter().map(|c| c.id).collect();
    assert_eq!(changes.len(), 253, "250 tables and 3 schemas");
    assert_eq!(change_ids.len(), 253);

    let hits: Vec<SearchHit> = s.all_pages("/v1/search?q=shared_col", 7).await;
    let hit_tables: BTreeSet<TableId> = hits.iter().map(|h| h.table_id).collect();
    assert_eq!(hits.len(), 250);
    assert_eq!(hit_tables.len(), 250);
}

#[tokio::test]
async fn search_finds_tables_and_columns_in_the_callers_tenant_only() {
    let s = scanner().await;
    let source = create_source(
        "create table invoices (id int, invoice_total numeric);
         create table people (id int, \"Invoice_Ref\" int);
         create table other (id int);",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let hits: Page<SearchHit> = s.get("/v1/search?q=INVOICE").await;
    let found: BTreeSet<(SearchHitKind, &str, &str)> = hits
        .items
        .iter()
        .map(|h| (h.kind, h.table.as_str(), h.name.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (SearchHitKind::Table, "invoices", "invoices"),
            (SearchHitKind::Column, "invoices", "invoice_total"),
            (SearchHitKind::Column, "people", "Invoice_Ref"),
        ]
        .into()
    );
    let hit = &hits.items[0];
    assert_eq!(hit.resource_id, rid);
    assert_eq!(hit.database, source);
    // Wildcards are literal.
    let literal: Page<SearchHit> = s.get("/v1/search?q=%25%25%25").await;
    assert!(literal.items.is_empty(), "{literal:?}");
    // Another tenant sees nothing.
    let other: Page<SearchHit> = s.get_as("globex", "/v1/search?q=invoice").await;
    assert!(other.items.is_empty(), "{other:?}");
    // Too short to use the trigram index (a problem answer, so the raw call).
    let (status, _, _) = s
        .app
        .call(TENANT, Method::GET, "/v1/search?q=in", None)
        .await
        .unwrap();
    assert_eq!(status, 400);

    // The search predicate can use the trigram indexes (forced, since the test tables are
    // tiny; catalog_columns has no other index on its name or tenant, so at scale it is the
    // trigram index or a scan of every column).
    let mut conn = s.app.db.acquire().await.unwrap();
    sqlx::query("set enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (table, index) in [
        ("catalog_tables", "catalog_tables_name_trgm"),
        ("catalog_columns", "catalog_columns_name_trgm"),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "explain select * from {table} where name ilike '%invoice%'"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert!(plan.join("\n").contains(index), "{plan:?}");
    }
    sqlx::query("reset enable_seqscan")
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn search_ranks_exact_names_first_matches_comments_and_filters() {
    let s = scanner().await;
    let source = create_source(
        "create table orders_archive (id int);
         create table orders (id int);
         create table notes (body text);
         comment on column notes.body is 'Free text about the ORDERS';
         create table zz (orders int);",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let other = create_source("create table orders (id int);")
        .await
        .unwrap();
    let other_rid = s.register("postgres", &other, 5432, Value::Null).await;
    s.sync(other_rid).await;

    let path = format!("/v1/search?q=orders&resource_id={rid}");
    let hits: Vec<SearchHit> = s.all_pages(&path, 1).await;
    let found: Vec<(i32, SearchHitKind, &str, &str)> = hits
        .iter()
        .map(|h| (h.rank, h.kind, h.table.as_str(), h.name.as_str()))
        .collect();
    // Two exact names (tied, then ordered by table id), then a name containing it, then a
    // comment; read in pages of one, so the cursor carries the rank.
    let exact: BTreeSet<_> = found[..2].iter().copied().collect();
    assert_eq!(
        exact,
        [
            (0, SearchHitKind::Column, "zz", "orders"),
            (0, SearchHitKind::Table, "orders", "orders"),
        ]
        .into(),
        "{found:?}"
    );
    assert_eq!(
        found[2..],
        [
            (1, SearchHitKind::Table, "orders_archive", "orders_archive"),
            (2, SearchHitKind::Column, "notes", "body"),
        ],
        "{found:?}"
    );
    assert!(hits.iter().all(|h| h.resource_id == rid));
    let resource: Value = s.get(&format!("/v1/resources/{rid}")).await;
    assert_eq!(hits[0].resource_name, resource["name"].as_str().unwrap());
    assert_eq!(
        hits[3].comment.as_deref(),
        Some("Free text about the ORDERS")
    );

    let tables: Page<SearchHit> = s.get("/v1/search?q=orders&kind=table").await;
    assert_eq!(tables.items.len(), 3, "both resources' tables: {tables:?}");
    assert!(tables.items.iter().all(|h| h.kind == SearchHitKind::Table));
    let columns: Page<SearchHit> = s
        .get(&format!(
            "/v1/search?q=orders&kind=column&resource_id={other_rid}"
        ))
        .await;
    assert!(columns.items.is_empty(), "{columns:?}");

    let (status, _, body) = s
        .app
        .call(TENANT, Method::GET, "/v1/search?q=orders&kind=views", None)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("column"),
        "{body}"
    );
}

#[tokio::test]
async fn changes_filter_by_job_and_kind() {
    let s = scanner().await;
    let source = create_source("create table a (id int);").await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    let first = s.sync(rid).await;
    let second = s
        .change_pg(
            &source,
            rid,
            "alter table a add column b int; create table c (id int);",
        )
        .await;

    let by_first = s.changes_by(rid, &first).await;
    let by_second = s.changes_by(rid, &second).await;
    assert!(!by_first.is_empty());
    assert_eq!(by_first.len() + by_second.len(), s.changes(rid).await.len());
    let added: Vec<StoredChange> = s
        .all_pages(
            &format!(
                "/v1/resources/{rid}/changes?kind=column_added&job_id={}",
                second.id
            ),
            10,
        )
        .await;
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].object_name.as_deref(), Some("b"));

    let (status, _, body) = s
        .app
        .call(
            TENANT,
            Method::GET,
            &format!("/v1/resources/{rid}/changes?kind=column_renamed_twice"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn an_unchanged_catalog_answers_304() {
    let s = scanner().await;
    let source = create_source("create table a (id int); create table b (id int);")
        .await
        .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let table_id = s.tables(rid).await[0].id;
    let paths = [
        format!("/v1/resources/{rid}/tables"),
        format!("/v1/resources/{rid}/schemas"),
        format!("/v1/resources/{rid}/changes"),
        format!("/v1/tables/{table_id}"),
        "/v1/search?q=ids_none".to_owned(),
    ];
    // Raw requests: the ETag headers and the empty 304 body are what is under test.
    let get = |path: String, etag: Option<String>| {
        let mut request = s
            .app
            .http
            .get(s.app.url(&path))
            .bearer_auth(s.app.token(TENANT));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            (status, etag, body)
        }
    };
    let mut etags = Vec::new();
    for path in &paths {
        let (status, etag, _) = get(path.clone(), None).await;
        assert_eq!(status, 200, "{path}");
        let etag = etag.unwrap_or_else(|| panic!("{path} sent no ETag"));
        let (status, again, body) = get(path.clone(), Some(etag.clone())).await;
        assert_eq!(status, 304, "{path}");
        assert_eq!(again.as_deref(), Some(etag.as_str()));
        assert!(body.is_empty());
        let (status, _, _) = get(path.clone(), Some("\"something-else\"".into())).await;
        assert_eq!(status, 200, "{path}");
        etags.push(etag);
    }

    // An unchanged resync keeps every tag.
    s.sync(rid).await;
    for (path, etag) in paths.iter().zip(&etags) {
        let (status, _, _) = get(path.clone(), Some(etag.clone())).await;
        assert_eq!(status, 304, "{path} after an unchanged resync");
    }

    // A change moves the listing's tag.
    run_pg(&source, "create table c (id int)").await;
    s.sync(rid).await;
    let (status, etag, _) = get(paths[0].clone(), Some(etags[0].clone())).await;
    assert_eq!(status, 200);
    assert_ne!(etag.unwrap(), etags[0]);
}

#[tokio::test]
async fn another_tenants_catalog_is_not_found() {
    let s = scanner().await;
    let source = create_source("create table a (id int);").await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let table_id = s.tables(rid).await[0].id;
    for path in [
        format!("/v1/resources/{rid}/tables"),
        format!("/v1/resources/{rid}/schemas"),
        format!("/v1/resources/{rid}/changes"),
        format!("/v1/tables/{table_id}"),
    ] {
        // Raw: the status and the problem+json content type are what is under test.
        let (status, content_type, _) = s
            .app
            .call("globex", Method::GET, &path, None)
            .await
            .unwrap();
        assert_eq!(status, 404, "{path}");
        assert_eq!(content_type, "application/problem+json");
    }
}
