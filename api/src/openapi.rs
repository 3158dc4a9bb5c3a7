//! The OpenAPI 3.1 document (`GET /openapi.json`, `metasync-api openapi`), generated from the
//! code: every route is registered through utoipa-axum's [`OpenApiRouter`] with `routes!`,
//! which adds the handler to the axum router and its `#[utoipa::path]` to the document in one
//! step, so the two cannot differ. Error responses are the shared components below, one per
//! status of [`ApiError`](crate::error::ApiError), all `application/problem+json`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, response::Response as ResponseDoc};
use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Problem;
use crate::pagination::{Cursor, Limit};
use crate::state::AppState;

/// The document's fixed parts; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "metasync",
        description = "Registers database sources, syncs their schema catalogs and serves them. \
            Every `/v1` route needs a bearer JWT (see the `bearer` scheme); errors are RFC 9457 \
            `application/problem+json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, Limit, Cursor)),
    modifiers(&Components),
    tags(
        (name = "resources", description = "Sources: register, read, change, remove, sync"),
        (name = "jobs", description = "Sync jobs and batches"),
        (name = "catalog", description = "What the syncs stored: schemas, tables, changes, search"),
        (name = "webhooks", description = "HTTP receivers of job outcomes and catalog changes, and their deliveries"),
        (name = "audit", description = "Who changed what in the tenant (admins)"),
        (name = "fleet", description = "Workers and the queue, fleet-wide (the `fleet` role)"),
        (name = "internal", description = "A platform's own system service, with an internal API key"),
        (name = "operations", description = "Probes and this document; no token (metrics are on the operations listener)"),
    ),
)]
struct ApiDoc;

/// Every route of the API, each in the document. The one place routers are merged.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::routes::resources::router())
        .merge(crate::routes::connection_tests::router())
        .merge(crate::routes::jobs::router())
        .merge(crate::routes::catalog::router())
        .merge(crate::routes::health::router())
        .merge(crate::routes::audit::router())
        .merge(crate::routes::fleet::router())
        .merge(crate::routes::webhooks::router())
        .merge(crate::routes::internal::router())
        .routes(routes!(openapi_json))
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| routes().into_openapi())
}

/// The document as pretty-printed JSON with a final newline: what `/openapi.json` serves,
/// `metasync-api openapi` prints and `docs/openapi.json` holds.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .expect("the document serializes");
        text.push('\n');
        text
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
        Edge,
    ),
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
        .into_response()
}

/// Adds what the derive cannot express: the bearer scheme and the problem responses.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with `sub`, `exp`, `role` (`viewer`, `operator`, `admin`) and the \
                         tenant claim; see the README's API section.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            INTERNAL_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An internal API key (`METASYNC_INTERNAL_API_KEYS`), accepted only on \
                         `/internal/*`.",
                    ))
                    .build(),
            ),
        );
        components.responses.extend(problem::all());
    }
}

/// The security scheme's name, as `security(("bearer" = []))` names it.
pub const BEARER: &str = "bearer";
/// The internal API key's scheme, as `security(("internalKey" = []))` names it.
pub const INTERNAL_KEY: &str = "internalKey";

/// The error responses, one component per status, each a [`Problem`].
pub mod problem {
    use super::*;

    fn response(description: &str, headers: &[(&str, &str)]) -> RefOr<ResponseDoc> {
        let headers: serde_json::Map<_, _> = headers
            .iter()
            .map(|(name, description)| {
                (
                    (*name).to_owned(),
                    json!({ "description": description, "schema": { "type": "string" } }),
                )
            })
            .collect();
        let mut doc = json!({
            "description": description,
            "content": {
                "application/problem+json": {
                    "schema": { "$ref": "#/components/schemas/Problem" }
                }
            }
        });
        if !headers.is_empty() {
            doc["headers"] = headers.into();
        }
        RefOr::T(serde_json::from_value(doc).expect("a valid response object"))
    }

