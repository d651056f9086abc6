//! A real `nats-server` (Debian's package, which `scripts/test` installs) on a loopback port
//! of its own, to kill and start again on the same port; and a loopback TCP relay in front
//! of it that can be cut, to take one node off the bus while it keeps PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::launcher::free_port;

/// Where Debian puts the server (`/usr/sbin` is not on every user's PATH).
const NATS_SERVER: &[&str] = &["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// How long the server may take to accept connections.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A running `nats-server`, killed when dropped.
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free loopback port, once it accepts connections.
    pub async fn start() -> Result<NatsServer> {
        let bin = NATS_SERVER
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .context(
                "nats-server not found: `apt-get install -y nats-server` (scripts/test does)",
            )?;
        let mut server = NatsServer {
            bin,
            port: free_port()?,
            child: None,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL): every node loses the bus at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill();
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_WITHIN;
        while TcpStream::connect(self.addr()).await.is_err() {
            if Instant::now() >= deadline {
                bail!(
                    "nats-server did not listen on {} within {START_WITHIN:?}",
                    self.addr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP relay to `target`: what goes through it can be cut (every connection
/// dropped, new ones refused) and let through again.
pub struct Relay {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Relay {
    /// Starts relaying to `target` for the life of the runtime.
    pub async fn start(target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, cut) = watch::channel(0u64);
        let accepting = open.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::Acquire) {
                    continue;
                }
                let mut cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Relay { addr, open, cuts })
    }

    /// The URL to give a NATS client instead of the server's.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn mend(&self) {
        self.open.store(true, Ordering::Release);
    }
}
