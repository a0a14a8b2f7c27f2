//! Who may use the server, when `--auth-jwt-secret` is set (off by default,
//! for the local demo). Three ways in, one secret:
//!
//! - an HS256 JWT with `exp` and an optional `prefix` claim (video paths it
//!   may open), as `Authorization: Bearer …`, or for `/ws` from a browser
//!   (which cannot set headers there) as the `access_token` query parameter;
//! - a signed frame URL (`exp` + `sig`, an HMAC-SHA256 over the path and
//!   query, as CDN signed URLs are), so a page can embed one frame;
//! - `/health*` stay open.
//!
//! A missing, malformed or expired credential is 401; a path outside the
//! token's prefix is 403. WebSocket upgrades from another site's page are
//! refused (403) unless its `Origin` is allowed (`--allowed-origins`; the
//! server's own origin always is). See docs/security.md.

use aws_lc_rs::hmac;
use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The claims this server reads from a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Only video paths starting with this may be opened (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// What a request may do: open videos under `prefix` (all when `None`).
#[derive(Debug, Clone, Default)]
pub struct Grant {
    prefix: Option<String>,
}

impl Grant {
    /// Everything (authentication is off, or a signed URL vouches for the request).
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Whether a video path may be opened.
    pub fn allows(&self, path: &str) -> bool {
        self.prefix.as_deref().is_none_or(|prefix| path.starts_with(prefix))
    }

    /// The refusal for a path outside the grant, in the session's words.
    pub fn refusal(&self, path: &str) -> String {
        format!("this token may open videos under {:?} only, not {path:?}", self.prefix.as_deref().unwrap_or(""))
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: send a token (Authorization: Bearer, or access_token for /ws)")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token or signed URL has expired")]
    Expired,
    #[error("invalid signature on the URL")]
    BadSignature,
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Forbidden(_) => "forbidden",
            _ => "unauthorized",
        }
    }

    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::Forbidden(_))
    }
}

/// Domain separation: a URL signature can never pass for anything else.
const URL_SIGNATURE_CONTEXT: &[u8] = b"bucket-streamer signed URL v1\n";

pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    url_key: hmac::Key,
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 0;
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
            url_key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    /// A token for `prefix` (all videos when `None`) valid until `exp`.
    pub fn token(&self, prefix: Option<&str>, exp: u64) -> String {
        let claims = Claims { exp, prefix: prefix.map(str::to_string) };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 encodes")
    }

    /// Checks a token and returns what it grants.
    pub fn check_token(&self, token: &str) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(Grant { prefix: data.claims.prefix.filter(|p| !p.is_empty()) }),
            Err(error) if matches!(error.kind(), ErrorKind::ExpiredSignature) => Err(AuthError::Expired),
            Err(error) => Err(AuthError::Invalid(error.to_string())),
        }
    }

    /// The grant of a request's `Authorization: Bearer` header, else of `query_token`.
    pub fn grant(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Grant, AuthError> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")));
        match bearer.or(query_token) {
            Some(token) => self.check_token(token.trim()),
            None => Err(AuthError::Missing),
        }
    }

    /// `path_and_query` (which must already carry `exp=`) with `&sig=` appended.
    pub fn sign_url(&self, path_and_query: &str) -> String {
        let tag = hmac::sign(&self.url_key, &signed_message(path_and_query));
        format!("{path_and_query}&sig={}", hex(tag.as_ref()))
    }

    /// Checks a signed URL: `query` is the raw query string, with `exp` and
    /// `sig`; the signature covers the path and every other parameter as sent.
    pub fn check_signed_url(&self, path: &str, query: &str) -> Result<(), AuthError> {
        let mut signature = None;
        let unsigned: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix("sig=") {
                Some(value) => {
                    signature = Some(value);
                    false
                }
                None => true,
            })
            .collect();
        let signature = signature.and_then(unhex).ok_or(AuthError::BadSignature)?;
        let exp = unsigned
            .iter()
            .find_map(|pair| pair.strip_prefix("exp="))
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or(AuthError::BadSignature)?;
        let message = signed_message(&format!("{path}?{}", unsigned.join("&")));
        hmac::verify(&self.url_key, &message, &signature).map_err(|_| AuthError::BadSignature)?;
        if exp <= now() {
            return Err(AuthError::Expired);
        }
        Ok(())
    }
}

fn signed_message(path_and_query: &str) -> Vec<u8> {
    [URL_SIGNATURE_CONTEXT, path_and_query.as_bytes()].concat()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether a WebSocket upgrade's `Origin` may connect: no `Origin` (not a
/// browser), the server's own origin (same host), or one of `allowed`
/// (`*` allows all). With no list configured every origin is allowed.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    if allowed.is_empty() || allowed.iter().any(|a| a == "*" || a.trim_end_matches('/') == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
    host.is_some() && origin_host == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_prefix_until_they_expire() {
        let auth = Auth::new("secret");
        let grant = auth.check_token(&auth.token(Some("cams/"), now() + 60)).unwrap();
        assert!(grant.allows("cams/a.mp4") && !grant.allows("other/a.mp4"));
        assert_eq!(auth.check_token(&auth.token(None, now() - 1)).unwrap_err(), AuthError::Expired);
        let forged = Auth::new("not the secret").token(None, now() + 60);
        assert!(matches!(auth.check_token(&forged), Err(AuthError::Invalid(_))));
        assert!(matches!(auth.check_token("not.a.token"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn signed_urls_cover_path_query_and_expiry() {
        let auth = Auth::new("secret");
        let exp = now() + 60;
        let url = auth.sign_url(&format!("/api/v1/frame?video=a.mp4&frame=3&exp={exp}"));
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(auth.check_signed_url(path, query), Ok(()));
        let other_frame = query.replace("frame=3", "frame=4");
        assert_eq!(auth.check_signed_url(path, &other_frame), Err(AuthError::BadSignature));
        let later = query.replace(&exp.to_string(), &(exp + 1000).to_string());
        assert_eq!(auth.check_signed_url(path, &later), Err(AuthError::BadSignature));
        assert_eq!(auth.check_signed_url("/api/v1/other", query), Err(AuthError::BadSignature));
        for forged in ["sig=zz", "sig=abc", "sig=", &format!("sig={}", "ab".repeat(100))] {
            let query = format!("video=a.mp4&frame=3&exp={exp}&{forged}");
            assert_eq!(auth.check_signed_url(path, &query), Err(AuthError::BadSignature), "{forged}");
        }
        let unsigned_expiry = auth.sign_url("/api/v1/frame?video=a.mp4&frame=3");
        let (path_only, query) = unsigned_expiry.split_once('?').unwrap();
        assert_eq!(auth.check_signed_url(path_only, query), Err(AuthError::BadSignature), "no exp");
        let stale = auth.sign_url("/api/v1/frame?video=a.mp4&frame=3&exp=1000");
        let (path, query) = stale.split_once('?').unwrap();
        assert_eq!(auth.check_signed_url(path, query), Err(AuthError::Expired));
    }

    #[test]
    fn origins() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "frames.example:3000".parse().unwrap());
        assert!(origin_allowed(&headers, &["https://app.example".into()]), "no Origin: not a browser");
        headers.insert(header::ORIGIN, "http://frames.example:3000".parse().unwrap());
        assert!(origin_allowed(&headers, &["https://app.example".into()]), "same origin");
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!origin_allowed(&headers, &["https://app.example".into()]));
        assert!(origin_allowed(&headers, &[]), "no list: all allowed");
        headers.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(origin_allowed(&headers, &["https://app.example".into()]));
    }
}
