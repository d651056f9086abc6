//! Schema migrations: the plain SQL files of `sql/`, applied in order, each once.

use super::StoreError;

/// Every migration, in the order it is applied. A migration is never edited once
/// released: changes come as a new file.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_core", include_str!("../../sql/0001_core.sql")),
    (
        "0002_append_function",
        include_str!("../../sql/0002_append_function.sql"),
    ),
    ("0003_sync", include_str!("../../sql/0003_sync.sql")),
];

/// An arbitrary constant naming Herald's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x4845_5241_4c44; // "HERALD"

/// Applies the pending migrations in one transaction, under an advisory lock so that
/// nodes starting together apply each migration exactly once. Returns those applied.
pub(super) async fn apply(
    client: &mut deadpool_postgres::Client,
) -> Result<Vec<&'static str>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // "relation already exists, skipping" is the normal case, not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_migrations (
             version    text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<String> = tx
        .query("SELECT version FROM herald_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut newly = Vec::new();
    for &(version, sql) in MIGRATIONS {
        if applied.iter().any(|v| v == version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO herald_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        newly.push(version);
    }
    tx.commit().await?;
    Ok(newly)
}
