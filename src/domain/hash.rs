//! SHA-256 content hashes and the object-store keys derived from them.

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The SHA-256 digest of a blob's bytes: its identity in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// A string that is not 64 lower- or upper-case hex digits.
#[derive(Debug, thiserror::Error)]
#[error("a content hash is 64 hexadecimal digits")]
pub struct ContentHashError;

impl ContentHash {
    /// Hashes a byte slice in one go.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps a finished digest.
    pub fn from_digest(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    /// Parses 64 hex digits.
    pub fn parse(hex_digits: &str) -> Result<Self, ContentHashError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).map_err(|_| ContentHashError)?;
        Ok(Self(out))
    }

    /// The lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The object-store key: `sha256/ab/cd/<64 hex>`. Two levels of fan-out keep
    /// directories small on a local filesystem with millions of blobs.
    pub fn object_key(&self) -> String {
        let h = self.to_hex();
        format!("sha256/{}/{}/{}", &h[0..2], &h[2..4], h)
    }

    /// Recovers a hash from an object key produced by [`Self::object_key`].
    pub fn from_object_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix("sha256/")?;
        let mut parts = rest.split('/');
        let (a, b, full) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !full.starts_with(a) || full.get(2..4) != Some(b) {
            return None;
        }
        Self::parse(full).ok()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip() {
        let h = ContentHash::of(b"hello");
        let key = h.object_key();
        assert_eq!(
            key,
            "sha256/2c/f2/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(ContentHash::from_object_key(&key), Some(h));
        assert_eq!(
            ContentHash::from_object_key(
                "sha256/2c/f3/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            ),
            None
        );
        assert!(ContentHash::parse("xyz").is_err());
    }
}
