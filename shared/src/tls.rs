//! TLS settings shared by every connection metasync opens: one rustls stack with ring as its
//! crypto provider, for the catalog PostgreSQL (sqlx, from `DATABASE_URL`'s `sslmode`), Redis
//! (`rediss://`) and sources ([`SourceTls`]: a resource's `tls` setting).

use serde::{Deserialize, Serialize};

/// Makes ring the process's rustls crypto provider. rustls picks it alone while ring is the only
/// provider compiled in; installing it explicitly keeps that true if a dependency ever adds
/// another. Idempotent.
///
/// ring, not aws-lc-rs (rustls's default): sqlx's `tls-rustls-ring-webpki` uses ring, so one
/// provider is compiled. rustls 0.23.48 deprecates ring's provider for its lack of post-quantum
/// key exchange; moving sqlx, redis and this to aws-lc-rs together is a follow-up.
#[allow(deprecated)]
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How a worker secures its connection to a source, as in libpq's `sslmode`. The order is the
/// strictness: each mode promises at least what the one before it does.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, unverified; else plain. The default: what libpq and the
    /// MySQL clients do, so a source without TLS keeps working. A password still never goes in
    /// clear over a plain connection (the driver refuses cleartext-password requests there, and
    /// MySQL's full `caching_sha2_password` exchange needs TLS).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS with a certificate signed by the resource's CA (or a built-in root); any name.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the resource's `host` (the name as
    /// registered, though the worker dials the address it resolved and checked).
    VerifyFull,
}

impl TlsMode {
    /// The name clients use (`verify-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is verified.
    pub fn verifies(self) -> bool {
        self >= Self::VerifyCa
    }

    /// Whether a connection in this mode is always encrypted.
    pub fn requires_tls(self) -> bool {
        self >= Self::Require
    }
}

/// Most bytes a resource's CA may have: a few certificates of a private CA chain.
pub const MAX_CA_BYTES: usize = 64 * 1024;

/// A resource's `tls` setting: `{"mode": "verify-full", "ca": "-----BEGIN CERTIFICATE-----…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceTls {
    /// How the connection is secured.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM CA certificate(s) the server's certificate must chain to, with `verify-ca` or
    /// `verify-full`; absent: the Mozilla roots built in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65536)]
    pub ca: Option<String>,
}

impl SourceTls {
    /// Checks what a client sent: a CA only with a `verify-*` mode, at most [`MAX_CA_BYTES`],
    /// and nothing in it but PEM certificates (at least one).
    pub fn validate(&self) -> Result<(), String> {
        let Some(ca) = &self.ca else { return Ok(()) };
        if !self.mode.verifies() {
            return Err(format!(
                "`tls.ca` is only used with `verify-ca` or `verify-full`, not `{}`",
                self.mode.as_str()
            ));
        }
        if ca.len() > MAX_CA_BYTES {
            return Err(format!("`tls.ca` must be at most {MAX_CA_BYTES} bytes"));
        }
        use rustls::pki_types::pem::{PemObject as _, SectionKind};
        let mut certificates = 0;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(ca.as_bytes()) {
            match section {
                Ok((SectionKind::Certificate, der)) => {
                    webpki_parse(&der)?;
                    certificates += 1;
                }
                Ok(_) => return Err("`tls.ca` must hold certificates only (no keys)".into()),
                Err(_) => return Err("`tls.ca` is not valid PEM".into()),
            }
        }
        if certificates == 0 {
            return Err("`tls.ca` holds no PEM certificate".into());
        }
        Ok(())
    }
}

/// Checks that `der` is an X.509 certificate a trust store takes as an anchor.
fn webpki_parse(der: &[u8]) -> Result<(), String> {
    let der = rustls::pki_types::CertificateDer::from(der);
    let mut store = rustls::RootCertStore::empty();
    store
        .add(der)
        .map_err(|_| "`tls.ca` holds a certificate that cannot be used as a CA".to_owned())
}

/// The name a source's certificate is checked against: its `host` as registered, without the
/// brackets of an IPv6 literal or a DNS name's trailing dot.
pub fn server_name(host: &str) -> &str {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_order_by_strictness_and_parse_as_libpq_names() {
        let mode: TlsMode = serde_json::from_str("\"verify-full\"").unwrap();
        assert_eq!(mode, TlsMode::VerifyFull);
        assert!(TlsMode::Disable < TlsMode::Prefer && TlsMode::Require < TlsMode::VerifyCa);
        assert_eq!(SourceTls::default().mode, TlsMode::Prefer);
        assert!(serde_json::from_str::<SourceTls>(r#"{"mode":"verify"}"#).is_err());
        assert!(serde_json::from_str::<SourceTls>(r#"{"mode":"require","x":1}"#).is_err());
    }

    #[test]
    fn a_ca_must_be_certificates_with_a_verifying_mode() {
        let with_ca = |mode, ca: &str| SourceTls {
            mode,
            ca: Some(ca.to_owned()),
        };
        assert!(with_ca(TlsMode::Require, "x").validate().is_err());
        assert!(with_ca(TlsMode::VerifyCa, "not pem").validate().is_err());
        assert!(
            with_ca(
                TlsMode::VerifyCa,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            .validate()
            .is_err()
        );
        assert!(
            with_ca(TlsMode::VerifyFull, &"a".repeat(MAX_CA_BYTES + 1))
                .validate()
                .is_err()
        );
        assert_eq!(server_name("[::1]"), "::1");
        assert_eq!(server_name("db.example.com."), "db.example.com");
    }
}
