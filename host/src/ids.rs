//! The identifiers that come from outside (server ids, backup uuids) and the checks that
//! make them safe to use in paths and storage keys. The HTTP layer parses each once into a
//! [`ServerId`] or [`BackupId`]; what takes one of those needs no check of its own.

use std::fmt;
use std::ops::Deref;

/// A server id checked by [`is_safe_server_id`]: safe as one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerId(String);

impl ServerId {
    /// `text` as a server id, if it is safe in a path.
    pub fn parse(text: &str) -> Option<Self> {
        is_safe_server_id(text).then(|| Self(text.to_string()))
    }
}

/// A backup uuid in the canonical form checked by [`is_canonical_uuid`]; a request body's
/// `uuid` deserialises into one, or is refused with [`InvalidBackupId`]'s words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct BackupId(String);

impl BackupId {
    /// `text` as a backup id, if it is a canonical uuid.
    pub fn parse(text: &str) -> Option<Self> {
        is_canonical_uuid(text).then(|| Self(text.to_string()))
    }
}

/// A backup id that is not a canonical uuid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", crate::wings_text::INVALID_BACKUP_ID)]
pub struct InvalidBackupId;

impl TryFrom<String> for BackupId {
    type Error = InvalidBackupId;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or(InvalidBackupId)
    }
}

/// Reads as the text it was parsed from, wherever a `&str` is wanted.
impl Deref for ServerId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads as the text it was parsed from, wherever a `&str` is wanted.
impl Deref for BackupId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server id as it may appear in a path: letters, digits, `-`, `_`, `.`, not starting with
/// a dot. Anything else (a `/`, `..`) can never name a server directory.
pub fn is_safe_server_id(server: &str) -> bool {
    !server.is_empty()
        && server.len() <= 128
        && !server.starts_with('.')
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// True for a canonical (lowercase, hyphenated) UUID, the form the Panel sends.
pub fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|u| u.hyphenated().to_string() == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_that_could_leave_the_data_directory_are_refused() {
        assert!(is_safe_server_id("0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a\0b", &"a".repeat(129)] {
            assert!(!is_safe_server_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_canonical_uuids_pass() {
        assert!(is_canonical_uuid("0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7"));
        for bad in [
            "0F4E2D6C-8A1B-4C3D-9E5F-A7B9C1D3E5F7",
            "0f4e2d6c8a1b4c3d9e5fa7b9c1d3e5f7",
            "{0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7}",
            "../x",
        ] {
            assert!(!is_canonical_uuid(bad), "{bad:?}");
        }
    }
}
