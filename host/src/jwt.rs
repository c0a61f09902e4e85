//! HS256 JSON Web Tokens signed with the node token, as the Panel issues them for the
//! websocket and for download links: the signature, `alg`, an integer `exp` in the future and
//! an `nbf` (when present) not in the future are checked here; what the other claims must say
//! is the caller's business.
//!
//! Time claims, against Wings (which checks only `exp`): an `nbf` later than now is refused,
//! with no leeway, because the Panel already dates `nbf` five minutes back (`NodeJWTService`),
//! which is its allowance for a node clock that lags; a leeway here would only widen it. `iat`
//! is not checked against now, as in Wings: the Panel sets it to its own now, so a node clock a
//! second behind would refuse every fresh token, and `nbf` already says when a token may start.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// Not signed with HS256.
    #[error("the token is not signed with HS256")]
    WrongAlgorithm,
    /// The signature does not match the node token.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is missing or not an integer.
    #[error("the token has no integer exp claim")]
    NoExpiry,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is present but not an integer.
    #[error("the token's nbf claim is not an integer")]
    BadNotBefore,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
}

/// A verified token's claims.
#[derive(Debug, Clone)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// A string claim.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// An integer claim (seconds, for dates).
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }

    /// `exp`, which verification guarantees is present.
    pub fn expires_at(&self) -> i64 {
        self.integer("exp").unwrap_or(0)
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Verifies `token` against `key` at time `now` (Unix seconds).
pub fn verify(token: &str, key: &[u8], now: i64) -> Result<Claims, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(header_text), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Map<String, Value> = decode_json(header_text)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::WrongAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{header_text}.{payload}").as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::BadSignature)?;
    let claims = Claims(decode_json(payload)?);
    let exp = claims.integer("exp").ok_or(JwtError::NoExpiry)?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    if claims.0.contains_key("nbf") {
        let not_before = claims.integer("nbf").ok_or(JwtError::BadNotBefore)?;
        if not_before > now {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(claims)
}

fn decode_json(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// Signs `claims` with `key` (HS256); for tests and tools that mint tokens like the Panel.
pub fn sign(claims: &Value, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_signed_token_verifies_and_every_defect_is_named() {
        let key = b"node-token";
        let now = 1_000_000;
        let token = sign(&json!({"exp": now + 60, "server_uuid": "s1"}), key);
        let claims = verify(&token, key, now).unwrap();
        assert_eq!(claims.string("server_uuid"), Some("s1"));

        assert_eq!(
            verify(&token, b"other", now).unwrap_err(),
            JwtError::BadSignature
        );
        assert_eq!(
            verify(&token, key, now + 60).unwrap_err(),
            JwtError::Expired
        );
        let no_exp = sign(&json!({"server_uuid": "s1"}), key);
        assert_eq!(verify(&no_exp, key, now).unwrap_err(), JwtError::NoExpiry);
        let float_exp = sign(&json!({"exp": 2e9}), key);
        assert_eq!(
            verify(&float_exp, key, now).unwrap_err(),
            JwtError::NoExpiry
        );
        assert_eq!(verify("a.b", key, now).unwrap_err(), JwtError::Malformed);
        let tampered = token.replacen('.', ".e30", 1);
        assert!(verify(&tampered, key, now).is_err());
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"exp":9999999999}"#)
        );
        assert_eq!(
            verify(&none_alg, key, now).unwrap_err(),
            JwtError::WrongAlgorithm
        );
    }

    #[test]
    fn a_token_is_refused_before_its_nbf_and_accepted_from_it() {
        let key = b"node-token";
        let now = 1_000_000;
        let future = sign(&json!({"exp": now + 900, "nbf": now + 1}), key);
        assert_eq!(
            verify(&future, key, now).unwrap_err(),
            JwtError::NotYetValid
        );
        // From its nbf on, the same token verifies.
        assert!(verify(&future, key, now + 1).is_ok());
        // As the Panel issues them: nbf five minutes back.
        let past = sign(&json!({"exp": now + 900, "nbf": now - 300}), key);
        assert!(verify(&past, key, now).is_ok());
        let text_nbf = sign(&json!({"exp": now + 900, "nbf": "soon"}), key);
        assert_eq!(
            verify(&text_nbf, key, now).unwrap_err(),
            JwtError::BadNotBefore
        );
        // iat in the future is not refused (Wings does not check it either).
        let early_iat = sign(&json!({"exp": now + 900, "iat": now + 60}), key);
        assert!(verify(&early_iat, key, now).is_ok());
    }
}
