//! Credentials at rest: AES-256-GCM with a random 96-bit nonce per seal. The resource id is
//! bound in as associated data, so a ciphertext copied onto another resource fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore as _;

const NONCE_LEN: usize = 12;

/// Seals and opens source passwords. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

/// The stored ciphertext could not be opened: wrong key, or tampered data.
#[derive(Debug, thiserror::Error)]
#[error("stored credentials cannot be decrypted with the configured METASYNC_SECRET_KEY")]
pub struct OpenError;

impl SecretBox {
    /// A box keyed with the 32-byte AES-256 key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Returns `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &str, aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Reverses [`Self::seal`]; fails unless the key and `aad` are the ones it was sealed with.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<String, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_the_resource() {
        let secrets = SecretBox::new(&[7; 32]);
        let sealed = secrets.seal("hunter2", b"resource-a");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(secrets.open(&sealed, b"resource-a").unwrap(), "hunter2");
        assert!(secrets.open(&sealed, b"resource-b").is_err());
        assert!(
            SecretBox::new(&[8; 32])
                .open(&sealed, b"resource-a")
                .is_err()
        );
    }
}