    macro_rules! problems {
        ($($(#[$doc:meta])* $name:ident: $description:literal $(, $header:literal = $header_doc:literal)*;)*) => {
            $(
                $(#[$doc])*
                pub struct $name;

                impl<'r> ToResponse<'r> for $name {
                    fn response() -> (&'r str, RefOr<ResponseDoc>) {
                        (stringify!($name), response($description, &[$(($header, $header_doc)),*]))
                    }
                }
            )*

            /// Every problem response, for the document's components.
            pub fn all() -> Vec<(String, RefOr<ResponseDoc>)> {
                vec![$((stringify!($name).to_owned(), <$name as ToResponse>::response().1)),*]
            }
        };
    }

    problems! {
        /// 400.
        BadRequest: "Malformed request: bad JSON, a malformed id or query parameter, a cursor the API did not issue, a NUL character";
        /// 401.
        Unauthorized: "No bearer token, or one that does not verify", "WWW-Authenticate" = "`Bearer`";
        /// 403.
        Forbidden: "The token's role does not allow this, or a tenant quota (the most resources) is used up";
        /// 404.
        NotFound: "No such object in the caller's tenant (another tenant's answers the same)";
        /// 409.
        Conflict: "Conflicts with the current state";
        /// 413.
        PayloadTooLarge: "The body is over 1 MiB";
        /// 414.
        UriTooLong: "The path and query are over 8 KiB";
        /// 415.
        UnsupportedMediaType: "The body is not `application/json`";
        /// 422.
        Unprocessable: "Well-formed but invalid: a missing or unknown field, a value out of range, a refused host, a bad option";
        /// 429.
        TooManyRequests: "A per-tenant rate limit or cap; retry after `Retry-After` seconds", "Retry-After" = "Seconds until it is worth trying again";
        /// 431.
        HeadersTooLarge: "The headers are over 16 KiB";
        /// 503.
        Unavailable: "The catalog database cannot be reached right now", "Retry-After" = "Seconds until it is worth trying again";
        /// 503 of test-connection.
        NoWorker: "No live worker to run the test (nothing was stored or sent), or none took it in time; or the catalog database cannot be reached", "Retry-After" = "Seconds until it is worth trying again";
        /// 504.
        WorkerTimeout: "A worker took the test and did not answer within METASYNC_CONNECTION_TEST_TIMEOUT";
    }
}

fn refs(names: &[&str]) -> BTreeMap<String, RefOr<ResponseDoc>> {
    names
        .iter()
        .map(|name| {
            let status = match *name {
                "BadRequest" => "400",
                "Unauthorized" => "401",
                "Forbidden" => "403",
                "UriTooLong" => "414",
                "HeadersTooLarge" => "431",
                "Unavailable" => "503",
                other => unreachable!("no common status for {other}"),
            };
            (
                status.to_owned(),
                RefOr::Ref(utoipa::openapi::Ref::from_response_name(*name)),
            )
        })
        .collect()
}

/// What any request may get before a handler runs: 400 (a NUL character in the URL), 414
/// and 431 (see [`crate::edge`]).
pub struct Edge;

impl IntoResponses for Edge {
    fn responses() -> BTreeMap<String, RefOr<ResponseDoc>> {
        refs(&["BadRequest", "UriTooLong", "HeadersTooLarge"])
    }
}

/// What every `/v1` route may answer besides its own: [`Edge`], and 401 and 403 from the
/// token, 503 when the catalog database is unreachable.
pub struct Authed;

impl IntoResponses for Authed {
    fn responses() -> BTreeMap<String, RefOr<ResponseDoc>> {
        refs(&[
            "BadRequest",
            "Unauthorized",
            "Forbidden",
            "UriTooLong",
            "HeadersTooLarge",
            "Unavailable",
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The committed copy is what clients and reviewers read; it must be this code's.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == document_json(),
            "docs/openapi.json is not the document this code generates; regenerate it:\n\
             cargo run -q -p metasync-api -- openapi > docs/openapi.json"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operation_ids_and_bearer_on_v1() {
        let document: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{id} twice");
                let secured = operation["security"][0].get(BEARER).is_some();
                assert_eq!(secured, path.starts_with("/v1/"), "{method} {path}");
            }
        }
    }

    /// Routes are registered only through `OpenApiRouter::routes(routes!(…))`, which puts
    /// each in the document too. A route added with axum's own `route`, `nest` or a method
    /// router would be served but undocumented, so none may be.
    #[test]
    fn no_route_is_registered_outside_the_document() {
        fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    found.push((path.display().to_string(), text));
                }
            }
        }
        let mut found = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        let forbidden = [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            "axum::routing",
            "Router::new(",
        ];
        for (path, text) in &found {
            // Unit tests (this one included) register nothing.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (number, line) in code.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for pattern in forbidden {
                    assert!(
                        !code.contains(pattern) || code.contains("OpenApiRouter::new("),
                        "{path}:{}: `{pattern}` registers a route the OpenAPI document does not \
                         see; use `OpenApiRouter::routes(routes!(handler))`",
                        number + 1
                    );
                }
            }
        }
        assert!(found.len() > 10, "read the sources");
    }
}
