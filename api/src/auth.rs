//! Who is calling, for which tenant, and what they may do.
//!
//! A bearer JWT carries the subject, the tenant (under a configurable claim name) and a role.
//! [`JwtVerifier`] checks it as configured (algorithm pinned, `exp` required, `nbf`, `iss`,
//! `aud`, a maximum lifetime, no `crit` header); the extractors turn it into a [`Tenant`]
//! whose type says what the handler needs: `Tenant` (alias of `Tenant<Read>`) reads,
//! `Tenant<Operate>` also syncs, cancels and retries, `Tenant<Manage>` also changes resources.
//! A handler that forgets to ask for a permission gets read access, never more.
//!
//! `/internal/*` routes take no token but an internal API key ([`InternalCaller`]), compared in
//! constant time against every configured key; neither credential works on the other's routes.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use metasync_shared::db::audit::Actor;
use metasync_shared::ids::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::error::ApiError;
use crate::state::AppState;

/// What a token's `role` claim grants. Each tenant role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads resources, jobs and the catalog of its tenant.
    Viewer,
    /// Also syncs, cancels and retries.
    Operator,
    /// Also creates, changes and deletes resources.
    Admin,
    /// A fleet operator's tool: no tenant, fleet-wide reads only.
    Fleet,
}

impl Role {
    /// The claim value, as tokens spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Fleet => "fleet",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            "fleet" => Ok(Self::Fleet),
            _ => Err(format!(
                "unknown role {s:?}: expected viewer, operator, admin or fleet"
            )),
        }
    }
}

/// The claims of a verified token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who is calling (recorded with every change they make).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// What the caller may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Everything else, including the tenant under its configured claim name.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
    /// What the caller may do.
    pub role: Role,
    /// The tenant whose data the caller acts on; `None` only for [`Role::Fleet`].
    pub tenant: Option<TenantId>,
}

/// How tokens are checked. Built once from the settings (see `config::JwtArgs`).
#[derive(Debug, Clone)]
pub struct JwtPolicy {
    /// The one algorithm accepted.
    pub algorithm: Algorithm,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set; without it an `aud` claim is ignored.
    pub audience: Option<String>,
    /// The longest lifetime a token may have (`exp - iat`, or `exp - now` without `iat`).
    pub max_lifetime: Duration,
    /// The claim that names the tenant.
    pub tenant_claim: String,
}

impl Default for JwtPolicy {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::HS256,
            issuer: None,
            audience: None,
            max_lifetime: Duration::from_secs(24 * 3600),
            tenant_claim: "tenant".to_owned(),
        }
    }
}

/// Where verification keys come from.
enum KeySource {
    /// HS256: one shared secret (it can also sign, for `metasync-api token` and tests).
    Secret {
        decoding: DecodingKey,
        encoding: EncodingKey,
    },
    /// RS256/ES256: one public key from a PEM file.
    Pem(DecodingKey),
    /// RS256/ES256: a JWKS file, keys chosen by `kid`, re-read when a token names an
    /// unknown `kid` (at most once per [`JWKS_RELOAD_EVERY`]), so keys rotate without a restart.
    Jwks {
        path: PathBuf,
        /// The keys, and when an unknown `kid` last made us re-read the file.
        keys: Mutex<(JwkSet, Option<Instant>)>,
    },
}

