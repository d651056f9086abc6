//! The checks a user token passes — its header, a key it names or whose family fits its
//! algorithm, the signature, `exp` and `nbf` within the leeway, `aud` and `iss` when set, a
//! uid for `sub` — and the reason of each refusal, the same on every path (HTTP, WebSocket).
//! Claims are looked at only once a signature verified.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use smallvec::SmallVec;

use super::jwks::JwksSource;
use super::keys::{choose, NoKey, VerifyingKey};
use super::{unauthorized, Identity};
use crate::config::{TokenChecksConfig, UserTokensConfig};
use crate::error::ApiError;

/// Why a token is refused: the text a client reads, which names no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} not accepted")]
    Algorithm(String),
    #[error("unknown key id")]
    UnknownKeyId,
    #[error("signature does not verify")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    #[error("token audience not accepted")]
    Audience,
    #[error("token issuer not accepted")]
    Issuer,
    #[error("token has no `{0}` claim")]
    MissingClaim(String),
    #[error("token claim `{0}` is malformed")]
    BadClaim(String),
    #[error("token subject (`sub`) is not a uid")]
    Subject,
}

/// The claims Herald reads; the library checks `exp`, `nbf`, `aud` and `iss` itself.
#[derive(Deserialize)]
struct Presented {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    dev: Option<String>,
}

/// The part of a token's header that chooses its key.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Verifies user tokens against every key configured.
pub struct TokenVerifier {
    /// The keys given at start: the secret, the PEM files.
    fixed: Vec<VerifyingKey>,
    jwks: Vec<Arc<JwksSource>>,
    /// The claim checks; its algorithms are set to the token's own for each check.
    validation: Validation,
    leeway_s: u64,
    refresh_every: Duration,
}

impl TokenVerifier {
    /// The keys and checks of the settings: PEM and JWKS files are read now (one that cannot
    /// be used fails the start, naming it); a JWKS URL loads once [`TokenVerifier::start`]
    /// runs.
    pub fn new(
        secret: &UserTokensConfig,
        checks: &TokenChecksConfig,
    ) -> anyhow::Result<TokenVerifier> {
        let mut fixed: Vec<VerifyingKey> = secret
            .jwt_secret
            .iter()
            .map(|s| VerifyingKey::secret(s.expose()))
            .collect();
        for file in checks.jwt_public_keys.iter() {
            let pem = std::fs::read(&file.path).map_err(|e| {
                anyhow::anyhow!(
                    "HERALD_JWT_PUBLIC_KEYS: cannot read {}: {e}",
                    file.path.display()
                )
            })?;
            let key = VerifyingKey::from_pem(file.kid.clone(), &pem).map_err(|problem| {
                anyhow::anyhow!("HERALD_JWT_PUBLIC_KEYS: {} {problem}", file.path.display())
            })?;
            fixed.push(key);
        }
        let mut jwks = Vec::new();
        if let Some(path) = &checks.jwks_file {
            jwks.push(Arc::new(JwksSource::file(path.clone())?));
        }
        if let Some(url) = &checks.jwks_url {
            jwks.push(Arc::new(JwksSource::url(url.clone())?));
        }
        Ok(TokenVerifier {
            fixed,
            jwks,
            validation: validation(checks),
            leeway_s: checks.jwt_leeway.as_secs(),
            refresh_every: checks.jwks_refresh,
        })
    }

    /// Starts reloading the JWKS sources in the background, for the life of the process.
    pub fn start(&self) {
        for source in &self.jwks {
            actix_web::rt::spawn(source.clone().refresh_forever(self.refresh_every));
        }
    }

