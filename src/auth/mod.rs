//! Who is calling: user tokens (JWTs) and the admin bearer key.
//!
//! - `keys`: the keys tokens are verified with — the HS secret, PEM public keys, JWKs — and
//!   the choice of the keys a token's header names.
//! - `jwks`: JWKS sources (a file, a URL), reloaded in the background, the last good set kept.
//! - `verify`: the checks a token passes, and the reason of each refusal.

mod jwks;
mod keys;
mod verify;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use subtle::ConstantTimeEq;

pub use verify::{TokenRefusal, TokenVerifier};

use crate::error::{ApiError, ErrorCode};

/// The claims of a token Herald issues (`docs/protocol.md`, "Authentication").
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// The uid, as a decimal string.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Optional device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// A verified user token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u64,
    /// The second (since the epoch) from which the token is no longer accepted: its `exp`
    /// plus the leeway. Its session is closed then.
    pub valid_until: u64,
    pub device: Option<String>,
}

/// Signs the tokens Herald issues (the admin API, `herald token`, the demo) with
/// `HERALD_JWT_SECRET`, when it has one.
#[derive(Clone)]
pub struct TokenIssuer {
    key: Option<EncodingKey>,
}

impl TokenIssuer {
    pub fn new(secret: Option<&str>) -> Self {
        TokenIssuer {
            key: secret.map(|secret| EncodingKey::from_secret(secret.as_bytes())),
        }
    }

    /// Issues an HS256 token for `uid` valid for `ttl_s` seconds; without a secret, 409.
    pub fn issue(&self, uid: u64, ttl_s: u64, device: Option<String>) -> Result<String, ApiError> {
        let key = self.key.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                "this gateway issues no tokens: HERALD_JWT_SECRET is not set \
                 (its user tokens come from the app's identity provider)",
            )
        })?;
        let claims = Claims {
            sub: uid.to_string(),
            exp: jsonwebtoken::get_current_timestamp() + ttl_s,
            dev: device,
        };
        Ok(
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
                .expect("HS256 signing with an in-memory key cannot fail"),
        )
    }
}

/// Longest lifetime of an issued token: 30 days.
const MAX_TOKEN_TTL_S: u64 = 30 * 24 * 3600;
/// Lifetime of an issued token when none is asked for: an hour.
const DEFAULT_TOKEN_TTL_S: u64 = 3600;

/// The lifetime, in seconds, of a token asked for with `requested` (the admin API and
/// `herald token` issue the same ones).
pub fn token_ttl_s(requested: Option<u64>) -> Result<u64, String> {
    match requested.unwrap_or(DEFAULT_TOKEN_TTL_S) {
        ttl_s @ 1..=MAX_TOKEN_TTL_S => Ok(ttl_s),
        _ => Err(format!("must be 1..={MAX_TOKEN_TTL_S} seconds (30 days)")),
    }
}

/// The admin API's bearer key, compared in constant time.
#[derive(Clone)]
pub struct AdminKey(String);

impl AdminKey {
    pub fn new(key: String) -> Self {
        AdminKey(key)
    }

    pub fn check(&self, presented: &str) -> Result<(), ApiError> {
        if bool::from(self.0.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(unauthorized("invalid admin key"))
        }
    }
}

/// The bearer token of an `Authorization` header, if it has one.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-some-length";

    fn verifier() -> TokenVerifier {
        let secret = crate::config::UserTokensConfig {
            jwt_secret: Some(crate::config::Secret::from(SECRET.to_owned())),
        };
        let checks = crate::config::TokenChecksConfig {
            jwt_public_keys: Default::default(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: std::time::Duration::from_secs(300),
            jwt_leeway: std::time::Duration::ZERO,
            jwt_audience: Default::default(),
            jwt_issuer: None,
        };
        TokenVerifier::new(&secret, &checks).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_forged_ones_do_not() {
        let issued = TokenIssuer::new(Some(SECRET))
            .issue(42, 60, Some("phone".into()))
            .unwrap();
        let identity = verifier().check(&issued).unwrap();
        assert_eq!(
            (identity.uid, identity.device.as_deref()),
            (42, Some("phone"))
        );
        let forged = TokenIssuer::new(Some("another-secret-entirely"))
            .issue(42, 60, None)
            .unwrap();
        assert_eq!(
            verifier().check(&forged).unwrap_err(),
            TokenRefusal::Signature
        );
    }

    #[test]
    fn without_a_secret_no_token_is_issued() {
        let error = TokenIssuer::new(None).issue(42, 60, None).unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict);
        assert!(
            error.message.contains("HERALD_JWT_SECRET"),
            "{}",
            error.message
        );
    }

    #[test]
    fn token_lifetimes_are_an_hour_unless_asked_and_at_most_30_days() {
        assert_eq!(token_ttl_s(None), Ok(3600));
        assert_eq!(token_ttl_s(Some(30 * 24 * 3600)), Ok(30 * 24 * 3600));
        assert!(token_ttl_s(Some(0)).is_err());
        assert!(token_ttl_s(Some(30 * 24 * 3600 + 1)).is_err());
    }

    #[test]
    fn admin_key_compare() {
        let key = AdminKey::new("0123456789abcdef".into());
        assert!(key.check("0123456789abcdef").is_ok());
        assert!(key.check("0123456789abcdeF").is_err());
        assert!(key.check("").is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