const JWKS_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Verifies bearer tokens (and, with an HS256 secret, issues them).
#[derive(Clone)]
pub struct JwtVerifier {
    policy: Arc<JwtPolicy>,
    keys: Arc<KeySource>,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A key setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl JwtVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], policy: JwtPolicy) -> Self {
        let keys = KeySource::Secret {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
        };
        Self::with(
            JwtPolicy {
                algorithm: Algorithm::HS256,
                ..policy
            },
            keys,
        )
    }

    /// RS256 or ES256 with public keys from `path`: a PEM public key, or a JWKS document.
    pub fn public_keys(path: PathBuf, policy: JwtPolicy) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| KeyError(format!("reading {}: {e}", path.display())))?;
        let keys = if text.trim_start().starts_with('{') {
            let set = parse_jwks(&text, &path)?;
            KeySource::Jwks {
                path,
                keys: Mutex::new((set, None)),
            }
        } else {
            let key = match policy.algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(text.as_bytes()),
                Algorithm::ES256 => DecodingKey::from_ec_pem(text.as_bytes()),
                other => return Err(KeyError(format!("{other:?} does not use a public key"))),
            }
            .map_err(|e| KeyError(format!("{}: not a usable public key: {e}", path.display())))?;
            KeySource::Pem(key)
        };
        Ok(Self::with(policy, keys))
    }

    fn with(policy: JwtPolicy, keys: KeySource) -> Self {
        let mut validation = Validation::new(policy.algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        match &policy.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &policy.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Self {
            policy: Arc::new(policy),
            keys: Arc::new(keys),
            validation,
        }
    }

    /// The policy tokens are checked against.
    pub fn policy(&self) -> &JwtPolicy {
        &self.policy
    }

    /// Issues a token for `subject` with `role` in `tenant` (none for [`Role::Fleet`]), valid
    /// for `ttl`. Only with an HS256 secret; a development convenience, not an identity provider.
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        tenant: Option<&str>,
        ttl: Duration,
    ) -> Result<String, KeyError> {
        let now = unix_now();
        let mut other = BTreeMap::new();
        if let Some(tenant) = tenant {
            other.insert(self.policy.tenant_claim.clone(), tenant.into());
        }
        self.sign(&Claims {
            sub: subject.to_owned(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            role: Some(role),
            other,
        })
    }

    /// Signs arbitrary claims with the HS256 secret (tests use it for hostile tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        self.sign_with(&Header::new(Algorithm::HS256), claims)
    }

    /// Signs arbitrary claims under an arbitrary header with the HS256 secret.
    pub fn sign_with(&self, header: &Header, claims: &Claims) -> Result<String, KeyError> {
        let KeySource::Secret { encoding, .. } = &*self.keys else {
            return Err(KeyError(
                "only an HS256 secret can issue tokens; use your identity provider".into(),
            ));
        };
        jsonwebtoken::encode(header, claims, encoding).map_err(|e| KeyError(e.to_string()))
    }

    /// Verifies `token` and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = || ApiError::Unauthorized("the bearer token is invalid");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.crit.is_some() {
            return Err(ApiError::Unauthorized(
                "the bearer token has a critical header this server does not understand",
            ));
        }
        let key = self
            .decoding_key(header.kid.as_deref())
            .ok_or_else(invalid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("the bearer token has expired")
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    ApiError::Unauthorized("the bearer token is not valid yet")
                }
                _ => invalid(),
            })?
            .claims;
        self.caller(claims)
    }

    fn caller(&self, claims: Claims) -> Result<Caller, ApiError> {
        let now = unix_now();
        let leeway = self.validation.leeway;
        let issued = match claims.iat {
            Some(iat) if iat > now + leeway => {
                return Err(ApiError::Unauthorized(
                    "the bearer token is issued in the future",
                ));
            }
            Some(iat) => iat,
            None => now,
        };
        if claims.exp.saturating_sub(issued) > self.policy.max_lifetime.as_secs() + leeway {
            return Err(ApiError::Unauthorized(
                "the bearer token's lifetime exceeds the maximum this server accepts",
            ));
        }
        // A token may not pass itself off as the internal API key in the audit log.
        if claims.sub.is_empty()
            || claims.sub.len() > 256
            || claims.sub.chars().any(char::is_control)
            || claims.sub.starts_with(Actor::INTERNAL_KEY_PREFIX)
        {
            return Err(ApiError::Unauthorized(
                "the bearer token's subject is invalid",
            ));
        }
        let role = claims
            .role
            .ok_or(ApiError::Unauthorized("the bearer token has no role"))?;
        let tenant = match claims.other.get(&self.policy.tenant_claim) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(name)) => Some(
                TenantId::parse(name)
                    .map_err(|_| ApiError::Unauthorized("the bearer token's tenant is invalid"))?,
            ),
            Some(_) => {
                return Err(ApiError::Unauthorized(
                    "the bearer token's tenant is invalid",
                ));
            }
        };
        match (role, &tenant) {
            (Role::Fleet, Some(_)) => Err(ApiError::Unauthorized("a fleet token names no tenant")),
            (Role::Fleet, None) => Ok(Caller {
                subject: claims.sub,
                role,
                tenant,
            }),
            (_, None) => Err(ApiError::Unauthorized("the bearer token names no tenant")),
            (_, Some(_)) => Ok(Caller {
                subject: claims.sub,
                role,
                tenant,
            }),
        }
    }

    fn decoding_key(&self, kid: Option<&str>) -> Option<DecodingKey> {
        match &*self.keys {
            KeySource::Secret { decoding, .. } => Some(decoding.clone()),
            KeySource::Pem(key) => Some(key.clone()),
            KeySource::Jwks { path, keys } => {
                let kid = kid?;
                let mut guard = keys
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let may_reload = guard.1.is_none_or(|at| at.elapsed() >= JWKS_RELOAD_EVERY);
                if guard.0.find(kid).is_none() && may_reload {
                    // An unknown kid may be a key rotated in since the last read.
                    guard.1 = Some(Instant::now());
                    match std::fs::read_to_string(path)
                        .map_err(|e| KeyError(e.to_string()))
                        .and_then(|text| parse_jwks(&text, path))
                    {
                        Ok(set) => guard.0 = set,
                        Err(e) => tracing::warn!(error = %e, "re-reading the JWKS file failed"),
                    }
                }
                let jwk = guard.0.find(kid)?;
                DecodingKey::from_jwk(jwk).ok()
            }
        }
    }
}

