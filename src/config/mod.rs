//! The `herald` command line and its settings, read from flags, environment variables or a
//! config file. Each setting is defined once, in `sections`: the parsed sections are the
//! typed configuration the gateway reads. Values are checked as they are parsed; what only
//! settings together can show, by [`Config::validate`].
//!
//! - `sections`: every setting, grouped by what it configures.
//! - `values`: the types settings take and the parsers that check them.
//! - `file`: the TOML config file, read into the settings' defaults.
//! - `effective`: the settings as parsed and where each came from (`check-config`).
//! - `sample`: a commented config file of the defaults (`config --defaults`).
//! - `readme` (tests): the README's table of settings, rendered from the definitions.

mod effective;
mod file;
#[cfg(test)]
mod readme;
mod sample;
mod sections;
mod values;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use file::ConfigFile;
pub use sections::{
    AcksConfig, AuthConfig, ClusterConfig, DatabaseConfig, GroupsConfig, LimitsConfig, LogConfig,
    PresenceConfig, RetentionConfig, ServerConfig, SessionsConfig, TokenChecksConfig,
    UserTokensConfig, WebhooksConfig,
};
pub use values::{AllowedOrigins, CommaList, LogFormat, PublicKeyFile, PublicKeyFiles, Secret};

/// The `herald` command line.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Realtime push gateway for instant messaging"
)]
struct Cli {
    /// TOML file of settings, under the environment and flags (`herald config --defaults`
    /// prints one).
    #[arg(long, env = file::VARIABLE, global = true, value_name = file::VARIABLE)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// A command and the settings it takes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the migrations and serve (the default).
    Serve(Config),
    /// Apply the migrations and exit.
    Migrate(Config),
    /// Print a user token signed with HERALD_JWT_SECRET.
    #[command(visible_alias = "gentoken")]
    Token(TokenRequest),
    /// Check the settings as `serve` would read them and print them, secrets redacted,
    /// without connecting to anything.
    #[command(visible_alias = "checkconfig")]
    CheckConfig(Config),
    /// Print a config file of every setting at its default, with its help.
    #[command(name = "config")]
    Sample(SampleRequest),
    /// Print the shell completions of `herald`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `herald token`: the user and lifetime of the token, and the only setting it needs.
#[derive(Debug, Clone, Args)]
#[command(mut_args = value_named_by_variable)]
pub struct TokenRequest {
    /// The uid the token is for.
    #[arg(long, value_parser = values::uid)]
    pub uid: u64,
    /// How long the token is valid: seconds, or with a unit (`90s`, `15m`, `1h`, `7d`); an
    /// hour unless given, at most 30 days (as the admin API issues).
    #[arg(long, value_parser = values::lifetime_s)]
    pub ttl: Option<u64>,
    /// A device id to put in the token.
    #[arg(long)]
    pub dev: Option<String>,
    #[command(flatten)]
    pub user_tokens: UserTokensConfig,
}

/// `herald config`: what to print.
#[derive(Debug, Clone, Args)]
pub struct SampleRequest {
    /// Every setting at its default.
    #[arg(long, required = true)]
    pub defaults: bool,
}

/// The parsed command line.
pub struct CommandLine {
    pub command: Command,
    /// The chosen command's own arguments, to tell where each setting came from.
    matches: ArgMatches,
    file: Option<ConfigFile>,
}

impl CommandLine {
    /// The command line this process was started with, over the config file it names.
    pub fn from_process() -> Result<CommandLine, clap::Error> {
        CommandLine::parse_from(std::env::args_os())
    }

    fn parse_from(args: impl IntoIterator<Item = OsString>) -> Result<CommandLine, clap::Error> {
        let args = serve_by_default(args);
        let file = match file::path_in(&args) {
            Some(path) => Some(ConfigFile::read(&path, &serve_command())?),
            None => None,
        };
        let mut cli = Cli::command();
        if let Some(file) = &file {
            cli = file.apply(cli);
        }
        let matches = cli.try_get_matches_from(args)?;
        let command = Cli::from_arg_matches(&matches)?.command;
        let (_, matches) = matches
            .subcommand()
            .expect("a command is required, and `serve` put in when none is named");
        let matches = matches.clone();
        Ok(CommandLine {
            command,
            matches,
            file,
        })
    }

    /// Every setting as parsed, with where it came from, secrets redacted (`check-config`).
    pub fn effective_settings(&self) -> String {
        effective::effective(&serve_command(), &self.matches, self.file.as_ref())
    }
}

/// A commented config file of every setting at its default (`config --defaults`).
pub fn sample_config_file() -> String {
    sample::sample(&serve_command())
}

/// Writes the completions of `herald` for `shell`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "herald", out);
}

