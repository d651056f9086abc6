//! Settings, read from flags or environment variables. Each is defined once, in
//! `sections`: the parsed sections are the typed configuration the gateway reads. Values
//! are checked as they are parsed; what only settings together can show, by
//! [`Config::validate`].
//!
//! - `sections`: every setting, grouped by what it configures.
//! - `values`: the types settings take and the parsers that check them.
//! - `readme` (tests): the README's table of settings, rendered from the definitions.

#[cfg(test)]
mod readme;
mod sections;
mod values;

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

pub use sections::{
    AcksConfig, AuthConfig, ClusterConfig, DatabaseConfig, GroupsConfig, LimitsConfig, LogConfig,
    PresenceConfig, ServerConfig, SessionsConfig, WebhooksConfig,
};
pub use values::{AllowedOrigins, LogFormat, Secret};

/// The `herald` command line: a command and its settings.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Realtime push gateway for instant messaging"
)]
pub enum Command {
    /// Apply the migrations and serve (the default).
    Serve(Config),
    /// Apply the migrations and exit.
    Migrate(Config),
}

impl Command {
    /// The command this process was started with.
    pub fn from_command_line() -> Command {
        Command::parse_from(serve_by_default(std::env::args_os()))
    }

    /// The settings, whichever the command.
    pub fn config(&self) -> &Config {
        match self {
            Command::Serve(config) | Command::Migrate(config) => config,
        }
    }
}

/// Names `serve` when the arguments name no command (clap has no default subcommand), so
/// `herald --listen ...` serves; help and the version stay the whole program's.
fn serve_by_default(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let names_a_command = args
        .get(1)
        .and_then(|first| first.to_str())
        .is_some_and(|first| {
            Command::has_subcommand(first)
                || ["help", "-h", "--help", "-V", "--version"].contains(&first)
        });
    if !names_a_command {
        args.insert(args.len().min(1), "serve".into());
    }
    args
}

/// Every setting of the gateway, by what it configures.
#[derive(Debug, Clone, Args)]
#[command(mut_args = value_named_by_variable)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub limits: LimitsConfig,
    #[command(flatten)]
    pub sessions: SessionsConfig,
    #[command(flatten)]
    pub groups: GroupsConfig,
    #[command(flatten)]
    pub acks: AcksConfig,
    #[command(flatten)]
    pub cluster: ClusterConfig,
    #[command(flatten)]
    pub presence: PresenceConfig,
    #[command(flatten)]
    pub webhooks: WebhooksConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

/// Shows a setting's value as its variable (`--listen <HERALD_LISTEN>`), so that clap's
/// errors name the variable, which is how most deployments set it.
fn value_named_by_variable(arg: clap::Arg) -> clap::Arg {
    let Some(variable) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else {
        return arg;
    };
    arg.value_name(variable)
}

/// Settings that are each valid but do not go together, named by their variables.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", variables.join(" and "))]
pub struct ConfigError {
    pub variables: &'static [&'static str],
    pub problem: &'static str,
}