fn parse_jwks(text: &str, path: &std::path::Path) -> Result<JwkSet, KeyError> {
    serde_json::from_str(text)
        .map_err(|e| KeyError(format!("{}: not a JWKS document: {e}", path.display())))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A permission a handler requires; see [`Tenant`].
pub trait Permission: Send + Sync + 'static {
    /// The least role that has it.
    const LEAST_ROLE: Role;
    /// What it allows, for the 403 message.
    const WHAT: &'static str;
}

/// Read resources, jobs and the catalog.
#[derive(Debug)]
pub struct Read;
/// Sync, cancel and retry.
#[derive(Debug)]
pub struct Operate;
/// Create, change and delete resources.
#[derive(Debug)]
pub struct Manage;

impl Permission for Read {
    const LEAST_ROLE: Role = Role::Viewer;
    const WHAT: &'static str = "read tenant data";
}
impl Permission for Operate {
    const LEAST_ROLE: Role = Role::Operator;
    const WHAT: &'static str = "sync, cancel or retry";
}
impl Permission for Manage {
    const LEAST_ROLE: Role = Role::Admin;
    const WHAT: &'static str = "change resources";
}

/// Read the audit log.
#[derive(Debug)]
pub struct ReadAudit;

impl Permission for ReadAudit {
    const LEAST_ROLE: Role = Role::Admin;
    const WHAT: &'static str = "read the audit log";
}

/// The caller's tenant, from a verified bearer token whose role has permission `P`.
#[derive(Debug)]
pub struct Tenant<P: Permission = Read> {
    id: TenantId,
    subject: String,
    _permission: PhantomData<P>,
}

impl<P: Permission> Clone for Tenant<P> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            subject: self.subject.clone(),
            _permission: PhantomData,
        }
    }
}

impl<P: Permission> Tenant<P> {
    /// The tenant every query of the request filters by.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Who is calling.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Who is calling, as the audit log records it.
    pub fn actor(&self) -> Actor {
        Actor::token(&self.subject)
    }
}

impl<P: Permission> FromRequestParts<AppState> for Tenant<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(parts, state)?;
        let Some(id) = caller.tenant else {
            return Err(ApiError::Forbidden(
                "a fleet token names no tenant, so it cannot read tenant data".into(),
            ));
        };
        if caller.role < P::LEAST_ROLE {
            return Err(ApiError::Forbidden(format!(
                "a {} token may not {}: the role {} is needed",
                caller.role.as_str(),
                P::WHAT,
                P::LEAST_ROLE.as_str()
            )));
        }
        Ok(Self {
            id,
            subject: caller.subject,
            _permission: PhantomData,
        })
    }
}

/// A caller with the `fleet` role: may read fleet-wide state (workers, the queue), which
/// belongs to no tenant, and nothing else. Tenant tokens, admins included, are refused: the
/// fleet's state shows every tenant's load.
#[derive(Debug)]
pub struct FleetReader {
    subject: String,
}

impl FleetReader {
    /// Who is calling.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl FromRequestParts<AppState> for FleetReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(parts, state)?;
        if caller.role != Role::Fleet {
            return Err(ApiError::Forbidden(format!(
                "a {} token may not read fleet-wide state: the role fleet is needed",
                caller.role.as_str()
            )));
        }
        Ok(Self {
            subject: caller.subject,
        })
    }
}

fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    state.jwt.verify(bearer(parts)?)
}

/// The credential of `Authorization: Bearer <credential>`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))?;
    Ok(token.trim())
}

/// Shortest internal API key secret accepted.
pub const MIN_INTERNAL_KEY_BYTES: usize = 32;

