//! Signed tokens with fuzzer-chosen claims: verification accepts a token exactly when it
//! is signed with the key, its payload is a JSON object and its `exp` is an integer after
//! `now`, and refuses it with the right error otherwise; a token changed after signing is
//! always refused.
//!
//! The payload is either built from typed claims (and signed with `aerie::jwt::sign`) or
//! is raw JSON-ish text signed here, so that odd numbers (`1e3`, `-0`, huge integers),
//! duplicate keys and non-objects reach the claims parser behind a valid signature.

#![no_main]

use aerie::jwt::{sign, verify, JwtError};
use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// A date claim, relative to `now` or absolute, or something that is not an integer.
#[derive(Arbitrary, Debug)]
enum Date {
    Relative(i32),
    Absolute(i64),
    Float(f64),
    Text(String),
    Null,
}

impl Date {
    fn value(&self, now: i64) -> Value {
        match self {
            Date::Relative(offset) => json!(now.saturating_add(i64::from(*offset))),
            Date::Absolute(at) => json!(at),
            Date::Float(at) => json!(at),
            Date::Text(text) => json!(text),
            Date::Null => Value::Null,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Payload {
    /// Claims signed with `aerie::jwt::sign`.
    Claims {
        exp: Option<Date>,
        nbf: Option<Date>,
        extra: Vec<(String, String)>,
    },
    /// This text, base64url-encoded and signed as is.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    payload: Payload,
    now: i64,
    key: Vec<u8>,
    /// Verify with another key than the one that signed.
    other_key: bool,
    /// Replace the character at this index (modulo the length) by this ASCII byte.
    tamper: Option<(u16, u8)>,
}

/// Signs `payload` text as the Panel would, with the same header as `aerie::jwt::sign`.
fn sign_raw(payload: &str, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

fuzz_target!(|input: Input| {
    let (token, payload_text) = match &input.payload {
        Payload::Claims { exp, nbf, extra } => {
            let mut claims = Map::new();
            for (name, value) in extra {
                claims.insert(name.clone(), json!(value));
            }
            if let Some(exp) = exp {
                claims.insert("exp".into(), exp.value(input.now));
            }
            if let Some(nbf) = nbf {
                claims.insert("nbf".into(), nbf.value(input.now));
            }
            let claims = Value::Object(claims);
            (sign(&claims, &input.key), claims.to_string())
        }
        Payload::Raw(text) => (sign_raw(text, &input.key), text.clone()),
    };
    let key = if input.other_key {
        [input.key.as_slice(), b"-other"].concat()
    } else {
        input.key.clone()
    };
    let mut tampered = token.clone().into_bytes();
    if let Some((at, byte)) = input.tamper {
        tampered[usize::from(at) % token.len()] = byte % 0x80;
    }
    let tampered = String::from_utf8(tampered).unwrap();
    let result = verify::<Map<String, Value>>(&tampered, &key, input.now);

    if tampered != token {
        assert!(
            result.is_err(),
            "a token changed after signing was accepted"
        );
        return;
    }
    if input.other_key {
        assert_eq!(result.unwrap_err(), JwtError::BadSignature);
        return;
    }
    let expected = match serde_json::from_str::<Map<String, Value>>(&payload_text) {
        Err(_) => Err(JwtError::Malformed),
        Ok(claims) => match claims.get("exp").and_then(Value::as_i64) {
            None => Err(JwtError::NoExpiry),
            Some(exp) if exp <= input.now => Err(JwtError::Expired),
            // `nbf`, when present, must be an integer no later than now.
            Some(_) => match claims.get("nbf").map(Value::as_i64) {
                Some(None) => Err(JwtError::BadNotBefore),
                Some(Some(nbf)) if nbf > input.now => Err(JwtError::NotYetValid),
                _ => Ok(claims),
            },
        },
    };
    match (result, expected) {
        (Ok(got), Ok(claims)) => assert_eq!(got, claims),
        (Err(got), Err(expected)) => assert_eq!(got, expected),
        (got, expected) => panic!("verify said {got:?}, expected {expected:?}"),
    }
});
