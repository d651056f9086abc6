use std::process::ExitCode;

use herald::auth::{token_ttl_s, TokenIssuer};
use herald::config::{Command, CommandLine, Config, TokenRequest};
use herald::startup::Application;
use herald::store::Store;

/// The exit code of a command line or settings that cannot be used (as clap's own).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let command_line = CommandLine::from_process().unwrap_or_else(|error| error.exit());
    match &command_line.command {
        Command::Serve(config) => if_valid(config, || run(config.clone(), serve)),
        Command::Migrate(config) => if_valid(config, || run(config.clone(), migrate)),
        Command::CheckConfig(config) => if_valid(config, || {
            print!("{}", command_line.effective_settings());
            ExitCode::SUCCESS
        }),
        Command::Token(request) => print_token(request),
        Command::Sample(_) => {
            print!("{}", herald::config::sample_config_file());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            herald::config::write_completions(*shell, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Does `then` if the settings go together, or names the ones that do not.
fn if_valid(config: &Config, then: impl FnOnce() -> ExitCode) -> ExitCode {
    match config.validate() {
        Ok(()) => then(),
        Err(error) => {
            eprintln!("herald: configuration error: {error}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}

/// `herald token`: signed as the admin API signs, with the same lifetimes.
fn print_token(request: &TokenRequest) -> ExitCode {
    let ttl_s = match token_ttl_s(request.ttl) {
        Ok(ttl_s) => ttl_s,
        Err(problem) => {
            eprintln!("herald: --ttl {problem}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let secret = request.user_tokens.jwt_secret.as_ref().map(|s| s.expose());
    match TokenIssuer::new(secret).issue(request.uid, ttl_s, request.dev.clone()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("herald: {}", error.message);
            ExitCode::from(USAGE_ERROR)
        }
    }
}

/// `serve` or `migrate`: the gateway's own work, logged.
fn run(config: Config, work: impl AsyncFnOnce(Config) -> anyhow::Result<()>) -> ExitCode {
    herald::telemetry::init(config.log.format);
    match actix::System::new().block_on(work(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = Store::new(config.database.url.expose(), 1, false)?;
    store.migrate().await?;
    tracing::info!("storage is up to date");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    Application::build(config).await?.run_until_stopped().await
}

/// One descriptor per connection: as many as allowed (root may lift the hard limit too).
fn raise_open_files_limit() {
    const WANTED: u64 = 1 << 20;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED).is_err() {
        if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
            tracing::warn!(%error, "could not raise the open-files limit");
        }
    }
}
