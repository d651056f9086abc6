//! The types settings take, and the parsers that check each value as it is read.

use std::ffi::OsStr;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, ValueEnum};

/// A setting that must never reach a log: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Reads a [`Secret`], checked by `check`. Its errors name the setting and never quote the
/// value, as clap's own errors would.
#[derive(Clone)]
pub struct SecretParser {
    check: fn(&str) -> Result<(), String>,
}

impl SecretParser {
    pub fn new(check: fn(&str) -> Result<(), String>) -> SecretParser {
        SecretParser { check }
    }
}

impl TypedValueParser for SecretParser {
    type Value = Secret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Secret, clap::Error> {
        let checked = match value.to_str() {
            Some(text) => (self.check)(text).map(|()| Secret(text.to_owned())),
            None => Err("is not UTF-8".to_owned()),
        };
        checked.map_err(|problem| {
            let setting = arg.and_then(Arg::get_env).unwrap_or_default();
            let message = format!("{}: {problem}\n", setting.to_string_lossy());
            clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd)
        })
    }
}

/// The check of a key: long enough not to be guessed.
pub fn at_least_16_bytes(key: &str) -> Result<(), String> {
    if key.len() < 16 {
        return Err("must be at least 16 bytes long".into());
    }
    Ok(())
}

/// The check of `DATABASE_URL`. An empty value is a missing one (an unset variable in a
/// deployment template), which PostgreSQL's parser would take for "all defaults".
pub fn postgres_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("is required (see the README's local set-up for a dev value)".into());
    }
    url.parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| format!("is not a PostgreSQL URL: {e}"))
}

/// The check of `HERALD_NATS_URL`: a comma-separated list of `nats://`, `tls://` or bare
/// `host:port` addresses.
pub fn nats_url(urls: &str) -> Result<(), String> {
    for url in urls.split(',') {
        url.trim()
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("{url:?} is not a NATS server address: {e}"))?;
    }
    Ok(())
}

/// An `http://` or `https://` URL (`HERALD_JWKS_URL`).
pub fn http_uri(url: &str) -> Result<hyper::Uri, String> {
    let parsed: hyper::Uri = url.parse().map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(parsed)
}

/// The check of an `http://` or `https://` URL kept secret (`HERALD_WEBHOOK_URL`).
pub fn http_url(url: &str) -> Result<(), String> {
    http_uri(url).map(drop)
}

/// The check of `HERALD_NODE_ID`: a name that fits in a NATS subject and a metric label.
pub fn node_id(id: &str) -> Result<String, String> {
    let fits = id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !fits {
        return Err("must be at most 64 letters, digits, '-' or '_'".into());
    }
    Ok(id.to_owned())
}

/// A count or size that must be at least 1.
pub fn positive<T>(text: &str) -> Result<T, String>
where
    T: FromStr + Default + PartialEq,
    T::Err: Display,
{
    match text.parse::<T>() {
        Ok(zero) if zero == T::default() => Err("must be greater than 0".into()),
        Ok(value) => Ok(value),
        Err(error) => Err(error.to_string()),
    }
}

/// A duration given in whole seconds.
pub fn seconds(text: &str) -> Result<Duration, String> {
    text.parse()
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}

/// A duration given in whole seconds, at least one.
pub fn positive_seconds(text: &str) -> Result<Duration, String> {
    positive(text).map(Duration::from_secs)
}

/// A duration given in whole milliseconds, at least one.
pub fn positive_milliseconds(text: &str) -> Result<Duration, String> {
    positive(text).map(Duration::from_millis)
}

/// Origins browsers may open WebSockets from, read from a comma-separated list and kept
/// without a trailing `/` (browsers send none); empty allows any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl FromStr for AllowedOrigins {
    type Err = std::convert::Infallible;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let origins = list
            .parse::<CommaList>()?
            .iter()
            .map(|origin| origin.trim_end_matches('/'))
            .filter(|origin| !origin.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(AllowedOrigins(origins))
    }
}

impl std::ops::Deref for AllowedOrigins {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// A comma-separated list, each entry trimmed, empty ones dropped (`HERALD_JWT_AUDIENCE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommaList(Vec<String>);

impl FromStr for CommaList {
    type Err = std::convert::Infallible;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(CommaList(entries))
    }
}

