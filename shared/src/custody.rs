//! Password custody: the API can seal a source password but never open one; only workers can.
//!
//! - **Sealing** is HPKE (RFC 9180: X25519, HKDF-SHA256, ChaCha20-Poly1305), single shot: each
//!   seal encapsulates a fresh data key to the fleet's public master key, so every resource's
//!   password has its own key, wrapped by the master key. The API holds only the public key
//!   ([`SealingKey`]); workers hold the private keys ([`OpeningKeys`]), several at once while a
//!   rotation runs.
//! - **Binding**: the associated data is the [`ConnectionTarget`] (tenant, resource, kind, host,
//!   port, user, database, TLS mode and CA) and the master key id. A sealed password opens only
//!   for the target it was given for: a changed row (another host, or `tls` weakened), a copied
//!   ciphertext or a `PATCH` of the host without the password again cannot be opened, so a
//!   stored password is never sent anywhere new, nor under laxer TLS. Records name their
//!   [`RecordFormat`]: those sealed before the TLS settings were bound (format 1) still open,
//!   until `rotate-master-key` re-seals them in the current format.
//! - **Key ids** name the master key of each record, so `metasync-worker rotate-master-key`
//!   re-seals every record under a new key while old and new both open. Records sealed by the
//!   earlier AES-256-GCM scheme carry [`LEGACY_KEY_ID`] and open with `METASYNC_SECRET_KEY`
//!   until the rotation has re-sealed them.
//! - **Fingerprints** ([`Fingerprinter`], HMAC-SHA256 under a key of its own) let the API tell
//!   whether a re-sent password differs from the stored one without opening anything.

// Named only to turn on its precomputed tables for hpke's X25519 (see the workspace
// Cargo.toml): hpke enables none, and every password open paid for it.
extern crate x25519_dalek;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::Sha256;

use crate::crypto::SecretBox;
use crate::domain::ResourceKind;
use crate::ids::{ResourceId, TenantId, WebhookId};
use crate::tls::SourceTls;

type Kem = X25519HkdfSha256;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// HPKE's `info`: which protocol and version a record belongs to.
const INFO: &[u8] = b"metasync source password v1";
/// HPKE's `info` of webhook signing secrets.
const WEBHOOK_INFO: &[u8] = b"metasync webhook secret v1";
/// The key id of records sealed by the earlier AES-256-GCM scheme (resource id as AAD).
pub const LEGACY_KEY_ID: &str = "legacy-aes";
/// Longest key id accepted (it is stored beside every record).
const MAX_KEY_ID: usize = 64;

/// Where a password may be sent: everything that decides which server receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTarget<'a> {
    /// The owning tenant.
    pub tenant: &'a TenantId,
    /// The resource.
    pub resource: ResourceId,
    /// The engine (a PostgreSQL password is not offered to a MySQL server).
    pub kind: ResourceKind,
    /// Host as registered.
    pub host: &'a str,
    /// Port as registered.
    pub port: i32,
    /// Login role.
    pub username: &'a str,
    /// Database connected to.
    pub database: &'a str,
    /// How the connection is secured (mode and CA): a password given for `verify-full` is not
    /// sent over `disable`.
    pub tls: &'a SourceTls,
}

