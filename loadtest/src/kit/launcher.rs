//! Starting the `herald` binary: `serve` with the settings a test or a load run needs, and
//! `migrate`. A started process is watched for the start-up lines that carry its address,
//! its log goes where the caller asked, and it is signalled, stopped or killed.

use std::io::{BufRead, BufReader, LineWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::sync::mpsc;

/// The admin key and the JWT secret of every Herald the kit starts.
pub const ADMIN_KEY: &str = "kit-admin-key-0123456789";
pub const JWT_SECRET: &str = "kit-jwt-secret-0123456789";

/// What a starting Herald logs once it listens (storage may still be down), and once it
/// serves; both lines carry the address.
pub const LISTENING: &str = "listening; preparing storage";
pub const READY: &str = "herald ready";

/// How a Herald is started: kept, so it can be started again the same way.
#[derive(Debug)]
pub struct Launch {
    pub bin: PathBuf,
    pub database_url: String,
    /// `127.0.0.1:0`, or a fixed port that restarts keep.
    pub listen: String,
    /// Settings, applied after the launcher's own so they can override them.
    pub env: Vec<(String, String)>,
    pub log: Log,
}

/// Where a started Herald's log goes.
#[derive(Debug)]
pub enum Log {
    /// Every line of stdout and stderr kept in memory, for [`Process::logs`].
    Kept,
    /// Appended to this file; stderr stays the caller's.
    File(PathBuf),
    /// Nowhere, but for its warnings and errors, shown on the caller's stderr.
    Warnings,
}

/// A `herald` command on `database_url` with the kit's credentials and JSON logs.
fn herald(bin: &Path, subcommand: &str, database_url: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .arg(subcommand)
        .env("DATABASE_URL", database_url)
        .env("HERALD_JWT_SECRET", JWT_SECRET)
        .env("HERALD_ADMIN_KEY", ADMIN_KEY)
        .env("HERALD_LOG_FORMAT", "json");
    command
}

/// Runs `herald migrate` on `database_url` to its end.
pub async fn migrate(bin: &Path, database_url: &str) -> Result<()> {
    let output = tokio::process::Command::from(herald(bin, "migrate", database_url))
        .output()
        .await
        .with_context(|| format!("running {} migrate", bin.display()))?;
    if !output.status.success() {
        bail!(
            "herald migrate on {database_url} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl Launch {
    /// Starts `herald serve`; [`Process::wait_for`] tells when it listens.
    pub fn start(&self) -> Result<Process> {
        let kept = matches!(self.log, Log::Kept);
        let mut child = herald(&self.bin, "serve", &self.database_url)
            .env("HERALD_LISTEN", &self.listen)
            // No send rate and no request budget: they would cap what benchmarks measure and
            // refuse the hundreds of requests tests pipeline. Whoever needs them sets them.
            .env("HERALD_SEND_RATE", "0")
            .env("HERALD_REQUEST_BUDGET", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(if kept {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo build --release)",
                    self.bin.display()
                )
            })?;
        let lines = kept.then(Arc::default);
        let mut file = match &self.log {
            Log::File(path) => Some(LineWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )),
            Log::Kept | Log::Warnings => None,
        };
        let warnings = matches!(self.log, Log::Warnings);
        let (milestone_tx, milestones) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let kept_stdout = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = &mut file {
                    let _ = writeln!(file, "{line}");
                }
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let message = event["message"].as_str().unwrap_or_default();
                    if message == LISTENING || message == READY {
                        let addr = event["addr"].as_str().unwrap_or_default().to_owned();
                        let _ = milestone_tx.send((message.to_owned(), addr));
                    } else if warnings && (event["level"] == "WARN" || event["level"] == "ERROR") {
                        eprintln!("herald: {line}");
                    }
                }
                if let Some(kept) = &kept_stdout {
                    keep(kept, line);
                }
            }
        });
        if let (Some(stderr), Some(kept)) = (child.stderr.take(), lines.clone()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    keep(&kept, line);
                }
            });
        }
        Ok(Process {
            child,
            milestones,
            lines,
        })
    }
}

fn keep(lines: &Mutex<Vec<String>>, line: String) {
    lines
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(line);
}

/// A running `herald serve`: killed when dropped.
pub struct Process {
    child: Child,
    /// The start-up lines as they come: (message, address).
    milestones: mpsc::UnboundedReceiver<(String, String)>,
    /// Its log, with [`Log::Kept`].
    lines: Option<Arc<Mutex<Vec<String>>>>,
}

/// What a process uses of the machine, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process logs `milestone` ([`LISTENING`] or [`READY`]); returns the
    /// address it names.
    pub async fn wait_for(&mut self, milestone: &str, within: Duration) -> Result<SocketAddr> {
        let deadline = tokio::time::Instant::now() + within;
        let failure = loop {
            match tokio::time::timeout_at(deadline, self.milestones.recv()).await {
                Ok(Some((message, addr))) if message == milestone => {
                    return addr
                        .parse()
                        .with_context(|| format!("herald logged `{milestone}` at `{addr}`"));
                }
                Ok(Some(_)) => continue,
                Ok(None) => break format!("herald exited before it logged `{milestone}`"),
                Err(_) => break format!("herald did not log `{milestone}` within {within:?}"),
            }
        };
        match &self.lines {
            Some(_) => bail!("{failure}; its log:\n{}", self.logs()),
            None => bail!("{failure}"),
        }
    }

    /// Everything it logged so far, with [`Log::Kept`] (else nothing).
    pub fn logs(&self) -> String {
        self.lines.as_ref().map_or_else(String::new, |lines| {
            lines
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .join("\n")
        })
    }

    /// Whether it is still running (it has not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How it exited, once it has ended on its own.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reaps it: no chance to flush or close anything.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("kill -9 herald")?;
        self.child.wait().context("waiting for the killed herald")?;
        Ok(())
    }

    fn signal_term(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        Ok(())
    }

    /// SIGTERM (a graceful stop: it flushes its acks), and waits for it to exit.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        self.signal_term()?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("herald still running {within:?} after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited `within`; for where nothing can be
    /// awaited (a `Drop`).
    pub fn stop_blocking(mut self, within: Duration) {
        if self.running() && self.signal_term().is_ok() {
            let deadline = Instant::now() + within;
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Its resident memory and CPU time so far, from /proc.
    pub fn resources(&self) -> Option<Resources> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n)?.parse::<u64>().ok();
        let ticks = field(11)? + field(12)?;
        // Linux reports CPU time in clock ticks (USER_HZ, 100) and RSS in 4 KiB pages here.
        Some(Resources {
            rss_bytes: field(21)? * 4096,
            cpu_seconds: ticks as f64 / 100.0,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on, for a server that is stopped and started again
/// there. It is taken below the kernel's ephemeral range: while the server is down, a client
/// connecting to an ephemeral port can be given that very port as its own source and connect
/// to itself (TCP self-connect), and would then keep the server from binding it again.
pub fn free_port() -> Result<u16> {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (20_000u16, ephemeral_from.max(20_001));
    let span = u32::from(high - low);
    // Runs in parallel (tests) start from different places.
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    (0..span)
        .map(|i| low + ((seed % span + i) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .with_context(|| format!("no free loopback port in {low}..{high}"))
}