impl std::ops::Deref for CommaList {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// A PEM public key file, and the key id (`kid`) tokens name it by, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyFile {
    pub kid: Option<String>,
    pub path: PathBuf,
}

/// PEM public key files, from a comma-separated list of `kid=path` or bare paths
/// (`HERALD_JWT_PUBLIC_KEYS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicKeyFiles(Vec<PublicKeyFile>);

impl FromStr for PublicKeyFiles {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let Ok(entries) = list.parse::<CommaList>();
        let files = entries
            .iter()
            .map(|entry| match entry.split_once('=') {
                Some((kid, path)) if kid.trim().is_empty() || path.trim().is_empty() => {
                    Err(format!("{entry:?} is not `kid=path` nor a path"))
                }
                Some((kid, path)) => Ok(PublicKeyFile {
                    kid: Some(kid.trim().to_owned()),
                    path: path.trim().into(),
                }),
                None => Ok(PublicKeyFile {
                    kid: None,
                    path: entry.into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(PublicKeyFiles(files))
    }
}

impl std::ops::Deref for PublicKeyFiles {
    type Target = [PublicKeyFile];

    fn deref(&self) -> &[PublicKeyFile] {
        &self.0
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object a line, for machines.
    Json,
}

/// A uid: positive and within the ids a client can hold.
pub fn uid(text: &str) -> Result<u64, String> {
    let uid = text.parse::<u64>().map_err(|e| e.to_string())?;
    crate::model::valid_id(uid).map_err(|error| error.message)
}

/// A lifetime in whole seconds, written bare (`3600`) or with a unit: `90s`, `15m`, `1h`, `7d`.
pub fn lifetime_s(text: &str) -> Result<u64, String> {
    let (number, unit_s) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        Some((at, 'd')) => (&text[..at], 24 * 3600),
        _ => (text, 1),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| "must be whole seconds, or a number with s, m, h or d".to_owned())?;
    number
        .checked_mul(unit_s)
        .ok_or_else(|| "is far too long".to_owned())
}

/// A duration in whole seconds, written as a lifetime is (`90s`, `12h`, `30d`).
pub fn span(text: &str) -> Result<Duration, String> {
    lifetime_s(text).map(Duration::from_secs)
}

/// A duration written as a lifetime is, at least one second.
pub fn positive_span(text: &str) -> Result<Duration, String> {
    match span(text)? {
        Duration::ZERO => Err("must be greater than 0".into()),
        span => Ok(span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_seconds_bare_or_with_a_unit() {
        assert_eq!(lifetime_s("3600"), Ok(3600));
        assert_eq!(lifetime_s("90s"), Ok(90));
        assert_eq!(lifetime_s("15m"), Ok(900));
        assert_eq!(lifetime_s("1h"), Ok(3600));
        assert_eq!(lifetime_s("7d"), Ok(7 * 24 * 3600));
        for wrong in ["", "h", "1.5h", "-1s", "1w", "99999999999999999999d"] {
            assert!(lifetime_s(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn public_key_files_are_paths_each_with_an_optional_kid() {
        let files: PublicKeyFiles = " 2025-01=/keys/a.pem, /keys/b.pem ,".parse().unwrap();
        assert_eq!(
            *files,
            [
                PublicKeyFile {
                    kid: Some("2025-01".into()),
                    path: "/keys/a.pem".into()
                },
                PublicKeyFile {
                    kid: None,
                    path: "/keys/b.pem".into()
                },
            ]
        );
        assert!("=/keys/a.pem".parse::<PublicKeyFiles>().is_err());
        assert!("kid=".parse::<PublicKeyFiles>().is_err());
        assert!("".parse::<PublicKeyFiles>().unwrap().is_empty());
    }

    #[test]
    fn spans_are_lifetimes_and_positive_ones_refuse_zero() {
        assert_eq!(span("0"), Ok(Duration::ZERO));
        assert_eq!(span("2d"), Ok(Duration::from_secs(2 * 24 * 3600)));
        assert_eq!(positive_span("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert!(positive_span("0").is_err());
        assert!(positive_span("0d").is_err());
    }
}