/// The internal API keys (`METASYNC_INTERNAL_API_KEYS`): `id:secret` pairs, several at once so
/// a key can be rotated without downtime. Only SHA-256 digests of the secrets are kept, and a
/// presented secret is hashed and compared with every key in constant time, so neither the
/// time taken nor an early exit tells how much of it matched, or which key did. Empty: off.
#[derive(Clone, Default)]
pub struct InternalKeys(Arc<[InternalKey]>);

struct InternalKey {
    id: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for InternalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|key| &key.id))
            .finish()
    }
}

impl InternalKeys {
    /// Parses `id:secret[,id:secret…]`. Ids are 1–64 of `A-Z a-z 0-9 . _ -`; secrets at least
    /// [`MIN_INTERNAL_KEY_BYTES`] bytes. Errors never contain a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<InternalKey> = Vec::new();
        for (n, pair) in text.split(',').enumerate() {
            let n = n + 1;
            let (id, secret) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("entry {n} is not `id:secret`"))?;
            let id_ok = (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !id_ok {
                return Err(format!(
                    "entry {n}: the key id must be 1-64 of A-Z a-z 0-9 . _ -"
                ));
            }
            if secret.len() < MIN_INTERNAL_KEY_BYTES {
                return Err(format!(
                    "key {id}: the secret must be at least {MIN_INTERNAL_KEY_BYTES} bytes"
                ));
            }
            if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "key {id}: the secret must not contain spaces or control characters"
                ));
            }
            let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key {id} is given twice"));
            }
            if keys.iter().any(|k| k.digest == digest) {
                return Err(format!("key {id} has the same secret as another key"));
            }
            keys.push(InternalKey {
                id: id.to_owned(),
                digest,
            });
        }
        Ok(Self(keys.into()))
    }

    /// Whether no key is configured (the internal routes then accept nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The id of the key whose secret is `presented`, comparing with every key.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // 1 + the index of the matching key; 0 for none.
        let mut matched = 0u32;
        for (i, key) in self.0.iter().enumerate() {
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            matched.conditional_assign(&index, key.digest.ct_eq(&digest));
        }
        let index = usize::try_from(matched.checked_sub(1)?).ok()?;
        self.0.get(index).map(|key| key.id.as_str())
    }
}

/// A caller of an `/internal/*` route, authenticated by an internal API key sent as
/// `Authorization: Bearer <secret>`. A JWT is not a key, so it is refused here like any wrong
/// secret (and a key is no JWT, so `/v1` refuses it).
#[derive(Debug, Clone)]
pub struct InternalCaller {
    key_id: String,
}

impl InternalCaller {
    /// The id of the key the caller presented (never the secret).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Who is calling, as the audit log records it: `internal-key:<id>`.
    pub fn actor(&self) -> Actor {
        Actor::internal_key(&self.key_id)
    }
}

