//! The HTTP API's JSON bodies (`POST .../backup` and `POST .../backup/{uuid}/restore`) on
//! hostile bytes: `parse_json` never panics, a refused body is a 400, and a body is accepted
//! exactly when it is a JSON object whose known fields have the right types (each at most
//! once) with the required ones present, or the same fields as an array (serde's sequence
//! form of a struct). What an accepted body holds then goes to the checks that follow it in
//! the handlers, which must not panic either.

#![no_main]

use std::fmt;

use aerie::archive::IgnoreRules;
use aerie::backups::BackupRequest;
use aerie::ids::is_canonical_uuid;
use aerie::http::parse_json;
use aerie::restore::RestoreRequest;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// A JSON object's members named in `FIELDS`, in order, duplicates kept (`serde_json::Map`
/// keeps the last). Other members are skipped as serde skips unknown fields, which does not
/// check that their strings are UTF-8: such a body is accepted, its odd bytes unread.
struct Members<const FIELDS: usize>(Vec<(String, Value)>);

/// The field names `Members` keeps, by request type.
const BACKUP: usize = 0;
const RESTORE: usize = 1;

fn field_names(fields: usize) -> &'static [Field] {
    if fields == BACKUP {
        BACKUP_FIELDS
    } else {
        RESTORE_FIELDS
    }
}

impl<'de, const FIELDS: usize> serde::Deserialize<'de> for Members<FIELDS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<const FIELDS: usize>;
        impl<'de, const FIELDS: usize> Visitor<'de> for MembersVisitor<FIELDS> {
            type Value = Members<FIELDS>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if field_names(FIELDS).iter().any(|field| field.0 == name) {
                        members.push((name, map.next_value::<Value>()?));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor::<FIELDS>)
    }
}

/// One field of a request body: its name, whether it is required, its JSON type.
type Field = (&'static str, bool, fn(&Value) -> bool);

const BACKUP_FIELDS: &[Field] = &[
    ("adapter", true, Value::is_string),
    ("uuid", true, Value::is_string),
    ("ignore", false, Value::is_string),
];

const RESTORE_FIELDS: &[Field] = &[
    ("truncate_directory", false, Value::is_boolean),
    ("download_url", false, Value::is_string),
    ("adapter", false, is_string_or_null),
];

/// An optional string field: a string, or `null` for none.
fn is_string_or_null(value: &Value) -> bool {
    value.is_string() || value.is_null()
}

/// The fields of `body` by name when it is a valid body for the `FIELDS` request type,
/// else `None`.
fn valid_fields<const FIELDS: usize>(body: &[u8]) -> Option<Vec<Option<Value>>> {
    let fields = field_names(FIELDS);
    if let Ok(Members(members)) = serde_json::from_slice::<Members<FIELDS>>(body) {
        let mut values = vec![None; fields.len()];
        for (name, value) in members {
            if let Some(i) = fields.iter().position(|field| field.0 == name) {
                if values[i].is_some() || !(fields[i].2)(&value) {
                    return None;
                }
                values[i] = Some(value);
            }
        }
        let complete = fields.iter().zip(&values).all(|(f, v)| !f.1 || v.is_some());
        return complete.then_some(values);
    }
    // serde's sequence form of a struct: the fields in order; missing defaults are
    // only allowed at the end (serde stops at the first missing element).
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if items.len() > fields.len() {
        return None;
    }
    let mut values = vec![None; fields.len()];
    for (i, field) in fields.iter().enumerate() {
        match items.get(i) {
            Some(value) if (field.2)(value) => values[i] = Some(value.clone()),
            Some(_) => return None,
            None if field.1 => return None,
            None => {}
        }
    }
    Some(values)
}

fn string(value: &Option<Value>) -> &str {
    value.as_ref().and_then(Value::as_str).unwrap_or("")
}

fn assert_refused_with_400<T>(result: Result<T, aerie::http::ApiError>, body: &[u8]) {
    match result {
        Ok(_) => panic!(
            "an invalid body was accepted: {:?}",
            String::from_utf8_lossy(body)
        ),
        Err(err) => assert_eq!(err.into_response().status(), StatusCode::BAD_REQUEST),
    }
}

fuzz_target!(|body: &[u8]| {
    let backup = parse_json::<BackupRequest>(body);
    // A backup body is taken when its fields have their types and its uuid is canonical.
    let backup_values = valid_fields::<BACKUP>(body)
        .filter(|values| is_canonical_uuid(string(&values[1])));
    match backup_values {
        Some(values) => {
            let request =
                backup.unwrap_or_else(|e| panic!("a valid backup body was refused: {e:?}"));
            assert_eq!(request.adapter, string(&values[0]));
            assert_eq!(&*request.uuid, string(&values[1]));
            assert_eq!(request.ignore, string(&values[2]));
            let _ = IgnoreRules::parse(&request.ignore).is_ignored("a/b".as_ref(), false);
        }
        None => assert_refused_with_400(backup, body),
    }

    let restore = parse_json::<RestoreRequest>(body);
    match valid_fields::<RESTORE>(body) {
        Some(values) => {
            let request =
                restore.unwrap_or_else(|e| panic!("a valid restore body was refused: {e:?}"));
            let truncate = values[0].as_ref().and_then(Value::as_bool).unwrap_or(false);
            assert_eq!(request.truncate_directory, truncate);
            assert_eq!(request.download_url, string(&values[1]));
            let adapter = values[2].as_ref().and_then(Value::as_str);
            assert_eq!(request.adapter.as_deref(), adapter);
        }
        None => assert_refused_with_400(restore, body),
    }
});
