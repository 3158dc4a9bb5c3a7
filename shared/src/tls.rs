//! TLS settings shared by every connection metasync opens: one rustls stack with ring as its
//! crypto provider, for the catalog PostgreSQL (sqlx, from `DATABASE_URL`'s `sslmode`), Redis
//! (`rediss://`) and sources.

/// Makes ring the process's rustls crypto provider. rustls picks it alone while ring is the only
/// provider compiled in; installing it explicitly keeps that true if a dependency ever adds
/// another. Idempotent.
///
/// ring, not aws-lc-rs (rustls's default, which adds post-quantum key exchange): it is what
/// sqlx's `tls-rustls-ring-webpki` uses, and it builds without a C toolchain beyond `cc`.
/// rustls 0.23.48 deprecates it for the missing post-quantum groups.
#[allow(deprecated)]
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
