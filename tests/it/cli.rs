//! The command line: `herald token`, `check-config`, `config --defaults`, `completions` and
//! the config file, run as a user runs them, the real binary with only the environment given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use herald_loadtest::kit::launcher::JWT_SECRET;

use crate::helpers::{Client, Server};

const DATABASE_URL: &str = "postgres://herald@127.0.0.1/herald_cli_test";
const ADMIN_KEY: &str = "cli-test-admin-key-0123";

/// Runs `herald` with these arguments and only this environment.
fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the herald binary")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).expect("herald prints UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config file of this text, in a directory of its own.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make a temporary directory");
    let path = dir.join("herald.toml");
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// `check-config`'s listing: each setting's value and where it came from.
fn listed(listing: &str) -> BTreeMap<String, (String, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let (setting, source) = line.split_once("  # ")?;
            let (key, value) = setting.split_once(" = ")?;
            Some((key.to_owned(), (value.to_owned(), source.to_owned())))
        })
        .collect()
}

const REQUIRED: [(&str, &str); 3] = [
    ("DATABASE_URL", DATABASE_URL),
    ("HERALD_JWT_SECRET", JWT_SECRET),
    ("HERALD_ADMIN_KEY", ADMIN_KEY),
];

#[tokio::test]
async fn a_token_from_the_cli_opens_a_session_and_one_signed_otherwise_is_refused() {
    let server = Server::start().await;
    server.users(&[7]).await;
    // Only the secret: no database, no admin key.
    let minted = herald(
        &["token", "--uid", "7", "--ttl", "15m"],
        &[("HERALD_JWT_SECRET", JWT_SECRET)],
    );
    let token = stdout(&minted).trim().to_owned();
    let client = Client::connect(server.addr, &token)
        .await
        .expect("the token is accepted");
    assert_eq!(client.hello["type"], "hello", "{}", client.hello);

    let other = herald(
        &["token", "--uid", "7"],
        &[("HERALD_JWT_SECRET", "another-secret-0123456789")],
    );
    let refused = Client::connect(server.addr, stdout(&other).trim()).await;
    assert_eq!(refused.err(), Some(401));
}

#[test]
fn a_token_for_uid_0_or_longer_than_30_days_is_refused_as_a_usage_error() {
    let secret = [("HERALD_JWT_SECRET", JWT_SECRET)];
    let no_uid = herald(&["token", "--uid", "0"], &secret);
    assert_eq!(no_uid.status.code(), Some(2));
    assert!(stderr(&no_uid).contains("--uid"), "{}", stderr(&no_uid));
    let too_long = herald(&["token", "--uid", "7", "--ttl", "31d"], &secret);
    assert_eq!(too_long.status.code(), Some(2));
    assert!(
        stderr(&too_long).contains("--ttl must be 1..=2592000"),
        "{}",
        stderr(&too_long)
    );
    let no_secret = herald(&["token", "--uid", "7"], &[]);
    assert_eq!(no_secret.status.code(), Some(2));
    assert!(
        stderr(&no_secret).contains("HERALD_JWT_SECRET"),
        "{}",
        stderr(&no_secret)
    );
}

