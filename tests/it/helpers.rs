//! Test helpers: a fresh database per test on the PostgreSQL that `scripts/test` starts,
//! the real `herald` binary on 127.0.0.1 port 0, and real HTTP and WebSocket clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// How long a test waits for any one frame or reply.
pub const WAIT: Duration = Duration::from_secs(10);

/// The URL of the PostgreSQL `scripts/test` started.
pub fn postgres_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .expect("HERALD_TEST_DATABASE_URL is not set: run the suite with scripts/test")
}

/// `postgres_url` with another database name.
pub fn database_url(name: &str) -> String {
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

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "herald_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    database_url(&name)
}

/// A running `herald` process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub database_url: String,
    env: Vec<(String, String)>,
    logs: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

impl Server {
    /// A server on a fresh database with the default settings (and no send rate limit).
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// A server on a fresh database; `env` overrides settings.
    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let database_url = fresh_database().await;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::spawn(database_url, env).await
    }

    /// A server on an existing database, once it is ready.
    pub async fn spawn(database_url: String, env: Vec<(String, String)>) -> Server {
        Server::spawn_until(database_url, env, "herald ready").await
    }

    /// A server on an existing database, as soon as it has logged `milestone` (`listening;
    /// preparing storage` or `herald ready`; both carry the address).
    pub async fn spawn_until(
        database_url: String,
        env: Vec<(String, String)>,
        milestone: &'static str,
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_JWT_SECRET", JWT_SECRET)
            .env("HERALD_ADMIN_KEY", ADMIN_KEY)
            // Tests pipeline hundreds of requests at once; the limits have tests of their own.
            .env("HERALD_SEND_RATE", "0")
            .env("HERALD_REQUEST_BUDGET", "0")
            .env("HERALD_LOG_FORMAT", "json")
            .env("HERALD_WORKERS", "2")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the herald binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        if event["message"] == milestone {
                            let _ = ready_tx.send(event["addr"].as_str().map(str::to_owned));
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let ready =
            tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(60)))
                .await
                .unwrap();
        let addr = match ready {
            Ok(Some(addr)) => addr.parse().expect("a socket address"),
            _ => panic!(
                "herald did not become ready; logs:\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        Server {
            child,
            addr,
            database_url,
            env,
            logs,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's resident memory, in bytes (`VmRSS` of its process).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server process is running");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("wait for herald")
    }

    /// The exit status, once the process has ended on its own.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the herald process")
    }

    /// A new process on the same database with the same settings.
    pub async fn restart(&mut self) {
        self.kill();
        let fresh = Server::spawn(self.database_url.clone(), self.env.clone()).await;
        let old = std::mem::replace(self, fresh);
        drop(old);
    }

    /// An admin request; returns the status and the JSON body (Null when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        respond(request).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates users with these uids.
    pub async fn users(&self, uids: &[u64]) {
        let users: Vec<Value> = uids.iter().map(|uid| json!({"uid": uid})).collect();
        let (status, body) = self
            .admin_post("/v1/admin/users", json!({"users": users}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates a group (owner first, all of `members` created as users) and returns its gid.
    pub async fn group(&self, members: &[u64]) -> u64 {
        self.users(members).await;
        let (status, body) = self
            .admin_post(
                "/v1/admin/groups",
                json!({"name": "test group", "owner": members[0], "members": members}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["gid"].as_u64().expect("a gid")
    }

    pub async fn token(&self, uid: u64) -> String {
        let (status, body) = self
            .admin_post("/v1/admin/tokens", json!({"uid": uid, "ttl_s": 3600}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// A user request with the user's token.
    pub async fn user(
        &self,
        uid: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let token = self.token(uid).await;
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        respond(request).await
    }

    /// Opens a WebSocket session for `uid` and reads its hello.
    pub async fn connect(&self, uid: u64) -> Client {
        let token = self.token(uid).await;
        Client::connect(self.addr, &token)
            .await
            .expect("WebSocket upgrade")
    }

    /// Every stored message of a group, paged over HTTP as `uid` (a member) sees it.
    pub async fn stored_messages(&self, uid: u64, gid: u64) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |m| m["msgid"].as_u64().unwrap());
            let path = format!("/v1/groups/{gid}/messages?after={after}&limit=1000");
            let (status, page) = self.user(uid, reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["gid"], gid, "{page}");
            let msgs = page["msgs"].as_array().expect("msgs").clone();
            let more = page["more"].as_bool().expect("more");
            assert!(!more || !msgs.is_empty(), "more:true with an empty page");
            all.extend(msgs);
            if !more {
                return all;
            }
        }
    }

    /// The server's Prometheus text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a request; returns the status and the JSON body (Null when empty).
pub async fn respond(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("HTTP body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// A WebSocket upgrade request to `/v1/ws` carrying `token` as a bearer header.
pub fn ws_request(addr: SocketAddr, token: &str) -> Request {
    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Polls `probe` until it yields a value; panics with `what` and the last observation
/// after `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One metric's value from Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// A WebSocket client speaking the wire protocol.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    /// Frames read while waiting for a reply, handed out by later reads in order.
    skipped: std::collections::VecDeque<Value>,
}

impl Client {
    /// Connects with a bearer token; Err carries the HTTP status of a refused upgrade.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Client, u16> {
        Client::open(ws_request(addr, token)).await
    }

    pub async fn open(request: Request) -> Result<Client, u16> {
        let (ws, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(response.status().as_u16())
            }
            Err(other) => panic!("WebSocket connect failed: {other}"),
        };
        let mut client = Client {
            ws,
            hello: Value::Null,
            skipped: Default::default(),
        };
        client.hello = client.recv().await;
        assert_eq!(
            client.hello["type"], "hello",
            "first frame: {}",
            client.hello
        );
        Ok(client)
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    /// The socket itself, hello read, for tests that write and read it in their own way.
    pub fn into_socket(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("WebSocket send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("WebSocket send");
    }

    /// The next JSON frame from the server; panics on close or after `WAIT`.
    pub async fn recv(&mut self) -> Value {
        match self.next_frame(WAIT).await {
            Some(Ok(frame)) => frame,
            Some(Err(close)) => panic!("session closed: {close:?}"),
            None => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next JSON frame, or the close code; None when nothing comes within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Result<Value, Option<u16>>> {
        match self.skipped.pop_front() {
            Some(frame) => Some(Ok(frame)),
            None => self.read_socket(wait).await,
        }
    }

    async fn read_socket(&mut self, wait: Duration) -> Option<Result<Value, Option<u16>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Some(Ok(
                        serde_json::from_str(&text).expect("server frames are JSON")
                    ))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Err(None)),
            }
        }
    }

    /// Reads frames until one of type `kind` comes; returns it.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Sends a request and waits for the frame that answers its `id`; frames pushed
    /// meanwhile stay queued for later reads, in order.
    pub async fn request(&mut self, frame: Value) -> Value {
        let id = frame["id"].clone();
        assert!(!id.is_null(), "requests need an id");
        self.send(frame).await;
        loop {
            match self.read_socket(WAIT).await {
                Some(Ok(reply)) if reply["id"] == id => return reply,
                Some(Ok(other)) => self.skipped.push_back(other),
                Some(Err(close)) => panic!("session closed awaiting reply {id}: {close:?}"),
                None => panic!("no reply to {id} within {WAIT:?}"),
            }
        }
    }

    /// Sends a message and returns its `sent` reply.
    pub async fn send_msg(&mut self, gid: u64, cmid: &str, body: Value) -> Value {
        self.request(json!({"type": "send", "id": cmid, "gid": gid, "cmid": cmid, "body": body}))
            .await
    }

    /// Reads until the session closes; returns the close code. Panics after `WAIT`.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next_frame(WAIT).await {
                Some(Ok(_)) => continue,
                Some(Err(code)) => return code,
                None => panic!("session still open after {WAIT:?}"),
            }
        }
    }

    /// Reads `msg` frames of `gid` until `count` arrived; other frames are skipped.
    pub async fn msgs(&mut self, gid: u64, count: usize) -> Vec<Value> {
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let frame = self.recv().await;
            if frame["type"] == "msg" && frame["gid"] == gid {
                got.push(frame);
            }
        }
        got
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}
