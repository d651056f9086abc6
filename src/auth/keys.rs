//! The keys user tokens are verified with — the HS secret, PEM public keys, JWKs — each with
//! the algorithms its type allows, and the choice of the keys a token's header names.
//!
//! A key verifies only the algorithms of its own family (an RSA key RS*/PS*, a P-256 key ES256,
//! …, the secret HS*), so a token can never have a public key taken for an HMAC secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use smallvec::SmallVec;

/// The most keys a token is tried against (a token without `kid`, with several keys of its
/// family loaded): each try costs a signature check.
pub const MAX_KEYS_TRIED: usize = 4;

/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// A key user tokens may be signed with.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The id tokens name it by in their header; keys without one are tried by family.
    pub kid: Option<String>,
    key: DecodingKey,
    /// What it may verify: algorithms of its own family only.
    algorithms: SmallVec<[Algorithm; 6]>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why a key cannot be used; it names no key material.
pub type KeyProblem = String;

impl VerifyingKey {
    /// The HS256/384/512 secret (`HERALD_JWT_SECRET`).
    pub fn secret(secret: &str) -> VerifyingKey {
        VerifyingKey {
            kid: None,
            key: DecodingKey::from_secret(secret.as_bytes()),
            algorithms: AlgorithmFamily::Hmac.algorithms().into(),
        }
    }

    /// A PEM public key (`-----BEGIN PUBLIC KEY-----`, or `RSA PUBLIC KEY`): RSA, EC P-256 or
    /// P-384, Ed25519. It is checked as a JWK of the same key would be.
    pub fn from_pem(kid: Option<String>, pem: &[u8]) -> Result<VerifyingKey, KeyProblem> {
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(|_| "is not a PEM public key of RSA, EC or Ed25519".to_owned())?;
        let mut jwk = Jwk::from_decoding_key(&key, None)
            .map_err(|e| format!("is not a usable public key: {e}"))?;
        jwk.common.key_id = kid;
        VerifyingKey::from_jwk(&jwk)
    }

    /// A JWK of a public key. Refused: a `use` other than `sig`, an `alg` Herald does not
    /// verify or that does not fit the key, symmetric keys (they come from
    /// `HERALD_JWT_SECRET` only, never from a published set), RSA under 2048 bits, points off
    /// their curve.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, KeyProblem> {
        match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(_) => return Err("has a `use` other than `sig`".into()),
        }
        let (key, fitting): (DecodingKey, &[Algorithm]) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let modulus = decoded(&rsa.n, "n")?;
                let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(format!("is an RSA key under {MIN_RSA_BITS} bits"));
                }
                let exponent = decoded(&rsa.e, "e")?;
                let key = DecodingKey::from_rsa_raw_components(&modulus, &exponent);
                (key, AlgorithmFamily::Rsa.algorithms())
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (size, algorithm) = match ec.curve {
                    EllipticCurve::P256 => (32, Algorithm::ES256),
                    EllipticCurve::P384 => (48, Algorithm::ES384),
                    _ => return Err("is on a curve Herald does not verify".into()),
                };
                let (x, y) = (decoded(&ec.x, "x")?, decoded(&ec.y, "y")?);
                if x.len() != size || y.len() != size {
                    return Err("has coordinates of the wrong size for its curve".into());
                }
                let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                    .map_err(|_| "has coordinates that are not base64url".to_owned())?;
                let fitting = match algorithm {
                    Algorithm::ES256 => &[Algorithm::ES256][..],
                    _ => &[Algorithm::ES384][..],
                };
                (key, fitting)
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                // The verifier reads the first 32 bytes: any other length is refused here.
                if okp.curve != EllipticCurve::Ed25519 || decoded(&okp.x, "x")?.len() != 32 {
                    return Err("is an OKP key that is not Ed25519".into());
                }
                let key = DecodingKey::from_ed_components(&okp.x)
                    .map_err(|_| "has an `x` that is not base64url".to_owned())?;
                (key, AlgorithmFamily::Ed.algorithms())
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err("is a symmetric key: those come from HERALD_JWT_SECRET only".into())
            }
            _ => return Err("has a key type Herald does not verify".into()),
        };
        let algorithms: SmallVec<[Algorithm; 6]> = match jwk.common.key_algorithm {
            None => fitting.into(),
            Some(named) => match Algorithm::try_from(named) {
                Ok(algorithm) if fitting.contains(&algorithm) => [algorithm].into_iter().collect(),
                _ => {
                    return Err(format!(
                        "names `alg` {named}, which Herald does not accept for it"
                    ))
                }
            },
        };
        // Parses the key as a verification would (an EC point off its curve fails here).
        let probe = algorithms[0];
        if jsonwebtoken::crypto::verify("", b"", &key, probe).is_err() {
            return Err("is not a valid key".into());
        }
        Ok(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            key,
            algorithms,
        })
    }

    /// The key to check a signature of `algorithm` with.
    pub fn decoding(&self) -> &DecodingKey {
        &self.key
    }

    fn fits(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

fn decoded(base64url: &str, what: &str) -> Result<Vec<u8>, KeyProblem> {
    URL_SAFE_NO_PAD
        .decode(base64url.trim_end_matches('='))
        .map_err(|_| format!("has an `{what}` that is not base64url"))
}

/// Why no key was chosen for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// No key may verify the token's algorithm (or the key it names may not).
    Algorithm,
    /// The token names a key id no key has, and no key without an id fits it.
    UnknownKid,
}