#[test]
fn check_config_lists_every_setting_with_its_source_and_never_a_secret() {
    let output = herald(&["check-config", "--db-pool", "3"], &REQUIRED);
    let listing = stdout(&output);
    for (_, secret) in REQUIRED {
        assert!(!listing.contains(secret), "{listing}");
    }
    let settings = listed(&listing);
    assert_eq!(
        settings["jwt-secret"],
        ("\"(redacted)\"".into(), "env HERALD_JWT_SECRET".into())
    );
    assert_eq!(settings["db-pool"], ("3".into(), "flag --db-pool".into()));
    assert_eq!(settings["heartbeat-s"], ("25".into(), "default".into()));

    let bad = herald(
        &["check-config"],
        &[REQUIRED.as_slice(), &[("HERALD_HEARTBEAT_S", "0")]].concat(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("HERALD_HEARTBEAT_S"),
        "{}",
        stderr(&bad)
    );
    let same_keys = herald(&["check-config", "--admin-key", JWT_SECRET], &REQUIRED);
    assert_eq!(same_keys.status.code(), Some(2));
    let error = stderr(&same_keys);
    assert!(
        error.contains("HERALD_JWT_SECRET and HERALD_ADMIN_KEY"),
        "{error}"
    );
    assert!(!error.contains(JWT_SECRET), "{error}");
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let file = config_file("precedence", "[server]\nlisten = \"127.0.0.1:1001\"\n");
    let file = file.to_str().expect("a UTF-8 path");
    let listen = |args: &[&str], env: &[(&str, &str)]| {
        let args = [&["--config", file, "check-config"], args].concat();
        listed(&stdout(&herald(
            &args,
            &[REQUIRED.as_slice(), env].concat(),
        )))["listen"]
            .clone()
    };
    let from_env = [("HERALD_LISTEN", "127.0.0.1:1002")];
    assert_eq!(
        listen(&[], &[]),
        ("\"127.0.0.1:1001\"".into(), format!("file {file}"))
    );
    assert_eq!(
        listen(&[], &from_env),
        ("\"127.0.0.1:1002\"".into(), "env HERALD_LISTEN".into())
    );
    assert_eq!(
        listen(&["--listen", "127.0.0.1:1003"], &from_env),
        ("\"127.0.0.1:1003\"".into(), "flag --listen".into())
    );
}

#[test]
fn an_unknown_key_or_a_bad_value_in_the_file_is_named_with_the_file() {
    for (name, text, problem) in [
        (
            "unknown",
            "[server]\nlisen = \"127.0.0.1:1\"\n",
            "[server] lisen: unknown setting",
        ),
        (
            "table",
            "[servers]\nlisten = \"127.0.0.1:1\"\n",
            "[servers] is no section",
        ),
        (
            "typed",
            "[sessions]\nheartbeat-s = [25]\n",
            "[sessions] heartbeat-s: is an array",
        ),
        (
            "value",
            "[sessions]\nheartbeat-s = 0\n",
            "must be greater than 0",
        ),
    ] {
        let file = config_file(name, text);
        let output = herald(
            &["check-config", "--config", file.to_str().unwrap()],
            &REQUIRED,
        );
        assert_eq!(output.status.code(), Some(2), "{name}");
        let error = stderr(&output);
        assert!(error.contains(&format!("{}: ", file.display())), "{error}");
        assert!(error.contains(problem), "{error}");
    }
}

#[test]
fn the_sample_config_filled_in_loads_back_with_the_same_defaults() {
    let sample = stdout(&herald(&["config", "--defaults"], &[]));
    let mut filled = sample.clone();
    for (variable, value) in REQUIRED {
        let placeholder = format!("\"<{variable}>\"");
        let line = filled
            .lines()
            .find(|line| line.starts_with("# ") && line.ends_with(&placeholder))
            .unwrap_or_else(|| panic!("the sample has {variable}, commented out:\n{sample}"))
            .to_owned();
        let uncommented = line
            .trim_start_matches("# ")
            .replace(&placeholder, &format!("\"{value}\""));
        filled = filled.replace(&line, &uncommented);
    }
    let file = config_file("sample", &filled);
    let from_file = listed(&stdout(&herald(
        &["check-config", "--config", file.to_str().unwrap()],
        &[],
    )));
    let from_defaults = listed(&stdout(&herald(&["check-config"], &REQUIRED)));
    assert_eq!(from_file.len(), from_defaults.len());
    for (key, (value, source)) in &from_defaults {
        assert_eq!(&from_file[key].0, value, "{key}");
        if source == "default" {
            assert_eq!(
                from_file[key].1,
                format!("file {}", file.display()),
                "{key}"
            );
        }
    }
}

#[test]
fn bash_completions_know_the_commands() {
    let script = stdout(&herald(&["completions", "bash"], &[]));
    for command in [
        "serve",
        "migrate",
        "token",
        "check-config",
        "config",
        "completions",
    ] {
        assert!(script.contains(command), "{command}");
    }
}
