//! The span every request is logged in, with its secrets left out: a download link's
//! one-time token (`/download/backup?token=<JWT>`, and Wings' other signed links passed
//! through) is a credential, and a log is read by more people than the Panel's users. Every
//! query value is left out (which are secret is the route's business, and routes passed
//! through to Wings are not aerie's), and any JWT in the path; headers (`Authorization`)
//! are never recorded.

use axum::http::{Request, Uri};
use tower_http::trace::MakeSpan;

/// What a secret is replaced with in a logged URI.
const REDACTED: &str = "[redacted]";

/// The start of every JWT: `{"` in base64url, how a JOSE header's JSON object begins.
const JWT_START: &str = "eyJ";

/// The request span: method, the URI with secrets redacted, HTTP version (what
/// `tower_http`'s default span shows, at the same debug level, without the secrets).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactedSpan;

impl<B> MakeSpan<B> for RedactedSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        tracing::debug_span!(
            "request",
            method = %request.method(),
            uri = %redacted_uri(request.uri()),
            version = ?request.version(),
        )
    }
}

/// `uri` as it may be logged: the value of every query parameter, and every JWT anywhere
/// in it, replaced with `[redacted]`; the parameters' names are kept.
pub fn redacted_uri(uri: &Uri) -> String {
    let shown = match uri.query() {
        None => uri.path().to_string(),
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}={REDACTED}"),
                    None => pair.to_string(),
                })
                .collect();
            format!("{}?{}", uri.path(), pairs.join("&"))
        }
    };
    redact_jwts(&shown)
}

/// `text` with every JWT-shaped run (`eyJ` then base64url, a dot, more base64url and dots)
/// replaced with `[redacted]`.
fn redact_jwts(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(JWT_START) {
        let candidate = &rest[start..];
        let header = candidate
            .find(|c: char| !is_base64url(c))
            .unwrap_or(candidate.len());
        let after_header = &candidate[header..];
        let is_jwt = after_header.starts_with('.')
            && after_header[1..].starts_with(|c: char| is_base64url(c));
        if !is_jwt {
            shown.push_str(&rest[..start + JWT_START.len()]);
            rest = &rest[start + JWT_START.len()..];
            continue;
        }
        let length = candidate
            .find(|c: char| !is_base64url(c) && c != '.')
            .unwrap_or(candidate.len());
        shown.push_str(&rest[..start]);
        shown.push_str(REDACTED);
        rest = &candidate[length..];
    }
    shown.push_str(rest);
    shown
}

/// Whether `c` is of the base64url alphabet (RFC 4648 §5), which JWTs are written in.
fn is_base64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real download token's shape (header, claims, signature).
    const JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJiYWNrdXBfdXVpZCI6IjJiM2MifQ.olfwZc8VKYxg25tapj4hZ4Br0_NdFwbeXcxmZu68dZw";

    fn shown(uri: &str) -> String {
        redacted_uri(&uri.parse().unwrap())
    }

    #[test]
    fn every_query_value_is_redacted_and_the_names_kept() {
        assert_eq!(
            shown(&format!("/download/backup?token={JWT}")),
            "/download/backup?token=[redacted]"
        );
        assert_eq!(
            shown(&format!("/download/file?a=1&Token={JWT}&flag&b=")),
            "/download/file?a=[redacted]&Token=[redacted]&flag&b=[redacted]"
        );
        assert_eq!(shown("/api/system"), "/api/system");
    }

    #[test]
    fn a_jwt_in_the_path_is_redacted() {
        assert_eq!(
            shown(&format!("/api/{JWT}/y?z=1")),
            "/api/[redacted]/y?z=[redacted]"
        );
        assert_eq!(shown(&format!("/a/x{JWT}")), "/a/x[redacted]");
    }

    #[test]
    fn what_only_looks_like_the_start_of_one_is_kept() {
        for uri in [
            "/api/servers/eyJ/backups",
            "/a/eyJabc",
            "/a/eyJabc./b",
            "/api/servers/0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7/backups",
        ] {
            assert_eq!(shown(uri), uri);
        }
    }
}