impl ConnectionTarget<'_> {
    /// The associated data of a record in `format`: every field length-prefixed, so no two
    /// targets encode alike, and the format's own tag first, so a record cannot be opened as
    /// another format (relabelling a current record as format 1 to drop its TLS binding fails).
    fn associated_data(&self, key_id: &str, format: RecordFormat) -> Vec<u8> {
        let port = self.port.to_string();
        let resource = self.resource.to_string();
        let mut fields: Vec<&str> = vec![
            format.tag(),
            self.tenant.as_str(),
            &resource,
            self.kind.as_str(),
            self.host,
            &port,
            self.username,
            self.database,
        ];
        if format >= RecordFormat::TargetAndTls {
            fields.push(self.tls.mode.as_str());
            // A presence marker, so an absent CA and an empty one could never encode alike.
            match &self.tls.ca {
                None => fields.push("no-ca"),
                Some(ca) => fields.extend(["ca", ca]),
            }
        }
        fields.push(key_id);
        let mut out = Vec::new();
        for field in fields {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// What a sealed record's associated data covers, stored beside it (`password_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::Type)]
#[repr(i16)]
pub enum RecordFormat {
    /// Records sealed before 2026-12-07: the target without its TLS settings. Still opened,
    /// so existing resources keep syncing; `rotate-master-key` re-seals them as
    /// [`RecordFormat::TargetAndTls`]. Until then, their `tls` is not protected by custody.
    Target = 1,
    /// The target and its TLS settings (mode and CA). Every seal writes this format.
    TargetAndTls = 2,
}

impl RecordFormat {
    /// The format every seal writes.
    pub const CURRENT: Self = Self::TargetAndTls;

    fn tag(self) -> &'static str {
        match self {
            Self::Target => "metasync-target-v1",
            Self::TargetAndTls => "metasync-target-v2",
        }
    }
}

/// A sealed password as stored: the master key's id, `encapsulated key || ciphertext`, and the
/// format of its associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPassword {
    /// Which master key sealed it ([`LEGACY_KEY_ID`] for the earlier scheme).
    pub key_id: String,
    /// The record.
    pub record: Vec<u8>,
    /// What its associated data covers (records of the earlier AES scheme bind the resource id
    /// alone, whatever this says).
    pub format: RecordFormat,
}

/// A key setting that cannot be used. Never echoes key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// A stored password that does not open: a wrong or missing key, a record changed in the
/// database, or a target changed without the password being given again.
#[derive(Debug, thiserror::Error)]
#[error(
    "the stored password cannot be opened for this resource's current host, port, user, database and TLS settings \
     (changed without the password, or sealed under a master key this worker lacks): set the password again"
)]
pub struct OpenError;

/// The fleet's public master key: seals, cannot open. Held by the API.
#[derive(Clone)]
pub struct SealingKey {
    id: String,
    public: PublicKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish()
    }
}

impl SealingKey {
    /// Parses `KEY_ID:BASE64_PUBLIC_KEY` (as `metasync-worker keygen` prints it).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (id, bytes) = split_key(text)?;
        let public = PublicKey::from_bytes(&bytes)
            .map_err(|_| KeyError("not an X25519 public key".into()))?;
        Ok(Self { id, public })
    }

    /// The master key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `password` for `target`, in the current [`RecordFormat`].
    pub fn seal(&self, password: &str, target: &ConnectionTarget<'_>) -> SealedPassword {
        self.seal_in_format(password, target, RecordFormat::CURRENT)
    }

    /// Seals `password` for `target` in `format`. Only the tests of the migration need an
    /// earlier format; everything else calls [`SealingKey::seal`].
    #[doc(hidden)]
    pub fn seal_in_format(
        &self,
        password: &str,
        target: &ConnectionTarget<'_>,
        format: RecordFormat,
    ) -> SealedPassword {
        let aad = target.associated_data(&self.id, format);
        SealedPassword {
            key_id: self.id.clone(),
            record: self.seal_record(INFO, password.as_bytes(), &aad),
            format,
        }
    }

    /// Seals a webhook's signing secret for `hook` (its own HPKE `info`, so a sealed secret
    /// never opens as a password nor the other way round).
    pub fn seal_webhook_secret(&self, secret: &str, hook: &WebhookTarget<'_>) -> SealedPassword {
        let aad = hook.associated_data(&self.id);
        SealedPassword {
            key_id: self.id.clone(),
            record: self.seal_record(WEBHOOK_INFO, secret.as_bytes(), &aad),
            format: RecordFormat::CURRENT,
        }
    }

    fn seal_record(&self, info: &[u8], plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &self.public,
            info,
            plain,
            aad,
        )
        .expect("HPKE sealing to a valid public key cannot fail");
        let mut record = encapped.to_bytes().to_vec();
        record.extend_from_slice(&ciphertext);
        record
    }
}

/// What a webhook's secret is bound to: a copied ciphertext or a changed URL does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookTarget<'a> {
    /// The owning tenant.
    pub tenant: &'a TenantId,
    /// The webhook.
    pub webhook: WebhookId,
    /// Where deliveries go.
    pub url: &'a str,
}

impl WebhookTarget<'_> {
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        let webhook = self.webhook.to_string();
        let mut out = Vec::new();
        for field in [
            "metasync-webhook-v1",
            self.tenant.as_str(),
            &webhook,
            self.url,
            key_id,
        ] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// The private master keys, by id: open records, and re-seal them under another key. Held by