impl Config {
    /// Checks what no single setting's parser can: how settings go together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.jwt_secret == self.auth.admin_key {
            return Err(ConfigError {
                variables: &["HERALD_JWT_SECRET", "HERALD_ADMIN_KEY"],
                problem: "must differ: whoever signs user tokens would also hold the admin API",
            });
        }
        if self.cluster.nats_tls_cert.is_some() != self.cluster.nats_tls_key.is_some() {
            return Err(ConfigError {
                variables: &["HERALD_NATS_TLS_CERT", "HERALD_NATS_TLS_KEY"],
                problem: "go together: a client certificate needs its key",
            });
        }
        if self.webhooks.url.is_some() && self.webhooks.secret.is_none() {
            return Err(ConfigError {
                variables: &["HERALD_WEBHOOK_URL", "HERALD_WEBHOOK_SECRET"],
                problem: "go together: the backend needs the secret to check each request",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let argv = std::iter::once("herald").chain(args.iter().copied());
        Command::try_parse_from(serve_by_default(argv.map(OsString::from)))
    }

    fn config(args: &[&str]) -> Config {
        match parse(args).expect("flags parse") {
            Command::Serve(config) => config,
            Command::Migrate(_) => panic!("{args:?} names no command: it serves"),
        }
    }

    const GOOD: [&str; 6] = [
        "--database-url",
        "postgres://u@127.0.0.1/db",
        "--jwt-secret",
        "0123456789abcdef",
        "--admin-key",
        "fedcba9876543210",
    ];

    fn good_and(more: &[&'static str]) -> Vec<&'static str> {
        GOOD.iter().chain(more).copied().collect()
    }

    #[test]
    fn a_missing_secret_is_named() {
        let error = parse(&["--database-url", "postgres://u@127.0.0.1/db"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert!(error.to_string().contains("HERALD_JWT_SECRET"), "{error}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = config(&GOOD);
        let shown = format!("{config:?}");
        for secret in ["postgres://u@", "0123456789abcdef", "fedcba9876543210"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(config.auth.jwt_secret.expose(), "0123456789abcdef");
    }

    #[test]
    fn a_short_admin_key_is_refused_by_name_without_showing_it() {
        let mut args = GOOD;
        args[5] = "short-key";
        let error = parse(&args).unwrap_err().to_string();
        assert!(
            error.contains("HERALD_ADMIN_KEY: must be at least 16 bytes long"),
            "{error}"
        );
        assert!(!error.contains("short-key"), "{error}");
    }

    #[test]
    fn an_empty_database_url_is_a_missing_one() {
        let mut args = GOOD;
        args[1] = "";
        let error = parse(&args).unwrap_err().to_string();
        assert!(error.contains("DATABASE_URL: is required"), "{error}");
    }

    #[test]
    fn a_zero_where_one_is_the_least_is_refused_by_name() {
        let error = parse(&good_and(&["--heartbeat-s", "0"])).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        let error = error.to_string();
        assert!(error.contains("HERALD_HEARTBEAT_S"), "{error}");
        assert!(error.contains("must be greater than 0"), "{error}");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config(&GOOD);
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert!(config.server.allowed_origins.is_empty());
        assert_eq!(config.limits.send_rate, 100);
        assert_eq!(config.limits.request_budget, 1000);
        assert_eq!(config.limits.max_frame_bytes, 65536);
        assert_eq!(config.limits.max_body_bytes, 16384);
        assert_eq!(config.sessions.heartbeat, Duration::from_secs(25));
        assert_eq!(config.acks.flush, Duration::from_millis(500));
        assert_eq!(config.log.format, LogFormat::Pretty);
    }

    #[test]
    fn durations_are_read_in_the_unit_their_flag_names() {
        let config = config(&good_and(&[
            "--ack-flush-ms",
            "100",
            "--group-idle-s",
            "2",
            "--shutdown-timeout-s",
            "0",
        ]));
        assert_eq!(config.acks.flush, Duration::from_millis(100));
        assert_eq!(config.groups.idle, Duration::from_secs(2));
        assert_eq!(config.server.shutdown_timeout, Duration::ZERO);
    }

    #[test]
    fn allowed_origins_are_trimmed_and_empty_entries_dropped() {
        let listed = " https://a.example/, ,https://b.example ";
        let config = config(&good_and(&["--allowed-origins", listed]));
        assert_eq!(
            *config.server.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn settings_without_a_command_serve_and_after_one_apply_to_it() {
        assert!(matches!(parse(&GOOD), Ok(Command::Serve(_))));
        let mut migrate = vec!["migrate"];
        migrate.extend(good_and(&["--db-pool", "3"]));
        match parse(&migrate) {
            Ok(Command::Migrate(config)) => assert_eq!(config.database.pool, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_secret_for_tokens_and_the_admin_api_is_refused_naming_both() {
        let mut args = GOOD;
        args[5] = args[3];
        let error = config(&args).validate().unwrap_err();
        assert_eq!(error.variables, ["HERALD_JWT_SECRET", "HERALD_ADMIN_KEY"]);
        assert!(config(&GOOD).validate().is_ok());
    }

    #[test]
    fn cluster_settings_are_checked_as_read() {
        let cluster = config(&good_and(&[
            "--nats-url",
            "nats://127.0.0.1:4222, tls://b:4443",
        ]));
        assert!(cluster.cluster.nats_url.is_some());
        assert!(config(&GOOD).cluster.nats_url.is_none(), "alone by default");
        let error = parse(&good_and(&["--nats-url", "nats://[::1"])).unwrap_err();
        assert!(error.to_string().contains("HERALD_NATS_URL"), "{error}");
        let error = parse(&good_and(&["--node-id", "a.b"])).unwrap_err();
        assert!(error.to_string().contains("at most 64 letters"), "{error}");
        let half = config(&good_and(&["--nats-tls-cert", "c.pem"]));
        let error = half.validate().unwrap_err();
        assert_eq!(
            error.variables,
            ["HERALD_NATS_TLS_CERT", "HERALD_NATS_TLS_KEY"]
        );
    }

    #[test]
    fn a_webhook_url_is_checked_and_needs_its_secret() {
        let url = ["--webhook-url", "https://backend.example/hooks"];
        let error = config(&good_and(&url)).validate().unwrap_err();
        assert_eq!(
            error.variables,
            ["HERALD_WEBHOOK_URL", "HERALD_WEBHOOK_SECRET"]
        );
        let signed = good_and(&[url[0], url[1], "--webhook-secret", "sixteen bytes at least"]);
        assert!(config(&signed).validate().is_ok());
        let error = parse(&good_and(&["--webhook-url", "ftp://backend.example/"])).unwrap_err();
        assert!(error.to_string().contains("HERALD_WEBHOOK_URL"), "{error}");
        let error = parse(&good_and(&["--webhook-secret", "short"])).unwrap_err();
        assert!(error.to_string().contains("at least 16 bytes"), "{error}");
    }
}
