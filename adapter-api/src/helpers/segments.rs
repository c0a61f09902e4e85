//! Safe path segments from the ids the host passes to an adapter. The host only ever sends
//! server ids and backup ids of the shapes checked here, so an adapter that refuses every
//! other shape refuses nothing real and can put the ids in paths and object keys as they are.

use crate::error::AdapterError;

/// The longest server id the host sends (the host's own bound on server ids).
pub const MAX_SERVER_ID_LEN: usize = 128;

/// `server` as one path segment: non-empty, at most [`MAX_SERVER_ID_LEN`] bytes of ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.` (so never `.` or `..`).
pub fn server_segment(server: &str) -> Result<&str, AdapterError> {
    let safe = !server.is_empty()
        && server.len() <= MAX_SERVER_ID_LEN
        && !server.starts_with('.')
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if safe {
        Ok(server)
    } else {
        Err(AdapterError::other(format!(
            "{server:?} is not a server id the host sends (letters, digits, '-', '_', '.', \
             not starting with '.', at most {MAX_SERVER_ID_LEN} bytes)"
        )))
    }
}

/// `backup` as one path segment: a canonical UUID (36 bytes, lowercase hex in groups of
/// 8-4-4-4-12 joined by `-`), the only form the host sends.
pub fn backup_segment(backup: &str) -> Result<&str, AdapterError> {
    /// Where the hyphens of a canonical UUID are.
    const HYPHENS: [usize; 4] = [8, 13, 18, 23];
    /// The length of a canonical UUID.
    const UUID_LEN: usize = 36;
    let canonical = backup.len() == UUID_LEN
        && backup.bytes().enumerate().all(|(i, b)| {
            if HYPHENS.contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        });
    if canonical {
        Ok(backup)
    } else {
        Err(AdapterError::other(format!(
            "{backup:?} is not a backup id the host sends (a lowercase, hyphenated UUID)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_the_host_sends_pass_and_path_tricks_do_not() {
        for good in ["0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7", "srv_1.a", "x"] {
            assert_eq!(server_segment(good).unwrap(), good);
        }
        let long = "a".repeat(MAX_SERVER_ID_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a\0b",
            "é",
            long.as_str(),
        ] {
            let err = server_segment(bad).unwrap_err();
            assert!(err.message.contains("is not a server id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn only_canonical_uuids_are_backup_ids() {
        let good = "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7";
        assert_eq!(backup_segment(good).unwrap(), good);
        for bad in [
            "",
            "0F4E2D6C-8A1B-4C3D-9E5F-A7B9C1D3E5F7",
            "0f4e2d6c8a1b4c3d9e5fa7b9c1d3e5f7",
            "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7/",
            "../4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7",
            "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5g7",
        ] {
            let err = backup_segment(bad).unwrap_err();
            assert!(err.message.contains("is not a backup id"), "{bad:?}: {err}");
        }
    }
}
