//! Who is calling: user tokens (HS256 JWTs) and the admin bearer key.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorCode};

/// The claims of a user token (`docs/protocol.md`, "Authentication").
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub exp: u64,
    pub device: Option<String>,
}

/// Signs and verifies user tokens with the gateway's secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: a session is closed when its token expires, with no grace period.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies a token: signature, algorithm, expiry and a uid in range.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| unauthorized(format!("invalid token: {e}")))?;
        // The library accepts `exp == now`; a token is valid only before the second it names.
        if data.claims.exp <= jsonwebtoken::get_current_timestamp() {
            return Err(unauthorized("invalid token: ExpiredSignature"));
        }
        let uid = data
            .claims
            .sub
            .parse::<u64>()
            .ok()
            .and_then(|uid| crate::model::valid_id(uid).ok())
            .ok_or_else(|| unauthorized("invalid token: `sub` is not a uid"))?;
        Ok(Identity {
            uid,
            exp: data.claims.exp,
            device: data.claims.dev,
        })
    }

    /// Issues a token for `uid` valid for `ttl_s` seconds.
    pub fn issue(&self, uid: u64, ttl_s: u64, device: Option<String>) -> String {
        let claims = Claims {
            sub: uid.to_string(),
            exp: jsonwebtoken::get_current_timestamp() + ttl_s,
            dev: device,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
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

    #[test]
    fn issued_tokens_verify() {
        let keys = TokenKeys::new(SECRET);
        let identity = keys
            .verify(&keys.issue(42, 60, Some("phone".into())))
            .unwrap();
        assert_eq!(
            (identity.uid, identity.device.as_deref()),
            (42, Some("phone"))
        );
    }

    /// A token with any subject and expiry, signed with `SECRET`, as another JWT library would.
    fn signed(sub: &str, exp: u64) -> String {
        let claims = Claims {
            sub: sub.into(),
            exp,
            dev: None,
        };
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    #[test]
    fn forged_and_expired_tokens_are_refused() {
        let keys = TokenKeys::new(SECRET);
        let now = jsonwebtoken::get_current_timestamp();
        assert!(keys.verify(&signed("42", now + 60)).is_ok());
        let forged = TokenKeys::new("another-secret-entirely").issue(42, 60, None);
        let expired = signed("42", now - 1);
        let expiring_now = signed("42", now);
        for token in [forged, expired, expiring_now] {
            assert_eq!(
                keys.verify(&token).unwrap_err().code,
                ErrorCode::Unauthorized
            );
        }
    }

    #[test]
    fn a_non_numeric_subject_is_refused() {
        let keys = TokenKeys::new(SECRET);
        let now = jsonwebtoken::get_current_timestamp();
        assert!(keys.verify(&signed("alice", now + 60)).is_err());
        assert!(keys.verify(&signed("0", now + 60)).is_err());
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
