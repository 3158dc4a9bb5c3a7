//! Typed ids. Every id that crosses a function boundary has its own type, so no function
//! takes two or three bare `Uuid`s in a row and a job id can never be passed as a resource id.
//!
//! Each is transparent to serde and sqlx (a `uuid` column, a JSON string), so the wire and
//! storage formats are exactly those of the bare value.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            sqlx::Type, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUID v7), so keyset pages follow creation order.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// The bare value, for binding into arrays and for logs.
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id!(
    /// A registered source (`resources.id`).
    ResourceId
);
uuid_id!(
    /// A sync job (`jobs.id`); also the whole Redis payload of its delivery.
    JobId
);
uuid_id!(
    /// A batch of jobs enqueued by one `POST /v1/syncs` (`batches.id`).
    BatchId
);
uuid_id!(
    /// A stored schema (`catalog_schemas.id`).
    SchemaId
);
uuid_id!(
    /// A stored table or view (`catalog_tables.id`); stable across resyncs while it is unchanged.
    TableId
);
uuid_id!(
    /// One row of a resource's change history (`catalog_changes.id`).
    ChangeId
);
uuid_id!(
    /// A test-connection request (`connection_tests.id`); for an unsaved definition, also the
    /// resource id its password is sealed for.
    TestId
);
uuid_id!(
    /// A tenant's webhook subscription (`webhooks.id`).
    WebhookId
);
uuid_id!(
    /// One event to one webhook (`webhook_deliveries.id`); also its `webhook-id` header.
    DeliveryId
);

/// The tenant that owns a row. Taken from the caller's token; every tenant-owned query
/// filters by it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps a tenant name that the caller has already authenticated.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// Validates a tenant name from outside (a token claim, an internal route's path): 1 to
    /// [`TenantId::MAX_LEN`] characters of ASCII letters, digits and `.`, `_`, `-`, `:`, `@`,
    /// starting with a letter or digit. Anything else (blank, control characters, a NUL, a
    /// 10,000-character name) is refused before it reaches a query, a log or a label.
    pub fn parse(name: &str) -> Result<Self, InvalidTenant> {
        let valid_char =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@');
        let starts_well = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if name.len() <= Self::MAX_LEN && starts_well && name.chars().all(valid_char) {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidTenant)
        }
    }

    /// The longest tenant name [`TenantId::parse`] accepts.
    pub const MAX_LEN: usize = 64;

    /// The tenant name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tenant name that [`TenantId::parse`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a tenant is 1 to 64 ASCII letters, digits, '.', '_', '-', ':' or '@', starting with a letter or digit"
)]
pub struct InvalidTenant;

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_transparent_on_the_wire() {
        let id = JobId::new_v7();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.uuid()));
        assert_eq!(serde_json::from_str::<JobId>(&json).unwrap(), id);
        assert_eq!(
            serde_json::to_string(&TenantId::new("acme")).unwrap(),
            "\"acme\""
        );
    }

    #[test]
    fn tenant_names_from_outside_are_validated() {
        for good in ["acme", "a", "team-7.prod", "org:acme@eu", &"x".repeat(64)] {
            assert_eq!(TenantId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            " acme",
            "-acme",
            "ac me",
            "acme\n",
            "ac\0me",
            "é",
            &"x".repeat(65),
        ] {
            assert_eq!(TenantId::parse(bad), Err(InvalidTenant), "{bad:?}");
        }
    }
}