/// workers only.
#[derive(Clone, Default)]
pub struct OpeningKeys {
    keys: BTreeMap<String, (PrivateKey, PublicKey)>,
    legacy: Option<SecretBox>,
}

impl std::fmt::Debug for OpeningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("legacy", &self.legacy.is_some())
            .finish()
    }
}

impl OpeningKeys {
    /// Parses `KEY_ID:BASE64_PRIVATE_KEY[,KEY_ID:BASE64_PRIVATE_KEY…]`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, bytes) = split_key(item)?;
            let private = PrivateKey::from_bytes(&bytes)
                .map_err(|_| KeyError(format!("key {id:?} is not an X25519 private key")))?;
            let public = Kem::sk_to_pk(&private);
            if keys.insert(id.clone(), (private, public)).is_some() {
                return Err(KeyError(format!("key id {id:?} is given twice")));
            }
        }
        if keys.is_empty() {
            return Err(KeyError("no key given".into()));
        }
        Ok(Self { keys, legacy: None })
    }

    /// Also opens records of the earlier AES-256-GCM scheme, with its 32-byte key.
    #[must_use]
    pub fn with_legacy(mut self, key: &[u8; 32]) -> Self {
        self.legacy = Some(SecretBox::new(key));
        self
    }

    /// The sealing half of the key `id`, to re-seal under it.
    pub fn sealing_key(&self, id: &str) -> Option<SealingKey> {
        self.keys.get(id).map(|(_, public)| SealingKey {
            id: id.to_owned(),
            public: public.clone(),
        })
    }

    /// Opens `sealed` for `target`.
    pub fn open(
        &self,
        sealed: &SealedPassword,
        target: &ConnectionTarget<'_>,
    ) -> Result<String, OpenError> {
        if sealed.key_id == LEGACY_KEY_ID {
            let legacy = self.legacy.as_ref().ok_or(OpenError)?;
            return legacy
                .open(&sealed.record, target.resource.uuid().as_bytes())
                .map_err(|_| OpenError);
        }
        self.open_record(
            sealed,
            INFO,
            &target.associated_data(&sealed.key_id, sealed.format),
        )
    }

    /// Opens a webhook's signing secret sealed for `hook`.
    pub fn open_webhook_secret(
        &self,
        sealed: &SealedPassword,
        hook: &WebhookTarget<'_>,
    ) -> Result<String, OpenError> {
        self.open_record(sealed, WEBHOOK_INFO, &hook.associated_data(&sealed.key_id))
    }

    fn open_record(
        &self,
        sealed: &SealedPassword,
        info: &[u8],
        aad: &[u8],
    ) -> Result<String, OpenError> {
        let (private, _) = self.keys.get(&sealed.key_id).ok_or(OpenError)?;
        let split = EncappedKey::size();
        if sealed.record.len() < split {
            return Err(OpenError);
        }
        let (encapped, ciphertext) = sealed.record.split_at(split);
        let encapped = EncappedKey::from_bytes(encapped).map_err(|_| OpenError)?;
        let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            private,
            &encapped,
            info,
            ciphertext,
            aad,
        )
        .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

/// A new master key pair `(opening, sealing)`, in the forms [`OpeningKeys::parse`] and
/// [`SealingKey::parse`] read.
pub fn generate(id: &str) -> Result<(String, String), KeyError> {
    check_key_id(id)?;
    let (private, public) = Kem::gen_keypair();
    Ok((
        format!("{id}:{}", STANDARD.encode(private.to_bytes())),
        format!("{id}:{}", STANDARD.encode(public.to_bytes())),
    ))
}

fn split_key(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let (id, key) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| KeyError("expected KEY_ID:BASE64_KEY".into()))?;
    check_key_id(id)?;
    let bytes = STANDARD
        .decode(key.trim())
        .map_err(|_| KeyError(format!("key {id:?} is not valid base64")))?;
    Ok((id.to_owned(), bytes))
}

fn check_key_id(id: &str) -> Result<(), KeyError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_KEY_ID
        && id != LEGACY_KEY_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(KeyError(format!(
            "a key id is 1 to {MAX_KEY_ID} of A-Z a-z 0-9 - _ . (and not {LEGACY_KEY_ID:?})"
        )))
    }
}

