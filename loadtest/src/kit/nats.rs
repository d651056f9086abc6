//! A real `nats-server` (Debian's package, which `scripts/test` installs) on a loopback port
//! of its own, to kill and start again on the same port, plain, over TLS (with throwaway
//! certificates) or with a user and password or a token; and a loopback TCP relay in front of it that
//! can be cut, to take one node off the bus while it keeps PostgreSQL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;
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
    /// What the server is started with besides its address: TLS or auth options.
    args: Vec<String>,
    /// `nats` or `tls`: what its URL says clients must speak.
    scheme: &'static str,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a plain server on a free loopback port, once it accepts connections.
    pub async fn start() -> Result<NatsServer> {
        NatsServer::launch("nats", Vec::new()).await
    }

    /// Starts a server that speaks only TLS, with a certificate for 127.0.0.1 signed by a
    /// throwaway CA made for it; it does not ask clients for certificates.
    pub async fn start_tls() -> Result<(NatsServer, TlsFiles)> {
        let tls = TlsFiles::generate()?;
        let server = NatsServer::launch("tls", tls.server_args()).await?;
        Ok((server, tls))
    }

    /// Like [`NatsServer::start_tls`], but the server also requires a client certificate
    /// signed by the same CA ([`TlsFiles::client_cert`]).
    pub async fn start_mutual_tls() -> Result<(NatsServer, TlsFiles)> {
        let tls = TlsFiles::generate()?;
        let mut args = tls.server_args();
        args.extend([
            "--tlsverify".into(),
            "--tlscacert".into(),
            path_arg(&tls.ca),
        ]);
        let server = NatsServer::launch("tls", args).await?;
        Ok((server, tls))
    }

    /// Starts a plain server that admits only `user` with `password` (given in the URL,
    /// `nats://user:password@host:port`).
    pub async fn start_with_user(user: &str, password: &str) -> Result<NatsServer> {
        let args = ["--user", user, "--pass", password]
            .map(String::from)
            .into();
        NatsServer::launch("nats", args).await
    }

    /// Starts a plain server that admits only clients giving `token` (in the URL,
    /// `nats://token@host:port`).
    pub async fn start_with_token(token: &str) -> Result<NatsServer> {
        NatsServer::launch("nats", vec!["--auth".into(), token.into()]).await
    }

    async fn launch(scheme: &'static str, args: Vec<String>) -> Result<NatsServer> {
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
            args,
            scheme,
            child: None,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// The URL nodes connect to (`tls://…` for a TLS server; no credentials).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
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

    /// Starts the server again on the same port, with the same options.
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill();
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        // TLS, if any, starts after the server's INFO: a TCP connection shows it listens.
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
                // A clone has seen what its original saw, which is no cut at all: without
                // this, every connection after the first cut would be dropped at once.
                let mut cut = cut.clone();
                cut.mark_unchanged();
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

/// A throwaway CA made with the `openssl` CLI, and PEM files it signed: a server
/// certificate for 127.0.0.1 and a client certificate. Deleted when dropped.
pub struct TlsFiles {
    /// The CA's certificate: what clients trust (`HERALD_NATS_TLS_CA`).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// For a server that verifies clients (`HERALD_NATS_TLS_CERT`/`HERALD_NATS_TLS_KEY`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    _dir: TempDir,
}

impl TlsFiles {
    /// A new CA, and the two certificates it signs, in a temporary directory. Another call
    /// makes another CA, which trusts none of this one's certificates.
    pub fn generate() -> Result<TlsFiles> {
        let dir = tempfile::Builder::new()
            .prefix("tls-nats-")
            .tempdir()
            .context("a temporary directory for TLS files")?;
        let file = |name: &str| dir.path().join(name);
        let ca_key = file("ca.key");
        let files = TlsFiles {
            ca: file("ca.pem"),
            server_cert: file("server.pem"),
            server_key: file("server.key"),
            client_cert: file("client.pem"),
            client_key: file("client.key"),
            _dir: dir,
        };
        let ca = (files.ca.as_path(), ca_key.as_path());
        certify(
            "herald test CA",
            ca,
            None,
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        let server = (files.server_cert.as_path(), files.server_key.as_path());
        certify(
            "127.0.0.1",
            server,
            Some(ca),
            &[
                "basicConstraints=critical,CA:FALSE",
                "subjectAltName=IP:127.0.0.1",
                "extendedKeyUsage=serverAuth",
            ],
        )?;
        let client = (files.client_cert.as_path(), files.client_key.as_path());
        certify(
            "herald test node",
            client,
            Some(ca),
            &[
                "basicConstraints=critical,CA:FALSE",
                "extendedKeyUsage=clientAuth",
            ],
        )?;
        Ok(files)
    }

    /// The nats-server options that serve TLS with the server certificate.
    fn server_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--tlscert".into(),
            path_arg(&self.server_cert),
            "--tlskey".into(),
            path_arg(&self.server_key),
        ]
    }
}

/// Makes, with the `openssl` CLI, a P-256 key and a certificate for `subject` with the
/// X.509 `extensions`, both written to `(cert, key)`; signed by `signer` (a certificate and
/// its key), or by itself.
fn certify(
    subject: &str,
    (cert, key): (&Path, &Path),
    signer: Option<(&Path, &Path)>,
    extensions: &[&str],
) -> Result<()> {
    let mut openssl = Command::new("openssl");
    openssl
        .args(
            "req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1".split(' '),
        )
        .arg("-subj")
        .arg(format!("/CN={subject}"))
        .arg("-out")
        .arg(cert)
        .arg("-keyout")
        .arg(key);
    if let Some((ca_cert, ca_key)) = signer {
        openssl.arg("-CA").arg(ca_cert).arg("-CAkey").arg(ca_key);
    }
    for extension in extensions {
        openssl.arg("-addext").arg(extension);
    }
    let output = openssl
        .stdin(Stdio::null())
        .output()
        .context("cannot run openssl (the CLI makes the test certificates)")?;
    if !output.status.success() {
        bail!(
            "openssl could not make a certificate for {subject}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}