/// The keys to try for a token signed with `algorithm` naming `kid`, at most
/// [`MAX_KEYS_TRIED`]; and whether `kid` named one of them.
///
/// A `kid` chooses the keys with that id. A `kid` no key has falls back to the keys without
/// an id (the secret, a PEM key given without one), so tokens that carry a `kid` keep working
/// against them. A token without `kid` is tried against every key of its family.
pub fn choose<'k>(
    keys: impl Iterator<Item = &'k VerifyingKey> + Clone,
    algorithm: Algorithm,
    kid: Option<&str>,
) -> Result<(SmallVec<[&'k VerifyingKey; MAX_KEYS_TRIED]>, bool), NoKey> {
    let bounded = |keys: &mut dyn Iterator<Item = &'k VerifyingKey>| {
        keys.take(MAX_KEYS_TRIED)
            .collect::<SmallVec<[&'k VerifyingKey; MAX_KEYS_TRIED]>>()
    };
    let Some(kid) = kid else {
        let chosen = bounded(&mut keys.filter(|k| k.fits(algorithm)));
        return if chosen.is_empty() {
            Err(NoKey::Algorithm)
        } else {
            Ok((chosen, false))
        };
    };
    let mut named = keys
        .clone()
        .filter(|k| k.kid.as_deref() == Some(kid))
        .peekable();
    if named.peek().is_some() {
        let chosen = bounded(&mut named.filter(|k| k.fits(algorithm)));
        return if chosen.is_empty() {
            Err(NoKey::Algorithm)
        } else {
            Ok((chosen, true))
        };
    }
    let unnamed = bounded(&mut keys.filter(|k| k.kid.is_none() && k.fits(algorithm)));
    if unnamed.is_empty() {
        Err(NoKey::UnknownKid)
    } else {
        Ok((unnamed, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed25519(kid: &str) -> VerifyingKey {
        // Any 32 bytes on the curve: the public key of the RFC 8032 test vector 1.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"
        }))
        .unwrap();
        VerifyingKey::from_jwk(&jwk).unwrap()
    }

    fn kids<'k>(chosen: &[&'k VerifyingKey]) -> Vec<Option<&'k str>> {
        chosen.iter().map(|k| k.kid.as_deref()).collect()
    }

    #[test]
    fn a_kid_chooses_its_key_and_an_unknown_one_falls_back_to_keys_without_an_id() {
        let keys = [
            ed25519("old"),
            ed25519("new"),
            VerifyingKey::secret("s".repeat(16).as_str()),
        ];
        let (chosen, named) = choose(keys.iter(), Algorithm::EdDSA, Some("new")).unwrap();
        assert_eq!((kids(&chosen), named), (vec![Some("new")], true));
        let (chosen, named) = choose(keys.iter(), Algorithm::EdDSA, None).unwrap();
        assert_eq!(
            (kids(&chosen), named),
            (vec![Some("old"), Some("new")], false)
        );
        assert_eq!(
            choose(keys.iter(), Algorithm::EdDSA, Some("gone")).unwrap_err(),
            NoKey::UnknownKid
        );
        let (chosen, named) = choose(keys.iter(), Algorithm::HS256, Some("gone")).unwrap();
        assert_eq!((kids(&chosen), named), (vec![None], false));
    }

    #[test]
    fn an_algorithm_outside_the_keys_family_chooses_nothing() {
        let keys = [ed25519("ed")];
        for algorithm in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            assert_eq!(
                choose(keys.iter(), algorithm, None).unwrap_err(),
                NoKey::Algorithm
            );
            assert_eq!(
                choose(keys.iter(), algorithm, Some("ed")).unwrap_err(),
                NoKey::Algorithm
            );
        }
    }

    #[test]
    fn at_most_a_few_keys_are_tried() {
        let keys: Vec<_> = (0..10).map(|i| ed25519(&i.to_string())).collect();
        let (chosen, _) = choose(keys.iter(), Algorithm::EdDSA, None).unwrap();
        assert_eq!(chosen.len(), MAX_KEYS_TRIED);
    }

    #[test]
    fn unusable_jwks_are_refused_with_a_reason() {
        let refused = |jwk: serde_json::Value| {
            let jwk: Jwk = serde_json::from_value(jwk).unwrap();
            VerifyingKey::from_jwk(&jwk).unwrap_err()
        };
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let okp = |more: serde_json::Value| {
            let mut jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x});
            jwk.as_object_mut()
                .unwrap()
                .extend(more.as_object().unwrap().clone());
            jwk
        };
        assert!(refused(okp(serde_json::json!({"use": "enc"}))).contains("`use`"));
        assert!(refused(okp(serde_json::json!({"alg": "RS256"}))).contains("`alg`"));
        assert!(refused(okp(serde_json::json!({"alg": "RSA-OAEP"}))).contains("`alg`"));
        assert!(refused(okp(serde_json::json!({"x": "AAAA"}))).contains("not Ed25519"));
        assert!(refused(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).contains("symmetric"));
        let small_rsa = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xff; 128]), "e": "AQAB"});
        assert!(refused(small_rsa).contains("2048"));
        let off_curve = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32])});
        assert!(refused(off_curve).contains("not a valid key"));
    }
}
