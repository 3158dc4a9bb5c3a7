//! A certificate authority of the test's own, for the TLS servers the tests start
//! ([`crate::PostgresServer::start_tls`], [`crate::RedisServer::start_tls`]) and for TLS sources.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::unique_name;

/// A CA made for one test, with its certificate in a PEM file; the directory of its files is
/// removed when dropped.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    dir: PathBuf,
}

/// A server certificate and its key, PEM, as files in the CA's directory.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("mstest-ca", '-'));
        std::fs::create_dir_all(&dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "metasync test CA");
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca = Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            dir,
        };
        std::fs::write(ca.ca_file(), &ca.cert_pem)?;
        Ok(ca)
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The directory the CA's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server certificate for `names` (host names or IP addresses), written as
    /// `<file_stem>.crt` and `<file_stem>.key`.
    pub fn issue(&self, file_stem: &str, names: &[&str]) -> anyhow::Result<ServerCert> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let server = ServerCert {
            cert_file: self.dir.join(format!("{file_stem}.crt")),
            key_file: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&server.cert_file, cert.pem())?;
        std::fs::write(&server.key_file, key.serialize_pem())?;
        Ok(server)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServerCert {
    /// A TLS acceptor presenting this certificate, for fake servers in tests.
    pub fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        metasync_shared::tls::install_crypto_provider();
        let certs =
            CertificateDer::pem_file_iter(&self.cert_file)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}
