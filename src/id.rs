//! Identifiers: one 32-byte [`Id`] and typed wrappers made by one macro, so a pack id
//! cannot be passed where a blob id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// 32 bytes: a BLAKE3 hash (keyed for blobs, plain for stored objects) or a random name.
///
/// Binary encodings (postcard) store the 32 bytes as they are; human-readable ones
/// (JSON output) use 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Id)
        }
    }
}

impl Id {
    /// A fresh random id (lock and key names).
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Id(b)
    }

    /// The plain BLAKE3 hash of stored bytes: the name of packs, index files and snapshots.
    pub fn hash_of(bytes: &[u8]) -> Self {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| Error::Config(format!("'{s}' is not a 64-digit hex id")))?;
        Ok(Id(b))
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            pub fn to_hex(&self) -> String { self.0.to_hex() }
            pub fn short(&self) -> String { self.0.short() }
            pub fn as_bytes(&self) -> &[u8; 32] { self.0.as_bytes() }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }
        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> { Ok($name(s.parse()?)) }
        }
        impl From<Id> for $name {
            fn from(id: Id) -> Self { $name(id) }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext (data chunk or tree).
    BlobId
);
typed_id!(
    /// Plain BLAKE3 of a pack's stored bytes.
    PackId
);
typed_id!(
    /// Plain BLAKE3 of an index file's stored bytes.
    IndexId
);
typed_id!(
    /// Plain BLAKE3 of a snapshot object's stored bytes.
    SnapshotId
);
typed_id!(
    /// Random name of a key file.
    KeyId
);
typed_id!(
    /// Random name of a lock object.
    LockId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_input() {
        let id = Id::random();
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert!("xyz".parse::<Id>().is_err());
        assert!("ab".parse::<PackId>().is_err());
        assert_eq!(id.short().len(), 8);
    }
}