    /// Why the gateway cannot verify tokens yet, if it cannot: a JWKS URL never loaded.
    pub fn not_ready(&self) -> Option<&'static str> {
        (!self.jwks.iter().all(|source| source.is_loaded()))
            .then_some("token keys not loaded yet from HERALD_JWKS_URL")
    }

    /// Verifies a token; a `kid` no key has makes the JWKS sources load early first.
    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let verdict = match self.check(token) {
            Err(TokenRefusal::UnknownKeyId) if !self.jwks.is_empty() => {
                for source in &self.jwks {
                    source.refresh_early().await;
                }
                self.check(token)
            }
            verdict => verdict,
        };
        verdict.map_err(|refusal| unauthorized(refusal.to_string()))
    }

    /// Verifies a token with the keys loaded now.
    pub fn check(&self, token: &str) -> Result<Identity, TokenRefusal> {
        let header = read_header(token)?;
        let algorithm: Algorithm = header
            .alg
            .parse()
            .map_err(|_| TokenRefusal::Algorithm(shown(&header.alg)))?;
        let loaded: SmallVec<[Arc<Vec<VerifyingKey>>; 2]> =
            self.jwks.iter().map(|source| source.keys()).collect();
        let keys = self
            .fixed
            .iter()
            .chain(loaded.iter().flat_map(|set| set.iter()));
        let (chosen, kid_named) =
            choose(keys, algorithm, header.kid.as_deref()).map_err(|no_key| match no_key {
                NoKey::Algorithm => TokenRefusal::Algorithm(format!("{algorithm:?}")),
                NoKey::UnknownKid => TokenRefusal::UnknownKeyId,
            })?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        for key in chosen {
            match jsonwebtoken::decode::<Presented>(token, key.decoding(), &validation) {
                Ok(data) => return self.identity(data.claims),
                Err(error) if *error.kind() == ErrorKind::InvalidSignature => continue,
                Err(error) => return Err(refused_for(error.into_kind(), algorithm)),
            }
        }
        if header.kid.is_some() && !kid_named {
            Err(TokenRefusal::UnknownKeyId)
        } else {
            Err(TokenRefusal::Signature)
        }
    }

    fn identity(&self, claims: Presented) -> Result<Identity, TokenRefusal> {
        // Required by the validation, so present.
        let exp = claims.exp.ok_or(TokenRefusal::MissingClaim("exp".into()))?;
        // Valid only before the second `exp` names (plus the leeway); the library lets that
        // second itself through.
        let valid_until = exp.saturating_add(self.leeway_s);
        if valid_until <= jsonwebtoken::get_current_timestamp() {
            return Err(TokenRefusal::Expired);
        }
        let uid = claims
            .sub
            .and_then(|sub| sub.parse::<u64>().ok())
            .and_then(|uid| crate::model::valid_id(uid).ok())
            .ok_or(TokenRefusal::Subject)?;
        Ok(Identity {
            uid,
            valid_until,
            device: claims.dev,
        })
    }
}

/// The claim checks of the settings.
fn validation(checks: &TokenChecksConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = checks.jwt_leeway.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    // Unset, a token naming an audience is refused (RFC 7519, 4.1.3): it is meant for
    // someone, and Herald was not told it is them.
    if !checks.jwt_audience.is_empty() {
        validation.set_audience(&checks.jwt_audience);
        required.push("aud");
    }
    if let Some(issuer) = &checks.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The header of a compact JWS (three base64url parts).
fn read_header(token: &str) -> Result<Header, TokenRefusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRefusal::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRefusal::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenRefusal::Malformed)
}

/// An algorithm name as a client may be shown it: short and plain, or not at all.
fn shown(alg: &str) -> String {
    if alg.len() <= 16 && alg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        alg.to_owned()
    } else {
        "(unreadable)".to_owned()
    }
}

