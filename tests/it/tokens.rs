//! User tokens minted by a standard library (PyJWT, keys made by `cryptography`, in a venv
//! under target/ made on first use), verified by a real Herald over HTTP and WebSocket:
//! every algorithm, every refusal with its reason, keys rotated by `kid` through a JWKS
//! served on 127.0.0.1, a JWKS file, and a JWKS endpoint failing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{eventually, metric, respond, Client, Server, JWT_SECRET};

/// The user every token here is for.
const UID: u64 = 42;
const AUDIENCE: &str = "herald";
const ISSUER: &str = "https://id.example";
/// PyJWT and the `cryptography` it signs with, pinned.
const PYTHON_PACKAGES: [&str; 2] = ["PyJWT[crypto]==2.10.1", "cryptography==44.0.3"];

/// The venv's python, made once per checkout (and once per run of this binary).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let venv = target.join("tokens-venv");
        let python = venv.join("bin/python");
        if python.exists() {
            return python;
        }
        ensure_python_venv();
        // Made aside and renamed into place, so test binaries run at once never see half of
        // one: the first rename wins, the others drop theirs.
        let aside = target.join(format!("tokens-venv.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&aside);
        run(Command::new("python3").arg("-m").arg("venv").arg(&aside));
        run(Command::new(aside.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES));
        if std::fs::rename(&aside, &venv).is_err() {
            std::fs::remove_dir_all(&aside).expect("drop the venv made aside");
        }
        python
    })
}

/// Installs Debian's python3-venv if `python3 -m venv` cannot work (as scripts/api-check).
fn ensure_python_venv() {
    let works = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return;
    }
    let root = Command::new("id").arg("-u").output().expect("id -u").stdout == b"0\n";
    let sudo = |args: &[&str]| {
        let mut command = Command::new(if root { args[0] } else { "sudo" });
        command.args(if root { &args[1..] } else { args });
        command.env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command);
    };
    sudo(&["apt-get", "update", "-qq"]);
    sudo(&["apt-get", "install", "-y", "-qq", "python3-venv"]);
}

fn run(command: &mut Command) {
    let status = command.status().expect("start a set-up command");
    assert!(status.success(), "{command:?}: {status}");
}

/// Asks tests/it/tokens/mint.py, off the runtime's threads (the JWKS server runs on them).
async fn mint(request: Value) -> Value {
    tokio::task::spawn_blocking(move || {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tokens/mint.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mint.py");
        let stdin = child.stdin.take().expect("piped");
        serde_json::to_writer(stdin, &request).expect("write the request");
        let output = child.wait_with_output().expect("mint.py answers");
        assert!(output.status.success(), "mint.py failed on {request}");
        serde_json::from_slice(&output.stdout).expect("mint.py answers JSON")
    })
    .await
    .expect("mint.py ran")
}

/// An RSA, an EC P-256 and an Ed25519 key: public PEMs in `dir`, private PEMs and public
/// JWKs in the answer.
struct Keys {
    dir: PathBuf,
    made: Value,
}

