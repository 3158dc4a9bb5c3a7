//! Test-connection requests (`connection_tests`): the API stores one with its sealed password,
//! a worker reads it by id (the only thing Redis carries) and writes the result, the API reads
//! the result and deletes the row. Rows live seconds; [`prune_expired`] clears what a dead API
//! process left.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use sqlx::types::Json;

use crate::connection_test::ConnectionTestResult;
use crate::custody::{ConnectionTarget, RecordFormat, SealedPassword};
use crate::domain::ResourceKind;
use crate::ids::{ResourceId, TenantId, TestId};
use crate::tls::SourceTls;

/// An unsaved definition to test, validated by the caller.
#[derive(Debug)]
pub struct NewTest<'a> {
    /// The test's id; also the resource id its password is sealed for.
    pub id: TestId,
    /// The source's engine.
    pub kind: ResourceKind,
    /// Host as given.
    pub host: &'a str,
    /// Port as given.
    pub port: i32,
    /// The database to connect to.
    pub database: &'a str,
    /// Login role.
    pub username: &'a str,
    /// How to secure the connection.
    pub tls: &'a SourceTls,
    /// The password, sealed for [`NewTest::target`].
    pub password: SealedPassword,
}

impl NewTest<'_> {
    /// What an unsaved definition's password is sealed for: the test's id stands for the
    /// resource id.
    pub fn target<'t>(&'t self, tenant: &'t TenantId) -> ConnectionTarget<'t> {
        ConnectionTarget {
            tenant,
            resource: ResourceId(self.id.uuid()),
            kind: self.kind,
            host: self.host,
            port: self.port,
            username: self.username,
            database: self.database,
            tls: self.tls,
        }
    }
}

/// Stores a test of an unsaved definition, answered by `expires_at` or not at all.
pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    new: &NewTest<'_>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into connection_tests (id, tenant_id, kind, host, port, database, username, tls,
                                       password_sealed, password_key_id, expires_at,
                                       password_format)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(new.id)
    .bind(tenant)
    .bind(new.kind)
    .bind(new.host)
    .bind(new.port)
    .bind(new.database)
    .bind(new.username)
    .bind(Json(new.tls))
    .bind(&new.password.record)
    .bind(&new.password.key_id)
    .bind(expires_at)
    .bind(new.password.format)
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a test of the tenant's stored resource as it is now (its sealed password copied
/// in the database, never through this process). `false` when the tenant has no such resource.
pub async fn insert_for_resource(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: TestId,
    resource: ResourceId,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into connection_tests (id, tenant_id, resource_id, kind, host, port, database,
                                       username, tls, password_sealed, password_key_id,
                                       password_format, expires_at)
         select $1, tenant_id, id, kind, host, port, database, username, tls, password_sealed,
                password_key_id, password_format, $4
         from resources where tenant_id = $2 and id = $3",
    )
    .bind(id)
    .bind(tenant)
    .bind(resource)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A test as a worker reads it: the definition and its sealed password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TestRequest {
    /// The test's id.
    pub id: TestId,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The stored resource tested; `None` for an unsaved definition.
    pub resource_id: Option<ResourceId>,
    /// The source's engine.
    pub kind: ResourceKind,
    /// Host as given.
    pub host: String,
    /// Port as given.
    pub port: i32,
    /// The database to connect to.
    pub database: String,
    /// Login role.
    pub username: String,
    /// How to secure the connection.
    pub tls: Json<SourceTls>,
    /// The sealed password's record.
    pub password_sealed: Vec<u8>,
    /// The master key that sealed it.
    pub password_key_id: String,
    /// What the record's associated data covers.
    pub password_format: RecordFormat,
    /// When the API stops waiting.
    pub expires_at: DateTime<Utc>,
}

impl TestRequest {
    /// What the password is sealed for: the stored resource's target, or for an unsaved
    /// definition the test's own id in the resource's place.
    pub fn target(&self) -> ConnectionTarget<'_> {
        ConnectionTarget {
            tenant: &self.tenant_id,
            resource: self.resource_id.unwrap_or(ResourceId(self.id.uuid())),
            kind: self.kind,
            host: &self.host,
            port: self.port,
            username: &self.username,
            database: &self.database,
            tls: &self.tls.0,
        }
    }

    /// The sealed password as [`crate::custody::OpeningKeys::open`] takes it.
    pub fn sealed_password(&self) -> SealedPassword {
        SealedPassword {
            key_id: self.password_key_id.clone(),
            record: self.password_sealed.clone(),
            format: self.password_format,
        }
    }
}

/// The test `id` if it is still waiting for an answer and not past its deadline.
pub async fn pending(
    db: impl PgExecutor<'_>,
    id: TestId,
) -> Result<Option<TestRequest>, sqlx::Error> {
    sqlx::query_as(
        "select id, tenant_id, resource_id, kind, host, port, database, username, tls,
                password_sealed, password_key_id, password_format, expires_at
         from connection_tests
         where id = $1 and result is null and expires_at > now()",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Records a worker's answer (nothing when the API has given up and deleted the row).
pub async fn finish(
    db: impl PgExecutor<'_>,
    id: TestId,
    result: &ConnectionTestResult,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update connection_tests set result = $2, finished_at = now()
         where id = $1 and result is null",
    )
    .bind(id)
    .bind(Json(result))
    .execute(db)
    .await?;
    Ok(())
}

/// The answer to the tenant's test `id`, once a worker has written it.
pub async fn result(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: TestId,
) -> Result<Option<ConnectionTestResult>, sqlx::Error> {
    let found: Option<Option<Json<ConnectionTestResult>>> =
        sqlx::query_scalar("select result from connection_tests where tenant_id = $1 and id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(found.flatten().map(|Json(result)| result))
}

/// Deletes the tenant's test `id` (answered or abandoned).
pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: TestId,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from connection_tests where tenant_id = $1 and id = $2")
        .bind(tenant)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes tests a minute past their deadline (their API process died while waiting).
pub async fn prune_expired(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("delete from connection_tests where expires_at < now() - interval '1 minute'")
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}
