//! Token verification on hostile text (a websocket `auth` frame or a download link's
//! `token`): never panics, and a token it accepts was signed with the key, is unexpired at
//! `now` and expired at its own `exp`.

#![no_main]

use aerie::jwt::{verify, JwtError};
use libfuzzer_sys::fuzz_target;

/// The node token the seeds are signed with (`fuzz/seeds.py`).
const KEY: &[u8] = b"fuzz-node-token";

/// The time tokens are checked at: 2023-11-14T22:13:20Z.
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let Ok(claims) = verify::<serde_json::Value>(&token, KEY, NOW) else {
        return;
    };
    let exp = claims["exp"]
        .as_i64()
        .expect("an accepted token has an integer exp");
    assert!(exp > NOW, "a token expired at {exp} was accepted at {NOW}");
    assert_eq!(
        verify::<serde_json::Value>(&token, KEY, exp).unwrap_err(),
        JwtError::Expired
    );
    assert_eq!(
        verify::<serde_json::Value>(&token, b"another-node-token", NOW).unwrap_err(),
        JwtError::BadSignature
    );
});
