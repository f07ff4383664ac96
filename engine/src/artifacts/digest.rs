//! SHA-256 digests, the identity of every blob, and [`BlobRef`], a digest with its size.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The SHA-256 digest of a blob's bytes, written as 64 lowercase hex digits.
///
/// Parsing accepts only exactly 64 hex digits, so a digest that came from outside (a URL, a DAG
/// file) can never smuggle a path separator into a storage key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Wraps the 32 raw bytes of a digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256Digest(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// Why a string is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a SHA-256 digest (64 hex digits)")]
pub struct ParseDigestError {
    /// The rejected text, cut to its first 80 characters.
    pub input: String,
}

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let reject = || ParseDigestError {
            input: text.chars().take(80).collect(),
        };
        if text.len() != 64 {
            return Err(reject());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| reject())?;
        Ok(Sha256Digest(bytes))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored blob: its digest and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    /// The SHA-256 digest of the bytes, which is also where they are stored.
    pub sha256: Sha256Digest,
    /// The number of bytes.
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_and_prints_lowercase_hex() {
        let digest: Sha256Digest = HELLO.parse().unwrap();
        assert_eq!(digest.to_string(), HELLO);
        let upper: Sha256Digest = HELLO.to_uppercase().parse().unwrap();
        assert_eq!(upper, digest);
        expect![[r#"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"#]]
            .assert_eq(&format!("{digest:?}"));
    }

    #[test]
    fn rejects_anything_but_64_hex_digits() {
        for bad in [
            "",
            "2cf2",
            &format!("{HELLO}0"),
            &HELLO.replace('2', "/"),
            "../../etc/passwd",
        ] {
            assert!(bad.parse::<Sha256Digest>().is_err(), "{bad:?} parsed");
        }
        expect![[r#""../../etc/passwd" is not a SHA-256 digest (64 hex digits)"#]].assert_eq(
            &"../../etc/passwd"
                .parse::<Sha256Digest>()
                .unwrap_err()
                .to_string(),
        );
    }

    #[test]
    fn blob_refs_serialize_as_hex() {
        let blob = BlobRef {
            sha256: HELLO.parse().unwrap(),
            size: 5,
        };
        let json = serde_json::to_string(&blob).unwrap();
        expect![[r#"{"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5}"#]]
            .assert_eq(&json);
        assert_eq!(serde_json::from_str::<BlobRef>(&json).unwrap(), blob);
    }
}