impl FromRequestParts<AppState> for InternalCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(parts)?;
        if state.internal_keys.is_empty() {
            return Err(ApiError::Unauthorized(
                "no internal API key is configured on this server",
            ));
        }
        let key_id = state
            .internal_keys
            .verify(presented)
            .ok_or(ApiError::Unauthorized("the internal API key is invalid"))?;
        Ok(Self {
            key_id: key_id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;

    use super::*;

    const SECRET: &[u8] = b"unit-test-secret-that-is-long-enough-0123456789";
    // Test-only P-256 keys, generated for these tests and used nowhere else.
    const EC_KEY_1: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFw6J7n7C+KtQErS+
/bsj2o729UF/gr9moKcIvq0ZL8GhRANCAARCbUcL6Pci2q1EZlY08ldRTK3nczXv
AvryIINDf/2wlNZcQHonKcfHUJ0pGsC+4/t98y9lv3Zp4wuS6gmKLKdb
-----END PRIVATE KEY-----";
    const EC_KEY_2: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSDbfnRDNx/QGPj1K
OMFqA0F3LmDdYIlLWE8NY3YOJ0mhRANCAARnfQj4DVKCdZXvvbY9Lbq2Vmd3Rf1V
dPy1JMuGdMFw1ahL6h4/aivzOMZesC/p2rzErnzgkx6E0glNcSyd4LjO
-----END PRIVATE KEY-----";

    fn claims(role: Option<Role>, tenant: Option<serde_json::Value>) -> Claims {
        let now = unix_now();
        let mut other = BTreeMap::new();
        if let Some(tenant) = tenant {
            other.insert("tenant".to_owned(), tenant);
        }
        Claims {
            sub: "alice".into(),
            exp: now + 600,
            iat: Some(now),
            role,
            other,
        }
    }

    fn admin() -> Claims {
        claims(Some(Role::Admin), Some("acme".into()))
    }

    fn refused(verifier: &JwtVerifier, token: &str) -> String {
        match verifier.verify(token) {
            Err(ApiError::Unauthorized(why)) => why.to_owned(),
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn the_jwt_matrix() {
        let v = JwtVerifier::hs256(SECRET, JwtPolicy::default());
        let now = unix_now();
        let ok = v.verify(&v.sign(&admin()).unwrap()).unwrap();
        assert_eq!(
            (ok.role, ok.tenant.unwrap().as_str()),
            (Role::Admin, "acme")
        );

        let with = |edit: &dyn Fn(&mut Claims)| {
            let mut c = admin();
            edit(&mut c);
            v.sign(&c).unwrap()
        };
        // Any `aud` or `iss` is fine while none is configured.
        let aud = with(&|c| {
            c.other.insert("aud".into(), "someone".into());
            c.other.insert("iss".into(), "anyone".into());
        });
        assert!(v.verify(&aud).is_ok());

        let cases: Vec<(&str, String)> = vec![
            (
                "expired",
                with(&|c| {
                    c.iat = Some(now - 7200);
                    c.exp = now - 3600;
                }),
            ),
            (
                "future nbf",
                with(&|c| {
                    c.other.insert("nbf".into(), (now + 3600).into());
                }),
            ),
            (
                "exp in 2200",
                with(&|c| {
                    c.exp = 7_258_118_400;
                }),
            ),
            (
                "exp in 2200 without iat",
                with(&|c| {
                    c.iat = None;
                    c.exp = 7_258_118_400;
                }),
            ),
            (
                "iat in the future",
                with(&|c| {
                    c.iat = Some(now + 3600);
                    c.exp = now + 4000;
                }),
            ),
            ("no role", with(&|c| c.role = None)),
            (
                "no tenant",
                with(&|c| {
                    c.other.remove("tenant");
                }),
            ),
            (
                "blank tenant",
                with(&|c| {
                    c.other.insert("tenant".into(), "".into());
                }),
            ),
            (
                "tenant with a newline",
                with(&|c| {
                    c.other.insert("tenant".into(), "ac\nme".into());
                }),
            ),
            (
                "tenant with a NUL",
                with(&|c| {
                    c.other.insert("tenant".into(), "ac\0me".into());
                }),
            ),
            (
                "10,000-char tenant",
                with(&|c| {
                    c.other.insert("tenant".into(), "x".repeat(10_000).into());
                }),
            ),
            (
                "numeric tenant",
                with(&|c| {
                    c.other.insert("tenant".into(), 7.into());
                }),
            ),
            ("blank subject", with(&|c| c.sub = String::new())),
            ("fleet with a tenant", with(&|c| c.role = Some(Role::Fleet))),
            (
                "crit header",
                v.sign_with(
                    &Header {
                        crit: Some(vec!["exp".into()]),
                        ..Header::new(Algorithm::HS256)
                    },
                    &admin(),
                )
                .unwrap(),
            ),
            (
                "HS512",
                v.sign_with(&Header::new(Algorithm::HS512), &admin())
                    .unwrap(),
            ),
            (
                "another secret",
                JwtVerifier::hs256(
                    b"another-secret-that-is-long-enough-0123456789",
                    JwtPolicy::default(),
                )
                .sign(&admin())
                .unwrap(),
            ),
            ("garbage", "not.a.jwt".to_owned()),
        ];
        for (case, token) in &cases {
            assert!(
                matches!(v.verify(token), Err(ApiError::Unauthorized(_))),
                "{case} was not refused"
            );
        }
        // An unknown role is not a role.
        let mut raw = serde_json::to_value(admin()).unwrap();
        raw["role"] = "root".into();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &raw,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        refused(&v, &token);
        // A fleet token names no tenant.
        let fleet = v
            .verify(&v.sign(&claims(Some(Role::Fleet), None)).unwrap())
            .unwrap();
        assert_eq!((fleet.role, fleet.tenant), (Role::Fleet, None));
    }

    #[test]
    fn issuer_audience_and_tenant_claim_are_checked_as_configured() {
        let v = JwtVerifier::hs256(
            SECRET,
            JwtPolicy {
                issuer: Some("https://idp.example".into()),
                audience: Some("metasync".into()),
                tenant_claim: "org".into(),
                ..JwtPolicy::default()
            },
        );
        let token = |iss: Option<&str>, aud: Option<&str>, claim: &str| {
            let mut c = claims(Some(Role::Viewer), None);
            c.other.insert(claim.into(), "acme".into());
            if let Some(iss) = iss {
                c.other.insert("iss".into(), iss.into());
            }
            if let Some(aud) = aud {
                c.other.insert("aud".into(), aud.into());
            }
            v.sign(&c).unwrap()
        };
        let good = v
            .verify(&token(Some("https://idp.example"), Some("metasync"), "org"))
            .unwrap();
        assert_eq!(good.tenant.unwrap().as_str(), "acme");
        refused(&v, &token(None, Some("metasync"), "org"));
        refused(
            &v,
            &token(Some("https://evil.example"), Some("metasync"), "org"),
        );
        refused(&v, &token(Some("https://idp.example"), None, "org"));
        refused(
            &v,
            &token(Some("https://idp.example"), Some("other"), "org"),
        );
        refused(
            &v,
            &token(Some("https://idp.example"), Some("metasync"), "tenant"),
        );
    }

    #[test]
    fn es256_keys_come_from_a_pem_or_a_jwks_that_rotates_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("metasync-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = JwtPolicy {
            algorithm: Algorithm::ES256,
            ..JwtPolicy::default()
        };
        let signer = |pem: &str, kid: Option<&str>| {
            let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
            let header = Header {
                kid: kid.map(str::to_owned),
                ..Header::new(Algorithm::ES256)
            };
            jsonwebtoken::encode(&header, &admin(), &key).unwrap()
        };
        let jwk = |pem: &str, kid: &str| {
            let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            jwk
        };
        let jwks = dir.join("keys.json");
        let write = |keys: Vec<Jwk>| {
            std::fs::write(&jwks, serde_json::to_string(&JwkSet { keys }).unwrap()).unwrap();
        };
        write(vec![jwk(EC_KEY_1, "k1")]);
        let v = JwtVerifier::public_keys(jwks.clone(), policy.clone()).unwrap();
        assert!(v.verify(&signer(EC_KEY_1, Some("k1"))).is_ok());
        refused(&v, &signer(EC_KEY_1, None));
        refused(&v, &signer(EC_KEY_2, Some("k1")));
        // The identity provider rotates in k2: no restart needed.
        write(vec![jwk(EC_KEY_1, "k1"), jwk(EC_KEY_2, "k2")]);
        assert!(v.verify(&signer(EC_KEY_2, Some("k2"))).is_ok());
        // An HS256 token signed with the public key's bytes is the classic confusion attack.
        refused(
            &v,
            &JwtVerifier::hs256(SECRET, JwtPolicy::default())
                .sign(&admin())
                .unwrap(),
        );
        // A verifier with public keys cannot mint tokens.
        assert!(
            v.issue("x", Role::Admin, Some("acme"), Duration::from_secs(60))
                .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn internal_keys_parse_strictly_and_verify_every_key() {
        let a = "a".repeat(32);
        let b = "b".repeat(40);
        let keys = InternalKeys::parse(&format!("old:{a}, new:{b}")).unwrap();
        assert_eq!(keys.verify(&a), Some("old"));
        assert_eq!(keys.verify(&b), Some("new"));
        assert_eq!(keys.verify(&"a".repeat(31)), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(format!("{keys:?}"), r#"["old", "new"]"#);
        for (bad, said) in [
            (format!("k:{}", "s".repeat(31)), "at least 32 bytes"),
            ("s".repeat(40), "not `id:secret`"),
            (format!(":{a}"), "key id"),
            (format!("k k:{a}"), "key id"),
            (format!("k:{a},k:{b}"), "twice"),
            (format!("k:{a},j:{a}"), "same secret"),
            (format!("k:{a},"), "not `id:secret`"),
        ] {
            let err = InternalKeys::parse(&bad).unwrap_err();
            assert!(err.contains(said), "{bad}: {err}");
            assert!(!err.contains(&a) && !err.contains(&b), "{err}");
        }
    }

    #[test]
    fn a_token_cannot_claim_an_internal_key_subject() {
        let v = JwtVerifier::hs256(SECRET, JwtPolicy::default());
        let mut c = claims(Some(Role::Admin), Some("acme".into()));
        c.sub = "internal-key:platform".into();
        assert!(v.verify(&v.sign(&c).unwrap()).is_err());
    }
}