/// The refusal of a token whose signature did verify, or that could not be read.
fn refused_for(error: ErrorKind, algorithm: Algorithm) -> TokenRefusal {
    match error {
        ErrorKind::ExpiredSignature => TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
        ErrorKind::InvalidAudience => TokenRefusal::Audience,
        ErrorKind::InvalidIssuer => TokenRefusal::Issuer,
        ErrorKind::MissingRequiredClaim(claim) => TokenRefusal::MissingClaim(claim),
        ErrorKind::InvalidClaimFormat(claim) => TokenRefusal::BadClaim(claim),
        ErrorKind::InvalidAlgorithm => TokenRefusal::Algorithm(format!("{algorithm:?}")),
        _ => TokenRefusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use serde_json::{json, Value};

    use super::*;
    use crate::config::{CommaList, PublicKeyFiles, Secret};

    const SECRET: &str = "a-test-secret-of-some-length";

    fn checks(audience: &str, issuer: Option<&str>) -> TokenChecksConfig {
        TokenChecksConfig {
            jwt_public_keys: PublicKeyFiles::default(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            jwt_leeway: Duration::from_secs(30),
            jwt_audience: audience.parse::<CommaList>().unwrap(),
            jwt_issuer: issuer.map(str::to_owned),
        }
    }

    fn verifier(checks: &TokenChecksConfig) -> TokenVerifier {
        let secret = UserTokensConfig {
            jwt_secret: Some(Secret::from(SECRET.to_owned())),
        };
        TokenVerifier::new(&secret, checks).unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    /// A token of these claims (times relative to now) signed with `SECRET`.
    fn signed(claims: Value) -> String {
        let mut claims = claims;
        for time in ["exp", "nbf"] {
            if let Some(offset) = claims.get(time).and_then(Value::as_i64) {
                claims[time] = json!(now() + offset);
            }
        }
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&JwtHeader::new(Algorithm::HS512), &claims, &key).unwrap()
    }

    #[test]
    fn times_are_honoured_within_the_leeway_and_sessions_end_at_exp_plus_leeway() {
        let verifier = verifier(&checks("", None));
        let identity = verifier
            .check(&signed(json!({"sub": "42", "exp": 60})))
            .unwrap();
        assert_eq!(identity.valid_until as i64, now() + 60 + 30);
        assert!(verifier
            .check(&signed(json!({"sub": "42", "exp": -20})))
            .is_ok());
        let expired = signed(json!({"sub": "42", "exp": -30}));
        assert_eq!(verifier.check(&expired).unwrap_err(), TokenRefusal::Expired);
        let early = signed(json!({"sub": "42", "exp": 600, "nbf": 300}));
        assert_eq!(
            verifier.check(&early).unwrap_err(),
            TokenRefusal::NotYetValid
        );
        assert!(verifier
            .check(&signed(json!({"sub": "42", "exp": 600, "nbf": 20})))
            .is_ok());
    }

    #[test]
    fn audience_and_issuer_are_checked_when_set_and_then_required() {
        let verifier = verifier(&checks("chat, herald", Some("https://id.example")));
        let good = json!({"sub": "42", "exp": 60, "aud": "herald", "iss": "https://id.example"});
        assert!(verifier.check(&signed(good.clone())).is_ok());
        let refusal = |change: Value| {
            let mut claims = good.clone();
            for (name, value) in change.as_object().unwrap() {
                match value {
                    Value::Null => claims.as_object_mut().unwrap().remove(name),
                    _ => claims
                        .as_object_mut()
                        .unwrap()
                        .insert(name.clone(), value.clone()),
                };
            }
            verifier.check(&signed(claims)).unwrap_err().to_string()
        };
        assert_eq!(
            refusal(json!({"aud": "mail"})),
            "token audience not accepted"
        );
        assert_eq!(refusal(json!({"aud": null})), "token has no `aud` claim");
        assert_eq!(
            refusal(json!({"iss": "https://evil.example"})),
            "token issuer not accepted"
        );
        assert_eq!(refusal(json!({"iss": null})), "token has no `iss` claim");
        assert_eq!(
            refusal(json!({"sub": "alice"})),
            "token subject (`sub`) is not a uid"
        );
        assert_eq!(
            refusal(json!({"sub": "0"})),
            "token subject (`sub`) is not a uid"
        );
    }

    #[test]
    fn without_an_audience_set_a_token_naming_one_is_refused() {
        let verifier = verifier(&checks("", None));
        let aimed = signed(json!({"sub": "42", "exp": 60, "aud": "mail"}));
        assert_eq!(verifier.check(&aimed).unwrap_err(), TokenRefusal::Audience);
    }

    #[test]
    fn unreadable_tokens_and_unknown_algorithms_are_refused_by_name() {
        let verifier = verifier(&checks("", None));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"42","exp":9999999999}"#)
        );
        assert_eq!(
            verifier.check(&none).unwrap_err().to_string(),
            "algorithm none not accepted"
        );
        for malformed in ["", "a.b", "a.b.c.d", "!!!.e30.x"] {
            assert_eq!(
                verifier.check(malformed).unwrap_err(),
                TokenRefusal::Malformed
            );
        }
        let rs256 = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#));
        assert_eq!(
            verifier.check(&rs256).unwrap_err().to_string(),
            "algorithm RS256 not accepted"
        );
        let odd = format!(
            "{}.e30.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"<script>"}"#)
        );
        assert_eq!(
            verifier.check(&odd).unwrap_err().to_string(),
            "algorithm (unreadable) not accepted"
        );
    }
}
