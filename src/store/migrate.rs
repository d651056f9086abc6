//! The database's schema and functions, from the plain SQL files of `sql/` (`sql/README.md`).
//!
//! Migrations (`sql/migrations/`) are applied in order, each once, and checksummed: one whose
//! file changed after it was applied stops start-up. Functions (`sql/functions/`) are edited
//! in place: when any file differs from what was applied, every Herald function is dropped and
//! every file applied again, so that new signatures and removed functions take effect too.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::StoreError;

/// One SQL file embedded in the binary.
pub struct SqlFile {
    /// The file's name without `.sql`: a migration's version, or a function file's key.
    pub name: &'static str,
    pub sql: &'static str,
}

/// Embeds `sql/<dir>/<name>.sql` for each name, in the order given.
macro_rules! sql_files {
    ($dir:literal: $($name:literal),+ $(,)?) => {
        &[$(SqlFile {
            name: $name,
            sql: include_str!(concat!("../../sql/", $dir, "/", $name, ".sql")),
        }),+]
    };
}

/// Every migration, in the order it is applied. Append-only: an applied migration is never
/// edited (start-up checks its checksum); changes come as a new file.
pub const MIGRATIONS: &[SqlFile] = sql_files!("migrations":
    "0001_core",
    "0002_append_function",
    "0003_sync",
    "0004_reads",
    "0005_webhooks",
    "0006_retention",
    "0007_tombstones",
);

/// Every function file, in name order, which is the order they are applied in.
pub const FUNCTIONS: &[SqlFile] = sql_files!("functions":
    "append",
    "checks",
    "clock",
    "deactivation",
    "erasure",
    "events",
    "friends",
    "groups",
    "members",
    "profiles",
    "recall",
    "retention",
    "versions",
    "webhooks",
);

/// An arbitrary constant naming Herald's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x4845_5241_4c44; // "HERALD"

const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

/// Herald's records of what it applied. A checksum is the SHA-256 of the file, in hex.
const CREATE_RECORDS: &str = "
    CREATE TABLE IF NOT EXISTS herald_migrations (
        version    text PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now(),
        -- NULL only in rows written before migrations were checksummed, until the next start.
        checksum   text
    );
    -- The table as created before migrations were checksummed.
    ALTER TABLE herald_migrations ADD COLUMN IF NOT EXISTS checksum text;
    CREATE TABLE IF NOT EXISTS herald_functions (
        file       text PRIMARY KEY,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );";

const RECORDED_MIGRATIONS: &str = "SELECT version, checksum FROM herald_migrations";
const RECORD_MIGRATION: &str = "INSERT INTO herald_migrations (version, checksum) VALUES ($1, $2)";
const BACKFILL_CHECKSUM: &str = "UPDATE herald_migrations SET checksum = $2 WHERE version = $1";

const RECORDED_FUNCTIONS: &str = "SELECT file, checksum FROM herald_functions";
const FORGET_FUNCTIONS: &str = "DELETE FROM herald_functions";
const RECORD_FUNCTIONS: &str = "
    INSERT INTO herald_functions (file, checksum) SELECT * FROM unnest($1::text[], $2::text[])";

/// Drops every Herald function of the schema: `CREATE OR REPLACE` cannot change a signature
/// or a return type, and a function removed from the files must not linger. No CASCADE: a
/// table that depends on a function fails here rather than losing a default or a trigger.
const DROP_FUNCTIONS: &str = r"
    DO $$
    DECLARE
        f regprocedure;
    BEGIN
        FOR f IN
            SELECT p.oid FROM pg_proc p
            WHERE p.pronamespace = current_schema()::regnamespace
              AND p.prokind = 'f'
              AND p.proname LIKE 'herald\_%'
        LOOP
            EXECUTE format('DROP FUNCTION %s', f);
        END LOOP;
    END;
    $$";