/// Keyed fingerprints of passwords, so a re-sent password can be compared with the stored one
/// without opening it. Per resource: equal passwords on two resources do not fingerprint alike.
#[derive(Clone)]
pub struct Fingerprinter {
    key: [u8; 32],
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(<key>)")
    }
}

impl Fingerprinter {
    /// A fingerprinter under its own 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// HMAC-SHA256 of the resource id and the password.
    pub fn fingerprint(&self, resource: ResourceId, password: &str) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(resource.uuid().as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `password` is the one `stored` was computed from (constant time).
    pub fn matches(&self, resource: ResourceId, password: &str, stored: &[u8]) -> bool {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(resource.uuid().as_bytes());
        mac.update(password.as_bytes());
        mac.verify_slice(stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsMode;

    static PREFER: SourceTls = SourceTls {
        mode: TlsMode::Prefer,
        ca: None,
    };

    fn target<'a>(
        tenant: &'a TenantId,
        resource: ResourceId,
        host: &'a str,
    ) -> ConnectionTarget<'a> {
        ConnectionTarget {
            tenant,
            resource,
            kind: ResourceKind::Postgres,
            host,
            port: 5432,
            username: "reader",
            database: "shop",
            tls: &PREFER,
        }
    }

    #[test]
    fn the_tls_settings_are_bound_from_format_2_on() {
        let (opening, sealing) = generate("k1").unwrap();
        let (opening, sealing) = (
            OpeningKeys::parse(&opening).unwrap(),
            SealingKey::parse(&sealing).unwrap(),
        );
        let acme = TenantId::new("acme");
        let rid = ResourceId::new_v7();
        let full = SourceTls {
            mode: TlsMode::VerifyFull,
            ca: Some("-----BEGIN CERTIFICATE-----".into()),
        };
        let given = ConnectionTarget {
            tls: &full,
            ..target(&acme, rid, "db.internal")
        };
        let sealed = sealing.seal("pw-tls", &given);
        assert_eq!(sealed.format, RecordFormat::TargetAndTls);
        assert_eq!(opening.open(&sealed, &given).unwrap(), "pw-tls");
        // A laxer mode, another CA, no CA: nothing opens.
        let disabled = SourceTls {
            mode: TlsMode::Disable,
            ca: None,
        };
        let other_ca = SourceTls {
            ca: Some("-----BEGIN CERTIFICATE-----x".into()),
            ..full.clone()
        };
        let no_ca = SourceTls {
            ca: None,
            ..full.clone()
        };
        let empty_ca = SourceTls {
            ca: Some(String::new()),
            ..full.clone()
        };
        for tls in [&disabled, &other_ca, &no_ca, &empty_ca] {
            let changed = ConnectionTarget { tls, ..given };
            assert!(opening.open(&sealed, &changed).is_err(), "{tls:?}");
        }
        // Relabelled as the earlier format (which did not bind TLS): still nothing opens.
        let relabelled = SealedPassword {
            format: RecordFormat::Target,
            ..sealed.clone()
        };
        let weakened = ConnectionTarget {
            tls: &disabled,
            ..given
        };
        assert!(opening.open(&relabelled, &weakened).is_err());
        assert!(opening.open(&relabelled, &given).is_err());
        // A record of the earlier format opens whatever the TLS settings (until re-sealed).
        let old = sealing.seal_in_format("pw-old", &given, RecordFormat::Target);
        assert_eq!(opening.open(&old, &given).unwrap(), "pw-old");
        assert_eq!(opening.open(&old, &weakened).unwrap(), "pw-old");
        let relabelled = SealedPassword {
            format: RecordFormat::TargetAndTls,
            ..old
        };
        assert!(opening.open(&relabelled, &given).is_err());
    }

    #[test]
    fn sealed_passwords_open_only_for_their_target_and_key() {
        let (opening, sealing) = generate("k1").unwrap();
        let opening = OpeningKeys::parse(&opening).unwrap();
        let sealing = SealingKey::parse(&sealing).unwrap();
        let (acme, other) = (TenantId::new("acme"), TenantId::new("other"));
        let rid = ResourceId::new_v7();
        let sealed = sealing.seal("hunter22", &target(&acme, rid, "db.internal"));
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.record.windows(8).any(|w| w == b"hunter22"));
        assert_eq!(
            opening
                .open(&sealed, &target(&acme, rid, "db.internal"))
                .unwrap(),
            "hunter22"
        );
        // Another host, tenant, resource, port or engine: nothing opens.
        assert!(
            opening
                .open(&sealed, &target(&acme, rid, "evil.example"))
                .is_err()
        );
        assert!(
            opening
                .open(&sealed, &target(&other, rid, "db.internal"))
                .is_err()
        );
        assert!(
            opening
                .open(&sealed, &target(&acme, ResourceId::new_v7(), "db.internal"))
                .is_err()
        );
        let moved = ConnectionTarget {
            port: 5433,
            ..target(&acme, rid, "db.internal")
        };
        assert!(opening.open(&sealed, &moved).is_err());
        let engine = ConnectionTarget {
            kind: ResourceKind::Mysql,
            ..target(&acme, rid, "db.internal")
        };
        assert!(opening.open(&sealed, &engine).is_err());
        // A flipped bit, a relabelled key id, another key pair: nothing opens.
        let mut tampered = sealed.clone();
        *tampered.record.last_mut().unwrap() ^= 1;
        assert!(
            opening
                .open(&tampered, &target(&acme, rid, "db.internal"))
                .is_err()
        );
        let (other_opening, _) = generate("k1").unwrap();
        assert!(
            OpeningKeys::parse(&other_opening)
                .unwrap()
                .open(&sealed, &target(&acme, rid, "db.internal"))
                .is_err()
        );
    }

