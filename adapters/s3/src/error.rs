//! S3 SDK errors as [`AdapterError`]s: a kind the host acts on, whether trying again may
//! help, and a message that says which operation failed on which bucket or object.

use std::fmt::Display;

use aerie_adapter_api::{AdapterError, ErrorKind};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Describes a failed S3 call. `operation` is the S3 operation (`UploadPart`), `object` what
/// it was about (`s3://bucket/key part 3`), `bucket` the bucket (named when it is missing).
pub fn s3_error<E>(
    operation: &str,
    object: impl Display,
    bucket: &str,
    err: &SdkError<E, HttpResponse>,
) -> AdapterError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default();
    let context = format!("S3 {operation} of {object} failed");

    let (kind, retryable, hint) = match err {
        SdkError::TimeoutError(_) => (
            ErrorKind::UNAVAILABLE,
            true,
            "the S3 server did not answer in time",
        ),
        SdkError::DispatchFailure(_) => (
            ErrorKind::UNAVAILABLE,
            true,
            "cannot reach the S3 server (check `endpoint` and the network)",
        ),
        SdkError::ResponseError(_) => (
            ErrorKind::UNAVAILABLE,
            true,
            "the S3 server's answer was cut short",
        ),
        SdkError::ConstructionFailure(_) => {
            (ErrorKind::OTHER, false, "the request could not be built")
        }
        _ => classify(code, status),
    };

    let detail = match err {
        SdkError::ServiceError(_) => {
            let mut detail = code.to_string();
            if let Some(message) = err.message().filter(|m| !m.is_empty()) {
                if !detail.is_empty() {
                    detail.push_str(": ");
                }
                detail.push_str(message);
            }
            match status {
                Some(status) if detail.is_empty() => format!("HTTP {status}"),
                Some(status) => format!("{detail} (HTTP {status})"),
                None => detail,
            }
        }
        _ => causes(err),
    };

    let message = if code == "NoSuchBucket" {
        format!(
            "{context}: the bucket `{bucket}` does not exist (check `bucket`, `endpoint` and \
             `region` in the adapter's config): {detail}"
        )
    } else if hint.is_empty() {
        format!("{context}: {detail}")
    } else {
        format!("{context}: {hint}: {detail}")
    };
    AdapterError::new(kind, message).with_retryable(retryable)
}

/// An error and its sources, `a: b: c`, leaving out a source that only repeats its parent.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The kind, retry hint and advice for an error answer from the server.
fn classify(code: &str, status: Option<u16>) -> (ErrorKind, bool, &'static str) {
    match (code, status) {
        ("NoSuchBucket" | "NoSuchKey" | "NotFound", _) | (_, Some(404)) => {
            (ErrorKind::NOT_FOUND, false, "")
        }
        (
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AllAccessDisabled"
            | "AccountProblem",
            _,
        )
        | (_, Some(401 | 403)) => (
            ErrorKind::PERMISSION_DENIED,
            false,
            "access denied (check the credentials and the bucket's policy)",
        ),
        (
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests",
            _,
        )
        | (_, Some(429 | 503)) => (
            ErrorKind::UNAVAILABLE,
            true,
            "the S3 server asks to slow down",
        ),
        ("RequestTimeout" | "InternalError" | "ServiceUnavailable", _) => {
            (ErrorKind::UNAVAILABLE, true, "")
        }
        (_, Some(500..=599)) => (ErrorKind::UNAVAILABLE, true, "the S3 server failed"),
        ("QuotaExceeded" | "StorageFull", _) => (ErrorKind::STORAGE_FULL, false, ""),
        _ => (ErrorKind::OTHER, false, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("NoSuchBucket", Some(404)).0, ErrorKind::NOT_FOUND);
        assert_eq!(classify("", Some(404)).0, ErrorKind::NOT_FOUND);
        assert_eq!(
            classify("AccessDenied", Some(403)).0,
            ErrorKind::PERMISSION_DENIED
        );
        assert_eq!(
            classify("SlowDown", Some(503)),
            (
                ErrorKind::UNAVAILABLE,
                true,
                "the S3 server asks to slow down"
            )
        );
        assert!(classify("InternalError", Some(500)).1);
        assert!(classify("", Some(502)).1);
        assert!(!classify("InvalidArgument", Some(400)).1);
        assert_eq!(classify("InvalidArgument", Some(400)).0, ErrorKind::OTHER);
    }
}
