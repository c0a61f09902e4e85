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
//!
//! A verified token's claims come out typed ([`WebsocketClaims`], [`DownloadClaims`]): a token
//! whose claims lack a field or have the wrong type is refused here, with which one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
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
    /// A claim the token's use needs is missing or of the wrong type.
    #[error("the token's claims are not what the Panel issues: {0}")]
    BadClaims(String),
}

/// The claims of a websocket token, as the Panel's `NodeJWTService` issues them.
#[derive(Debug, Clone, Deserialize)]
pub struct WebsocketClaims {
    /// The server the socket is for.
    pub server_uuid: String,
    /// What the user may do on it (`websocket.connect`, `backup.read`, ... or `*`).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// When the Panel issued it (Unix seconds).
    pub iat: i64,
    /// When it expires (Unix seconds).
    pub exp: i64,
}

/// The claims of a one-time backup download link, as the Panel issues them.
#[derive(Debug, Clone, Deserialize)]
pub struct DownloadClaims {
    /// The server the backup belongs to.
    pub server_uuid: String,
    /// The backup to send.
    pub backup_uuid: String,
    /// The link's one-time id: a second use is refused.
    pub unique_id: String,
    /// When it expires (Unix seconds).
    pub exp: i64,
}

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Verifies `token` against `key` at time `now` (Unix seconds) and reads its claims as `T`.
pub fn verify<T: DeserializeOwned>(token: &str, key: &[u8], now: i64) -> Result<T, JwtError> {
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
    let claims = decode_json(payload)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::NoExpiry)?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let not_before = nbf.as_i64().ok_or(JwtError::BadNotBefore)?;
        if not_before > now {
            return Err(JwtError::NotYetValid);
        }
    }
    serde_json::from_value(Value::Object(claims)).map_err(|e| JwtError::BadClaims(e.to_string()))
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
    fn claims_come_out_typed_and_a_missing_or_mistyped_one_is_named() {
        let key = b"node-token";
        let now = 1_000_000;
        let token = sign(
            &json!({"exp": now + 60, "iat": now, "server_uuid": "s1", "permissions": ["*"]}),
            key,
        );
        let claims: WebsocketClaims = verify(&token, key, now).unwrap();
        assert_eq!(
            (claims.server_uuid.as_str(), claims.iat, claims.exp),
            ("s1", now, now + 60)
        );
        assert_eq!(claims.permissions, ["*"]);
        let no_iat = sign(&json!({"exp": now + 60, "server_uuid": "s1"}), key);
        match verify::<WebsocketClaims>(&no_iat, key, now) {
            Err(JwtError::BadClaims(why)) => assert!(why.contains("`iat`"), "{why}"),
            other => panic!("{other:?}"),
        }
        let text_permissions = sign(
            &json!({"exp": now + 60, "iat": now, "server_uuid": "s1", "permissions": "*"}),
            key,
        );
        assert!(matches!(
            verify::<WebsocketClaims>(&text_permissions, key, now),
            Err(JwtError::BadClaims(_))
        ));
        let no_unique_id = sign(
            &json!({"exp": now + 60, "server_uuid": "s1", "backup_uuid": "b1"}),
            key,
        );
        match verify::<DownloadClaims>(&no_unique_id, key, now) {
            Err(JwtError::BadClaims(why)) => assert!(why.contains("`unique_id`"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_every_defect_is_named() {
        let key = b"node-token";
        let now = 1_000_000;
        let token = sign(&json!({"exp": now + 60, "server_uuid": "s1"}), key);
        let claims: Value = verify::<Value>(&token, key, now).unwrap();
        assert_eq!(claims["server_uuid"], "s1");

        assert_eq!(
            verify::<Value>(&token, b"other", now).unwrap_err(),
            JwtError::BadSignature
        );
        assert_eq!(
            verify::<Value>(&token, key, now + 60).unwrap_err(),
            JwtError::Expired
        );
        let no_exp = sign(&json!({"server_uuid": "s1"}), key);
        assert_eq!(
            verify::<Value>(&no_exp, key, now).unwrap_err(),
            JwtError::NoExpiry
        );
        let float_exp = sign(&json!({"exp": 2e9}), key);
        assert_eq!(
            verify::<Value>(&float_exp, key, now).unwrap_err(),
            JwtError::NoExpiry
        );
        assert_eq!(
            verify::<Value>("a.b", key, now).unwrap_err(),
            JwtError::Malformed
        );
        let tampered = token.replacen('.', ".e30", 1);
        assert!(verify::<Value>(&tampered, key, now).is_err());
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"exp":9999999999}"#)
        );
        assert_eq!(
            verify::<Value>(&none_alg, key, now).unwrap_err(),
            JwtError::WrongAlgorithm
        );
    }

    #[test]
    fn a_token_is_refused_before_its_nbf_and_accepted_from_it() {
        let key = b"node-token";
        let now = 1_000_000;
        let future = sign(&json!({"exp": now + 900, "nbf": now + 1}), key);
        assert_eq!(
            verify::<Value>(&future, key, now).unwrap_err(),
            JwtError::NotYetValid
        );
        // From its nbf on, the same token verifies.
        assert!(verify::<Value>(&future, key, now + 1).is_ok());
        // As the Panel issues them: nbf five minutes back.
        let past = sign(&json!({"exp": now + 900, "nbf": now - 300}), key);
        assert!(verify::<Value>(&past, key, now).is_ok());
        let text_nbf = sign(&json!({"exp": now + 900, "nbf": "soon"}), key);
        assert_eq!(
            verify::<Value>(&text_nbf, key, now).unwrap_err(),
            JwtError::BadNotBefore
        );
        // iat in the future is not refused (Wings does not check it either).
        let early_iat = sign(&json!({"exp": now + 900, "iat": now + 60}), key);
        assert!(verify::<Value>(&early_iat, key, now).is_ok());
    }
}