    #[test]
    fn rotation_reseals_under_the_new_key_while_both_open() {
        let (old_opening, old_sealing) = generate("2026-01").unwrap();
        let (new_opening, _) = generate("2026-11").unwrap();
        let both = OpeningKeys::parse(&format!("{old_opening},{new_opening}")).unwrap();
        let acme = TenantId::new("acme");
        let t = target(&acme, ResourceId::new_v7(), "db.internal");
        let sealed = SealingKey::parse(&old_sealing).unwrap().seal("pw-one", &t);
        let resealed = both
            .sealing_key("2026-11")
            .unwrap()
            .seal(&both.open(&sealed, &t).unwrap(), &t);
        assert_eq!(resealed.key_id, "2026-11");
        let only_new = OpeningKeys::parse(&new_opening).unwrap();
        assert_eq!(only_new.open(&resealed, &t).unwrap(), "pw-one");
        assert!(only_new.open(&sealed, &t).is_err());
    }

    #[test]
    fn legacy_records_open_with_the_legacy_key_only() {
        let (opening, _) = generate("k1").unwrap();
        let acme = TenantId::new("acme");
        let rid = ResourceId::new_v7();
        let legacy = SealedPassword {
            key_id: LEGACY_KEY_ID.into(),
            record: SecretBox::new(&[7; 32]).seal("old-pw", rid.uuid().as_bytes()),
            format: RecordFormat::Target,
        };
        let t = target(&acme, rid, "db.internal");
        assert!(
            OpeningKeys::parse(&opening)
                .unwrap()
                .open(&legacy, &t)
                .is_err()
        );
        let with_legacy = OpeningKeys::parse(&opening).unwrap().with_legacy(&[7; 32]);
        assert_eq!(with_legacy.open(&legacy, &t).unwrap(), "old-pw");
    }

    #[test]
    fn fingerprints_compare_without_opening() {
        let f = Fingerprinter::new([9; 32]);
        let rid = ResourceId::new_v7();
        let stored = f.fingerprint(rid, "same");
        assert!(f.matches(rid, "same", &stored));
        assert!(!f.matches(rid, "other", &stored));
        assert_ne!(stored, f.fingerprint(ResourceId::new_v7(), "same"));
    }

    #[test]
    fn key_settings_are_checked_and_never_echoed() {
        for bad in [
            "",
            "k1",
            ":AAAA",
            "k1:not base64!",
            "legacy-aes:AAAA",
            "k 1:AAAA",
        ] {
            let err = OpeningKeys::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("not base64!"), "{err}");
        }
        let (opening, _) = generate("k1").unwrap();
        assert!(OpeningKeys::parse(&format!("{opening},{opening}")).is_err());
    }
}
