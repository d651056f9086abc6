//! Schema and functions at start-up (`sql/README.md`): an applied migration whose file changed
//! stops `serve` and `migrate`; the function files replace the functions when they differ from
//! those recorded, and only then; nodes starting together on a fresh database all come up.

use std::process::ExitStatus;

use herald::store::{FUNCTIONS, MIGRATIONS};
use serde_json::Value;

use crate::helpers::{eventually, fresh_database, sql, Server, ADMIN_KEY, JWT_SECRET, WAIT};

/// Every Herald function in the database with its oid: a function dropped and created again
/// has a new one.
const FUNCTIONS_IN_DATABASE: &str = r"
    SELECT p.oid::regprocedure::text, p.oid::bigint FROM pg_proc p
    WHERE p.proname LIKE 'herald\_%' ORDER BY 1";

/// The records of what was applied, as text.
const RECORDS: &str = "
    SELECT 'migration', version, coalesce(checksum, 'NULL'), applied_at::text
    FROM herald_migrations
    UNION ALL
    SELECT 'functions', file, checksum, applied_at::text FROM herald_functions
    ORDER BY 1, 2";

async fn functions_in_database(database_url: &str) -> Vec<(String, i64)> {
    let rows = sql(database_url, FUNCTIONS_IN_DATABASE).await;
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn records(database_url: &str) -> Vec<[String; 4]> {
    let rows = sql(database_url, RECORDS).await;
    rows.iter()
        .map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)])
        .collect()
}

/// What a node logs when preparing storage failed and will be retried.
const RETRY: &str = "cannot apply the migrations; is PostgreSQL running at DATABASE_URL?";

/// A list of file names as the log shows it.
fn log_list(names: &[&str]) -> Value {
    Value::from(format!("{names:?}"))
}

fn function_files() -> Vec<&'static str> {
    FUNCTIONS.iter().map(|f| f.name).collect()
}