impl Keys {
    async fn make(name: &str) -> Keys {
        let dir = std::env::temp_dir().join(format!("herald-tokens-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a key folder");
        let made = mint(json!({"keys": dir})).await;
        Keys { dir, made }
    }

    fn private(&self, kind: &str) -> Value {
        self.made[kind]["private"].clone()
    }

    /// The public JWK of `kind`, named `kid`.
    fn jwk(&self, kind: &str, kid: &str) -> Value {
        let mut jwk = self.made[kind]["jwk"].clone();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk
    }

    fn pem(&self, kind: &str) -> String {
        self.dir.join(format!("{kind}.pem")).display().to_string()
    }

    fn public_pem(&self, kind: &str) -> String {
        std::fs::read_to_string(self.pem(kind)).expect("the public PEM")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of `UID` for ten minutes, for this gateway (audience and issuer), with `changes`
/// (a null removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims =
        json!({"sub": UID.to_string(), "exp": now() + 600, "aud": AUDIENCE, "iss": ISSUER});
    for (name, value) in changes.as_object().expect("an object") {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            _ => claims
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

/// A token request for mint.py.
fn spec(alg: &str, key: Value, kid: Option<&str>, claims: Value) -> Value {
    let headers = kid.map_or(json!({}), |kid| json!({"kid": kid}));
    json!({"alg": alg, "key": key, "headers": headers, "claims": claims})
}

async fn tokens(specs: Vec<Value>) -> Vec<String> {
    let minted = mint(json!({"tokens": specs})).await;
    serde_json::from_value(minted).expect("a list of tokens")
}

/// A server verifying with the kit's secret and the PEM keys of `keys` (kids `rsa`, `ec`; the
/// Ed25519 key without one), for `AUDIENCE` from `ISSUER`.
async fn server_with_pem_keys(keys: &Keys) -> Server {
    let public = format!(
        "rsa={},ec={},{}",
        keys.pem("rsa"),
        keys.pem("ec"),
        keys.pem("ed")
    );
    let server = Server::start_with(&[
        ("HERALD_JWT_PUBLIC_KEYS", &public),
        ("HERALD_JWT_AUDIENCE", "chat, herald"),
        ("HERALD_JWT_ISSUER", ISSUER),
    ])
    .await;
    server.users(&[UID]).await;
    server
}

/// The token works for the user API and opens a session for `UID`.
async fn assert_accepted(server: &Server, token: &str) {
    let request = server
        .http
        .get(server.url("/v1/me/groups"))
        .bearer_auth(token);
    let (status, body) = respond(request).await;
    assert_eq!(status, 200, "{body}");
    let client = Client::connect(server.addr, token).await;
    let client = client.unwrap_or_else(|status| panic!("WebSocket refused with {status}"));
    assert_eq!(client.hello["uid"], UID);
}

/// The token is refused with 401, over HTTP and on the WebSocket path alike; returns the
/// reason both give.
async fn refusal(server: &Server, token: &str) -> String {
    let request = server
        .http
        .get(server.url("/v1/me/groups"))
        .bearer_auth(token);
    let (status, http) = respond(request).await;
    assert_eq!(status, 401, "{http}");
    // The upgrade is refused before any WebSocket exists: the same answer as HTTP's.
    let request = server
        .http
        .get(server.url("/v1/ws"))
        .query(&[("token", token)]);
    let (status, ws) = respond(request).await;
    assert_eq!(status, 401, "{ws}");
    assert_eq!(ws, http, "the same reason on both paths");
    assert_eq!(Client::connect(server.addr, token).await.err(), Some(401));
    assert_eq!(http["error"]["code"], "unauthorized", "{http}");
    http["error"]["message"]
        .as_str()
        .expect("a reason")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_accepted_over_http_and_websocket() {
    let keys = Keys::make("algorithms").await;
    let server = server_with_pem_keys(&keys).await;
    let secret = json!(JWT_SECRET);
    let specs = vec![
        spec("HS256", secret.clone(), None, claims(json!({}))),
        spec("HS384", secret.clone(), None, claims(json!({}))),
        spec("HS512", secret, None, claims(json!({}))),
        spec("RS256", keys.private("rsa"), Some("rsa"), claims(json!({}))),
        spec("RS384", keys.private("rsa"), Some("rsa"), claims(json!({}))),
        // No kid: the keys of the algorithm's family are tried.
        spec("RS512", keys.private("rsa"), None, claims(json!({}))),
        spec("PS256", keys.private("rsa"), Some("rsa"), claims(json!({}))),
        spec("PS384", keys.private("rsa"), Some("rsa"), claims(json!({}))),
        spec("PS512", keys.private("rsa"), None, claims(json!({}))),
        spec("ES256", keys.private("ec"), Some("ec"), claims(json!({}))),
        spec(
            "EdDSA",
            keys.private("ed"),
            None,
            claims(json!({"aud": ["mail", "chat"]})),
        ),
        // An unknown kid falls back to the keys given without one.
        spec(
            "EdDSA",
            keys.private("ed"),
            Some("elsewhere"),
            claims(json!({})),
        ),
    ];
    for token in tokens(specs).await {
        assert_accepted(&server, &token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_get_401_with_the_reason_on_http_and_websocket() {
    let keys = Keys::make("refusals").await;
    let server = server_with_pem_keys(&keys).await;
    let rsa = || keys.private("rsa");
    let cases: Vec<(Value, &str)> = vec![
        (
            spec(
                "HS256",
                json!("another-secret-0123456789"),
                None,
                claims(json!({})),
            ),
            "signature does not verify",
        ),
        (
            spec("ES256", keys.private("ec"), Some("rsa"), claims(json!({}))),
            "algorithm ES256 not accepted",
        ),
        (
            spec(
                "HS256-with-public-key",
                json!(keys.public_pem("rsa")),
                Some("rsa"),
                claims(json!({})),
            ),
            "algorithm HS256 not accepted",
        ),
        (
            spec(
                "HS256-with-public-key",
                json!(keys.public_pem("rsa")),
                None,
                claims(json!({})),
            ),
            "signature does not verify",
        ),
        (
            spec("none", Value::Null, None, claims(json!({}))),
            "algorithm none not accepted",
        ),
        (
            spec(
                "RS256",
                rsa(),
                Some("rsa"),
                claims(json!({"exp": now() - 31})),
            ),
            "token expired",
        ),
        (
            spec(
                "RS256",
                rsa(),
                Some("rsa"),
                claims(json!({"nbf": now() + 300})),
            ),
            "token not yet valid (nbf)",
        ),
        (
            spec("RS256", rsa(), Some("rsa"), claims(json!({"aud": "mail"}))),
            "token audience not accepted",
        ),
        (
            spec("RS256", rsa(), Some("rsa"), claims(json!({"aud": null}))),
            "token has no `aud` claim",
        ),
        (
            spec(
                "RS256",
                rsa(),
                Some("rsa"),
                claims(json!({"iss": "https://evil.example"})),
            ),
            "token issuer not accepted",
        ),
        (
            spec("RS256", rsa(), Some("rsa"), claims(json!({"sub": "alice"}))),
            "token subject (`sub`) is not a uid",
        ),
        (
            spec("RS256", rsa(), Some("retired"), claims(json!({}))),
            "unknown key id",
        ),
    ];
    let (specs, reasons): (Vec<Value>, Vec<&str>) = cases.into_iter().unzip();
    let minted = tokens(specs).await;
    for (token, reason) in minted.iter().zip(reasons) {
        assert_eq!(refusal(&server, token).await, reason, "{token}");
    }

    // A signature of the key, but over other claims (another uid).
    let pair = tokens(vec![
        spec("RS256", rsa(), Some("rsa"), claims(json!({}))),
        spec("RS256", rsa(), Some("rsa"), claims(json!({"sub": "7"}))),
    ])
    .await;
    let (signed, _) = pair[0].rsplit_once('.').unwrap();
    let (_, signature) = pair[1].rsplit_once('.').unwrap();
    let forged = format!("{signed}.{signature}");
    assert_eq!(refusal(&server, &forged).await, "signature does not verify");
    assert_eq!(refusal(&server, "not.a-token").await, "malformed token");

    // Within the 30 s leeway: a token just expired, one valid in a few seconds.
    let within = tokens(vec![
        spec(
            "RS256",
            rsa(),
            Some("rsa"),
            claims(json!({"exp": now() - 10})),
        ),
        spec(
            "RS256",
            rsa(),
            Some("rsa"),
            claims(json!({"nbf": now() + 10})),
        ),
    ])
    .await;
    for token in within {
        assert_accepted(&server, &token).await;
    }
}

/// A JWKS on 127.0.0.1 answering what it is told to, one request per connection.
struct JwksServer {
    addr: SocketAddr,
    /// The status and body of every answer from now on.
    answer: Arc<Mutex<(u16, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(answer: (u16, String)) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let answering = answer.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (status, body) = answering.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        JwksServer { addr, answer, task }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn serve(&self, keys: &[Value]) {
        *self.answer.lock().unwrap() = (200, json!({"keys": keys}).to_string());
    }

    fn fail(&self) {
        *self.answer.lock().unwrap() = (500, "down".into());
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Claims for a gateway that checks no audience nor issuer.
fn plain_claims() -> Value {
    json!({"sub": UID.to_string(), "exp": now() + 600})
}

async fn readyz(server: &Server) -> (u16, Value) {
    respond(server.http.get(server.url("/readyz"))).await
}

/// Waits until the node is ready: once its JWKS has loaded.
async fn until_ready(server: &Server) {
    eventually(
        "ready once the JWKS loads",
        Duration::from_secs(20),
        async || match readyz(server).await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

async fn jwks_metric(server: &Server, series: &str) -> f64 {
    metric(&server.metrics().await, &format!("herald_jwks_{series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_kid_through_a_jwks_url_and_a_failing_endpoint_keeps_the_last_good_keys() {
    let keys = Keys::make("rotation").await;
    let minted = tokens(vec![
        spec("RS256", keys.private("rsa"), Some("old"), plain_claims()),
        spec("EdDSA", keys.private("ed"), Some("new"), plain_claims()),
    ])
    .await;
    let (old, new) = (&minted[0], &minted[1]);
    let (old_key, new_key) = (keys.jwk("rsa", "old"), keys.jwk("ed", "new"));

    // The identity provider is down when the gateway starts: not ready, and it says why.
    let jwks = JwksServer::start((503, "starting".into())).await;
    let server = Server::start_with(&[
        ("HERALD_JWKS_URL", &jwks.url()),
        ("HERALD_JWKS_REFRESH_S", "1"),
    ])
    .await;
    server.users(&[UID]).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error"]["message"],
        "token keys not loaded yet from HERALD_JWKS_URL"
    );
    jwks.serve(std::slice::from_ref(&old_key));
    until_ready(&server).await;
    assert_accepted(&server, old).await;

    // Overlap: both keys published, tokens of either valid.
    jwks.serve(&[old_key.clone(), new_key.clone()]);
    assert_accepted(&server, new).await;
    assert_accepted(&server, old).await;

    // The old key withdrawn: its tokens are refused once the set is reloaded.
    jwks.serve(std::slice::from_ref(&new_key));
    eventually("the old key dropped", Duration::from_secs(20), async || {
        let request = server
            .http
            .get(server.url("/v1/me/groups"))
            .bearer_auth(old);
        match respond(request).await {
            (401, body) if body["error"]["message"] == "unknown key id" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(refusal(&server, old).await, "unknown key id");
    assert_accepted(&server, new).await;

    // The endpoint fails: the keys last loaded stay, and /metrics tells.
    let failed_before =
        jwks_metric(&server, r#"refreshes_total{outcome="failed",source="url"}"#).await;
    jwks.fail();
    eventually(
        "a failed refresh counted",
        Duration::from_secs(20),
        async || {
            let failed =
                jwks_metric(&server, r#"refreshes_total{outcome="failed",source="url"}"#).await;
            if failed > failed_before {
                Ok(())
            } else {
                Err(format!("{failed} failed refreshes"))
            }
        },
    )
    .await;
    assert_accepted(&server, new).await;
    assert_eq!(jwks_metric(&server, r#"keys{source="url"}"#).await, 1.0);
    assert_eq!(
        readyz(&server).await.0,
        200,
        "still ready on the last good keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kid_is_taken_up_at_once_without_waiting_for_the_refresh() {
    let keys = Keys::make("early").await;
    let minted = tokens(vec![
        spec("ES256", keys.private("ec"), Some("first"), plain_claims()),
        spec("RS256", keys.private("rsa"), Some("second"), plain_claims()),
    ])
    .await;
    let jwks =
        JwksServer::start((200, json!({"keys": [keys.jwk("ec", "first")]}).to_string())).await;
    // Reloads every 5 minutes: only the early refresh can find the second key now.
    let server = Server::start_with(&[("HERALD_JWKS_URL", &jwks.url())]).await;
    server.users(&[UID]).await;
    // Ready once the set loaded at start, so the first token needs no early refresh.
    until_ready(&server).await;
    assert_accepted(&server, &minted[0]).await;
    jwks.serve(&[keys.jwk("ec", "first"), keys.jwk("rsa", "second")]);
    assert_accepted(&server, &minted[1]).await;
    assert_accepted(&server, &minted[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_file_verifies_tokens_and_is_reread() {
    let keys = Keys::make("file").await;
    let minted = tokens(vec![
        spec("PS256", keys.private("rsa"), Some("f1"), plain_claims()),
        spec("EdDSA", keys.private("ed"), Some("f2"), plain_claims()),
    ])
    .await;
    let file = keys.dir.join("jwks.json");
    let write = |jwks: Vec<Value>| {
        // Written aside and renamed, as a deployment would, so no read sees half a file.
        let aside = keys.dir.join("jwks.json.new");
        std::fs::write(&aside, json!({"keys": jwks}).to_string()).unwrap();
        std::fs::rename(&aside, &file).unwrap();
    };
    write(vec![keys.jwk("rsa", "f1")]);
    let server = Server::start_with(&[
        ("HERALD_JWKS_FILE", file.to_str().unwrap()),
        ("HERALD_JWKS_REFRESH_S", "1"),
    ])
    .await;
    server.users(&[UID]).await;
    assert_accepted(&server, &minted[0]).await;
    write(vec![keys.jwk("ed", "f2")]);
    eventually(
        "the rewritten file read",
        Duration::from_secs(20),
        async || {
            let request = server
                .http
                .get(server.url("/v1/me/groups"))
                .bearer_auth(&minted[1]);
            match respond(request).await {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_accepted(&server, &minted[1]).await;
    assert_eq!(refusal(&server, &minted[0]).await, "unknown key id");
}