/// `herald serve`, which has every setting.
fn serve_command() -> clap::Command {
    Cli::command()
        .find_subcommand("serve")
        .expect("`serve` is a command")
        .clone()
}

/// Names `serve` when the arguments name no command (clap has no default subcommand), so
/// `herald --listen ...` serves; help and the version stay the whole program's. A leading
/// `--config PATH` is the whole program's too.
fn serve_by_default(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let first = match args.get(1) {
        Some(flag) if flag == file::FLAG => 3,
        Some(flag) if flag.to_str().is_some_and(|f| f.starts_with("--config=")) => 2,
        _ => 1,
    };
    let names_a_command = args
        .get(first)
        .and_then(|first| first.to_str())
        .is_some_and(|first| {
            // Aliases too, which the derived `has_subcommand` does not know.
            Cli::command().find_subcommand(first).is_some()
                || ["help", "-h", "--help", "-V", "--version"].contains(&first)
        });
    if !names_a_command {
        args.insert(args.len().min(first), "serve".into());
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
    pub retention: RetentionConfig,
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
        let checks = &self.auth.token_checks;
        let keys_configured = self.auth.user_tokens.jwt_secret.is_some()
            || !checks.jwt_public_keys.is_empty()
            || checks.jwks_file.is_some()
            || checks.jwks_url.is_some();
        if !keys_configured {
            return Err(ConfigError {
                variables: &[
                    "HERALD_JWT_SECRET",
                    "HERALD_JWT_PUBLIC_KEYS",
                    "HERALD_JWKS_FILE",
                    "HERALD_JWKS_URL",
                ],
                problem: "one at least is required: nothing else can verify user tokens",
            });
        }
        if self.auth.user_tokens.jwt_secret.as_ref() == Some(&self.auth.admin_key) {
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
        CommandLine::parse_from(argv.map(OsString::from)).map(|line| line.command)
    }

    fn config(args: &[&str]) -> Config {
        match parse(args).expect("flags parse") {
            Command::Serve(config) => config,
            _ => panic!("{args:?} names no command: it serves"),
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
    fn without_any_key_for_user_tokens_the_settings_are_refused_naming_each_source() {
        let config = config(&[
            "--database-url",
            "postgres://u@127.0.0.1/db",
            "--admin-key",
            "fedcba9876543210",
        ]);
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.variables,
            [
                "HERALD_JWT_SECRET",
                "HERALD_JWT_PUBLIC_KEYS",
                "HERALD_JWKS_FILE",
                "HERALD_JWKS_URL"
            ]
        );
        let mut jwks = config.clone();
        jwks.auth.token_checks.jwks_url = Some("https://id.example/jwks.json".parse().unwrap());
        assert!(jwks.validate().is_ok(), "a JWKS alone verifies tokens");
    }

    #[test]
    fn token_checks_default_to_a_30_second_leeway_and_no_audience_or_issuer() {
        let checks = config(&GOOD).auth.token_checks;
        assert_eq!(checks.jwt_leeway, Duration::from_secs(30));
        assert_eq!(checks.jwks_refresh, Duration::from_secs(300));
        assert!(checks.jwt_audience.is_empty() && checks.jwt_issuer.is_none());
        let error = parse(&good_and(&["--jwks-url", "file:///etc/jwks.json"])).unwrap_err();
        assert!(error.to_string().contains("HERALD_JWKS_URL"), "{error}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = config(&GOOD);
        let shown = format!("{config:?}");
        for secret in ["postgres://u@", "0123456789abcdef", "fedcba9876543210"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let secret = config
            .auth
            .user_tokens
            .jwt_secret
            .as_ref()
            .map(Secret::expose);
        assert_eq!(secret, Some("0123456789abcdef"));
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
    fn a_leading_config_file_flag_is_the_whole_programs() {
        let argv = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            serve_by_default(argv(&["herald", "--config", "h.toml", "token"])),
            argv(&["herald", "--config", "h.toml", "token"])
        );
        assert_eq!(
            serve_by_default(argv(&["herald", "--config=h.toml", "--listen", "a"])),
            argv(&["herald", "--config=h.toml", "serve", "--listen", "a"])
        );
        assert_eq!(
            serve_by_default(argv(&["herald", "gentoken"])),
            argv(&["herald", "gentoken"])
        );
        assert_eq!(
            serve_by_default(argv(&["herald", "--config", "h.toml"])),
            argv(&["herald", "--config", "h.toml", "serve"])
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
