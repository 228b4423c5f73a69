//! Encryption of pushed credentials at rest: ChaCha20-Poly1305 with a key from the
//! environment (`ENTREPOT_CREDENTIALS_KEY`, 32 bytes in base64).

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use crate::config::Secret;

const PREFIX: &str = "v1:";

/// Seals and opens stored credentials.
#[derive(Clone)]
pub struct CredentialCipher {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCipher(***)")
    }
}

impl CredentialCipher {
    /// A cipher from a base64 key of 32 bytes.
    pub fn new(key: &Secret) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.expose().trim())
            .map_err(|_| "the credentials key is not base64".to_string())?;
        let cipher = ChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("the credentials key has {} bytes; it needs 32", bytes.len()))?;
        Ok(CredentialCipher { cipher })
    }

    /// `v1:` + base64(nonce ‖ ciphertext).
    pub fn seal(&self, plain: &[u8]) -> String {
        let random = uuid::Uuid::new_v4();
        let nonce_bytes: [u8; 12] = random.as_bytes()[..12].try_into().unwrap_or([0; 12]);
        let nonce = Nonce::from(nonce_bytes);
        let sealed = self.cipher.encrypt(&nonce, plain).unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// The plain bytes of a sealed value.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, String> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or("unknown encryption format")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "the stored value is not base64".to_string())?;
        if bytes.len() < 12 {
            return Err("the stored value is too short".into());
        }
        let (nonce, data) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| "bad nonce".to_string())?;
        self.cipher
            .decrypt(&Nonce::from(nonce), data)
            .map_err(|_| "decryption failed: wrong ENTREPOT_CREDENTIALS_KEY?".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let key = Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        let c = CredentialCipher::new(&key).unwrap();
        let sealed = c.seal(b"{\"app_secret\":\"s3cr3t\"}");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(c.open(&sealed).unwrap(), b"{\"app_secret\":\"s3cr3t\"}");
        let other = CredentialCipher::new(&Secret::new(
            base64::engine::general_purpose::STANDARD.encode([8u8; 32]),
        ))
        .unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(CredentialCipher::new(&Secret::new("c2hvcnQ=")).is_err());
    }
}
