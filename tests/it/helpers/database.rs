//! Test databases on the PostgreSQL `scripts/test` starts. A test's database is a clone of
//! this process's template, which the binary under test migrates once (`herald migrate`),
//! so the tests do not depend on how migrations are run.
//!
//! Names carry the process id, for `scripts/test` to drop those of processes that are gone:
//! `herald_template_<pid>` and `herald_test_<pid>_<n>`.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use herald_loadtest::kit::launcher;
use tokio::sync::OnceCell;

/// The URL of the PostgreSQL `scripts/test` started.
pub fn postgres_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .expect("HERALD_TEST_DATABASE_URL is not set: run the suite with scripts/test")
}

/// `postgres_url` with another database name.
fn database_url(name: &str) -> String {
    let base = postgres_url();
    let (server, _) = base.rsplit_once('/').expect("the URL names a database");
    format!("{server}/{name}")
}

/// Runs one SQL statement on a database and returns the rows.
pub async fn sql(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client.query(statement, &[]).await.expect(statement)
}

/// Creates an empty database for one test (one that tests migrating itself) and returns
/// its URL.
pub async fn fresh_database() -> String {
    create_database("").await
}

/// Creates a migrated database for one test and returns its URL.
pub async fn migrated_database() -> String {
    create_database(&format!("TEMPLATE {}", template().await)).await
}

/// `CREATE DATABASE herald_test_<pid>_<n> {options}`; returns its URL.
async fn create_database(options: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "herald_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    on_server(&format!("CREATE DATABASE {name} {options}")).await;
    database_url(&name)
}

/// Runs a statement that no transaction may hold, as `CREATE DATABASE`.
async fn on_server(statement: &str) {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client.batch_execute(statement).await.expect(statement);
}

/// This process's template, made on first use: the tests that start meanwhile wait for it.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("herald_template_{}", std::process::id());
            // One left by a process gone with this pid before.
            on_server(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            on_server(&format!("CREATE DATABASE {name}")).await;
            // PostgreSQL clones no database another session is connected to: the migration
            // runs in a process of its own, over (and disconnected) when this returns.
            launcher::migrate(
                Path::new(env!("CARGO_BIN_EXE_herald")),
                &database_url(&name),
            )
            .await
            .unwrap_or_else(|error| panic!("migrating the template database: {error:#}"));
            name
        })
        .await
}
