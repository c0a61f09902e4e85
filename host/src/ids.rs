//! The identifiers that come from outside (server ids, backup uuids) and the checks that
//! make them safe to use in paths and storage keys.

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
