//! The harness stopped by a signal, as `timeout` or a script's `kill` stops it, stops what it
//! started: its Herald exits and the run's database is dropped.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(60);

#[test]
fn stopped_by_sigterm_it_stops_its_herald_and_drops_the_runs_database() {
    let url = std::env::var("HERALD_TEST_DATABASE_URL")
        .expect("HERALD_TEST_DATABASE_URL: a PostgreSQL server's URL (scripts/test sets it)");
    let mut harness = Command::new(env!("CARGO_BIN_EXE_herald-loadtest"))
        .args(["--postgres-url", &url])
        .args(["idle", "--sessions", "20", "--hold-s", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting herald-loadtest");
    let database = format!("herald_load_{}_0", harness.id());
    let herald = until("its Herald serving, on the run's database", || {
        let herald = children(harness.id())
            .into_iter()
            .find(|&pid| command_line(pid).ends_with(" serve"))?;
        database_exists(&url, &database).then_some(herald)
    });

    signal(harness.id(), "TERM");
    let status = until("the harness to exit", || {
        harness.try_wait().expect("its status")
    });
    // The harness waits for its Herald to exit before it exits itself.
    let herald_stopped = running(herald) != Some(true);
    let database_left = database_exists(&url, &database);
    // Nothing left behind, whatever the outcome (a Herald left running would also hold the
    // harness's stderr open).
    if !herald_stopped {
        signal(herald, "KILL");
    }
    if database_left {
        psql(&url, &format!("DROP DATABASE {database} WITH (FORCE)"));
    }
    let mut stderr = String::new();
    harness
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("its stderr");

    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    assert!(
        herald_stopped,
        "herald {herald} still ran after its harness stopped"
    );
    assert!(!database_left, "{database} was left");
}

/// Polls `check` until it gives a value; panics after [`WITHIN`].
fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {WITHIN:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes whose parent is `parent`, from /proc (a child of any of its threads).
fn children(parent: u32) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").expect("reading /proc");
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_field(pid, 1).and_then(|ppid| ppid.parse().ok()) == Some(parent))
        .collect()
}

/// Whether the process runs: None once it is gone, false while it is a zombie.
fn running(pid: u32) -> Option<bool> {
    stat_field(pid, 0).map(|state| state != "Z")
}

/// A field of /proc/PID/stat after the command name (0: the state, 1: the parent's pid).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let fields = stat.rsplit_once(')')?.1;
    fields.split_whitespace().nth(n).map(str::to_owned)
}

fn command_line(pid: u32) -> String {
    let line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&line)
        .replace('\0', " ")
        .trim_end()
        .to_owned()
}

fn database_exists(url: &str, name: &str) -> bool {
    let query = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    psql(url, &query) == "1"
}

/// Runs one statement with psql; what it printed, trimmed.
fn psql(url: &str, statement: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-Atc", statement])
        .output()
        .expect("running psql");
    assert!(output.status.success(), "psql: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid}");
}