/// Runs `herald migrate` on a database; returns how it exited and its standard error.
async fn herald_migrate(database_url: &str) -> (ExitStatus, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .env("HERALD_JWT_SECRET", JWT_SECRET)
        .env("HERALD_ADMIN_KEY", ADMIN_KEY)
        .kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("herald migrate still running (killed)")
        .expect("run the herald binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_edited_applied_migration_stops_serve_and_migrate_with_a_message_naming_it() {
    let database_url = fresh_database().await;
    let (status, stderr) = herald_migrate(&database_url).await;
    assert!(
        status.success(),
        "herald migrate failed: {status}\n{stderr}"
    );
    // As if sql/migrations/0002_append_function.sql had been edited since it was applied.
    sql(
        &database_url,
        "UPDATE herald_migrations SET checksum = repeat('0', 64)
         WHERE version = '0002_append_function'",
    )
    .await;
    let named = "migration 0002_append_function changed since it was applied";

    let (status, stderr) = herald_migrate(&database_url).await;
    assert!(
        !status.success(),
        "herald migrate exited 0; stderr:\n{stderr}"
    );
    assert!(stderr.contains(named), "herald migrate, stderr:\n{stderr}");

    let mut node =
        Server::spawn_until(database_url.clone(), vec![], "listening; preparing storage").await;
    let status = eventually("herald serve exits", WAIT, async || {
        node.exit_status().ok_or_else(|| "still running".to_owned())
    })
    .await;
    assert!(
        !status.success(),
        "herald serve exited 0; logs:\n{}",
        node.logs()
    );
    eventually("the refusal in the logs", WAIT, async || {
        let logs = node.logs();
        logs.contains(&format!("herald: cannot prepare storage: {named}"))
            .then_some(())
            .ok_or(logs)
    })
    .await;
    let rows = sql(
        &database_url,
        "SELECT checksum FROM herald_migrations WHERE version = '0002_append_function'",
    )
    .await;
    assert_eq!(rows[0].get::<_, String>(0), "0".repeat(64), "record kept");
}

#[tokio::test]
async fn a_function_changed_by_hand_is_restored_when_its_file_differs_from_the_record() {
    let mut server = Server::spawn(fresh_database().await, vec![]).await;
    let database_url = server.database_url.clone();
    let recorded = sql(
        &database_url,
        "SELECT file, checksum FROM herald_functions ORDER BY file",
    )
    .await;
    let recorded: Vec<(String, String)> = recorded.iter().map(|r| (r.get(0), r.get(1))).collect();

    // Someone fixed herald_now_ms by hand, as if clock.sql had changed; a function and a file
    // no longer in the files linger.
    for statement in [
        "CREATE OR REPLACE FUNCTION herald_now_ms() RETURNS bigint
         LANGUAGE sql AS $$ SELECT 0::bigint $$",
        "UPDATE herald_functions SET checksum = 'stale' WHERE file = 'clock'",
        "CREATE FUNCTION herald_retired() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        "INSERT INTO herald_functions (file, checksum) VALUES ('retired', 'gone')",
    ] {
        sql(&database_url, statement).await;
    }
    server.restart().await;

    let replaced = server.logged("functions replaced");
    assert_eq!(replaced.len(), 1, "logs:\n{}", server.logs());
    assert_eq!(
        replaced[0]["changed"],
        log_list(&["clock"]),
        "{}",
        replaced[0]
    );
    assert_eq!(
        replaced[0]["removed"],
        log_list(&["retired"]),
        "{}",
        replaced[0]
    );
    let now_ms = sql(
        &database_url,
        "SELECT herald_now_ms() - (extract(epoch FROM now()) * 1000)::bigint",
    )
    .await;
    let skew: i64 = now_ms[0].get(0);
    assert!(skew.abs() < 60_000, "herald_now_ms is {skew} ms off");
    let lingering = sql(
        &database_url,
        "SELECT count(*) FROM pg_proc WHERE proname = 'herald_retired'",
    )
    .await;
    assert_eq!(lingering[0].get::<_, i64>(0), 0, "herald_retired lingers");
    let now_recorded = sql(
        &database_url,
        "SELECT file, checksum FROM herald_functions ORDER BY file",
    )
    .await;
    let now_recorded: Vec<(String, String)> =
        now_recorded.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(now_recorded, recorded);

    // The functions created again in name order work: a group is created and joined.
    let gid = server.group(&[1, 2]).await;
    let mut client = server.connect(2).await;
    let reply = client
        .send_msg(gid, "c-1", serde_json::json!({"text": "hi"}))
        .await;
    assert_eq!(reply["msgid"], 1, "{reply}");
}

#[tokio::test]
async fn an_unchanged_restart_applies_nothing() {
    let mut server = Server::spawn(fresh_database().await, vec![]).await;
    let database_url = server.database_url.clone();
    let migrations: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    let applied = server.logged("migrations applied");
    assert_eq!(applied.len(), 1, "logs:\n{}", server.logs());
    assert_eq!(
        applied[0]["applied"],
        log_list(&migrations),
        "{}",
        applied[0]
    );
    let replaced = server.logged("functions replaced");
    assert_eq!(replaced.len(), 1, "logs:\n{}", server.logs());
    assert_eq!(replaced[0]["changed"], log_list(&function_files()));
    let functions = functions_in_database(&database_url).await;
    assert!(
        functions
            .iter()
            .any(|(f, _)| f.starts_with("herald_append(")),
        "{functions:?}"
    );
    let recorded = records(&database_url).await;

    server.restart().await;

    for message in ["migrations applied", "functions replaced"] {
        let again = server.logged(message);
        assert!(again.is_empty(), "{message} again: {again:?}");
    }
    assert_eq!(functions_in_database(&database_url).await, functions);
    assert_eq!(records(&database_url).await, recorded);
}

#[tokio::test]
async fn a_database_migrated_before_checksums_gets_them_on_its_first_start() {
    let mut server = Server::spawn(fresh_database().await, vec![]).await;
    let database_url = server.database_url.clone();
    let recorded = records(&database_url).await;
    server.kill();
    // The records as the binaries before checksums left them.
    for statement in [
        "ALTER TABLE herald_migrations DROP COLUMN checksum",
        "DROP TABLE herald_functions",
    ] {
        sql(&database_url, statement).await;
    }

    server.restart().await;

    let applied = server.logged("migrations applied");
    assert!(applied.is_empty(), "migrations applied again: {applied:?}");
    let replaced = server.logged("functions replaced");
    assert_eq!(replaced.len(), 1, "logs:\n{}", server.logs());
    assert_eq!(replaced[0]["changed"], log_list(&function_files()));
    let migrations = |records: &[[String; 4]]| -> Vec<[String; 4]> {
        records
            .iter()
            .filter(|[kind, ..]| kind == "migration")
            .cloned()
            .collect()
    };
    assert_eq!(
        migrations(&records(&database_url).await),
        migrations(&recorded)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_a_fresh_database_replace_the_functions_once() {
    let database_url = fresh_database().await;
    let (first, second) = tokio::join!(
        Server::spawn(database_url.clone(), vec![]),
        Server::spawn(database_url.clone(), vec![]),
    );
    let nodes = [&first, &second];
    // A node that met the other's half-done work would have failed and retried.
    for node in nodes {
        let retries = node.logged(RETRY);
        assert!(retries.is_empty(), "{retries:?}");
    }
    let replaced: Vec<Value> = nodes
        .iter()
        .flat_map(|node| node.logged("functions replaced"))
        .collect();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    let recorded: Vec<String> = records(&database_url)
        .await
        .into_iter()
        .filter(|[kind, ..]| kind == "functions")
        .map(|[_, file, ..]| file)
        .collect();
    assert_eq!(recorded, function_files());

    let gid = first.group(&[1, 2]).await;
    let mut client = second.connect(2).await;
    let reply = client
        .send_msg(gid, "c-1", serde_json::json!({"text": "hi"}))
        .await;
    assert_eq!(reply["msgid"], 1, "{reply}");
}