/// A file's checksum, as recorded: SHA-256, lowercase hex.
fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Applies the pending migrations, then the function files if any changed, in one transaction
/// under an advisory lock, so that nodes starting together apply each exactly once. Logs what
/// it applied.
pub(super) async fn apply(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute(LOCK, &[&MIGRATION_LOCK]).await?;
    // "relation already exists, skipping" is the normal case, not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(CREATE_RECORDS).await?;
    let migrations = apply_migrations(&tx).await?;
    let functions = apply_functions(&tx).await?;
    tx.commit().await?;
    if !migrations.is_empty() {
        tracing::info!(applied = ?migrations, "migrations applied");
    }
    if let Some(FunctionChanges { changed, removed }) = functions {
        tracing::info!(?changed, ?removed, "functions replaced");
    }
    Ok(())
}

/// Checks the applied migrations against their files and applies the others.
async fn apply_migrations(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Vec<&'static str>, StoreError> {
    let recorded: BTreeMap<String, Option<String>> = tx
        .query(RECORDED_MIGRATIONS, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let file = checksum(migration.sql);
        match recorded.get(migration.name) {
            None => {
                tx.batch_execute(migration.sql).await?;
                tx.execute(RECORD_MIGRATION, &[&migration.name, &file])
                    .await?;
                applied.push(migration.name);
            }
            // Applied by a binary that did not checksum: it ran this very text (applied
            // migrations never change), so the file as it is now starts the record.
            Some(None) => {
                tx.execute(BACKFILL_CHECKSUM, &[&migration.name, &file])
                    .await?;
            }
            Some(Some(applied_checksum)) if *applied_checksum == file => {}
            Some(Some(applied_checksum)) => {
                return Err(StoreError::MigrationChanged {
                    version: migration.name,
                    applied: applied_checksum.clone(),
                    file,
                })
            }
        }
    }
    Ok(applied)
}

/// The function files that differ from those last applied.
struct FunctionChanges {
    /// New or edited files.
    changed: Vec<&'static str>,
    /// Files applied before that are gone.
    removed: Vec<String>,
}

/// Replaces every Herald function by those of the files, unless the files are those applied
/// last time. Returns what changed, if anything did.
async fn apply_functions(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Option<FunctionChanges>, StoreError> {
    let mut recorded: BTreeMap<String, String> = tx
        .query(RECORDED_FUNCTIONS, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let files: Vec<String> = FUNCTIONS.iter().map(|f| checksum(f.sql)).collect();
    let mut changed = Vec::new();
    for (function, file) in FUNCTIONS.iter().zip(&files) {
        if recorded.remove(function.name).as_ref() != Some(file) {
            changed.push(function.name);
        }
    }
    // What is left of the record is no longer among the files.
    let removed: Vec<String> = recorded.into_keys().collect();
    if changed.is_empty() && removed.is_empty() {
        return Ok(None);
    }
    tx.batch_execute(DROP_FUNCTIONS).await?;
    // SQL-language bodies are checked against the functions they call when created; off,
    // the files need no order among themselves.
    tx.batch_execute("SET LOCAL check_function_bodies = off")
        .await?;
    for function in FUNCTIONS {
        tx.batch_execute(function.sql).await?;
    }
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    tx.execute(FORGET_FUNCTIONS, &[]).await?;
    tx.execute(RECORD_FUNCTIONS, &[&names, &files]).await?;
    Ok(Some(FunctionChanges { changed, removed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the `.sql` files in `sql/<dir>/`, sorted.
    fn files_in(dir: &str) -> Vec<String> {
        let path = format!("{}/sql/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
            .map(|entry| entry.expect("a directory entry").file_name())
            .filter_map(|name| Some(name.to_str()?.strip_suffix(".sql")?.to_owned()))
            .collect();
        names.sort();
        names
    }

    fn names(files: &[SqlFile]) -> Vec<&str> {
        files.iter().map(|f| f.name).collect()
    }

    #[test]
    fn every_migration_file_is_listed_in_order() {
        assert_eq!(names(MIGRATIONS), files_in("migrations"));
    }

    #[test]
    fn every_function_file_is_listed_in_name_order() {
        assert_eq!(names(FUNCTIONS), files_in("functions"));
    }

    #[test]
    fn a_checksum_is_the_sha256_of_the_file_in_hex() {
        assert_eq!(
            checksum("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
