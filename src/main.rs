use std::process::ExitCode;

use herald::config::Command;
use herald::startup::Application;
use herald::store::Store;

fn main() -> ExitCode {
    let command = Command::from_command_line();
    herald::telemetry::init(command.config().log.format);
    if let Err(error) = command.config().validate() {
        eprintln!("herald: configuration error: {error}");
        return ExitCode::from(2);
    }
    raise_open_files_limit();
    let outcome = actix::System::new().block_on(async move {
        match command {
            Command::Migrate(config) => {
                let store = Store::new(config.database.url.expose(), 1, false)?;
                store.migrate().await?;
                tracing::info!("storage is up to date");
                Ok(())
            }
            Command::Serve(config) => Application::build(config).await?.run_until_stopped().await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
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
