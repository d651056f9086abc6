//! The `herald` binary under test, started by the kit's launcher on 127.0.0.1 port 0 with
//! its log kept, and the HTTP requests tests make of it.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use herald_loadtest::kit::client::Upgrade;
use herald_loadtest::kit::launcher::{Launch, Log, Process, ADMIN_KEY, READY};
use serde_json::{json, Value};

use super::client::Client;
use super::database::migrated_database;

/// Longest wait for a server to start, or to stop after SIGTERM.
const START_OR_STOP_WITHIN: Duration = Duration::from_secs(60);

/// A running `herald` process, killed when dropped.
pub struct Server {
    process: Process,
    /// How it was started, to start it again the same way.
    launch: Launch,
    pub addr: SocketAddr,
    pub database_url: String,
    pub http: reqwest::Client,
}

impl Server {
    /// A server on a database of its own, cloned from the migrated template, with the
    /// default settings (and no send rate limit).
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// A server on a database of its own, cloned from the migrated template; `env`
    /// overrides settings.
    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::spawn(migrated_database().await, env).await
    }

    /// A server on an existing database, once it is ready.
    pub async fn spawn(database_url: String, env: Vec<(String, String)>) -> Server {
        Server::spawn_until(database_url, env, READY).await
    }

    /// A server on an existing database, as soon as it has logged `milestone` (`LISTENING`
    /// or `READY` of the launcher; both carry the address).
    pub async fn spawn_until(
        database_url: String,
        env: Vec<(String, String)>,
        milestone: &str,
    ) -> Server {
        let launch = Launch {
            bin: env!("CARGO_BIN_EXE_herald").into(),
            database_url: database_url.clone(),
            listen: "127.0.0.1:0".into(),
            env: [("HERALD_WORKERS", "2"), ("RUST_LOG", "info")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .chain(env)
                .collect(),
            log: Log::Kept,
        };
        let (process, addr) = Server::run(&launch, milestone).await;
        Server {
            process,
            launch,
            addr,
            database_url,
            http: reqwest::Client::new(),
        }
    }

    async fn run(launch: &Launch, milestone: &str) -> (Process, SocketAddr) {
        let mut process = launch.start().expect("start the herald binary");
        match process.wait_for(milestone, START_OR_STOP_WITHIN).await {
            Ok(addr) => (process, addr),
            Err(error) => panic!("{error:#}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.process
            .resources()
            .expect("the server process is running")
            .rss_bytes
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The JSON log events the server wrote with this message, oldest first.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == message)
            .collect()
    }

    /// The exit status, once the process has ended on its own.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        match self.process.terminate(START_OR_STOP_WITHIN).await {
            Ok(status) => status,
            Err(error) => panic!("{error:#}; logs:\n{}", self.logs()),
        }
    }

    /// A new process on the same database with the same settings, once it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        (self.process, self.addr) = Server::run(&self.launch, READY).await;
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

    /// Adds members (created as users first) to a group through the admin API.
    pub async fn add_members(&self, gid: u64, uids: &[u64]) {
        self.users(uids).await;
        let path = format!("/v1/admin/groups/{gid}/members");
        let (status, body) = self.admin_post(&path, json!({"uids": uids})).await;
        assert_eq!(status, 200, "{body}");
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

    /// An upgrade request for `uid`'s session, with a token of its own.
    pub async fn upgrade(&self, uid: u64) -> Upgrade {
        Upgrade::bearer(self.addr, &self.token(uid).await)
    }

    /// Opens a WebSocket session for `uid` and reads its hello.
    pub async fn connect(&self, uid: u64) -> Client {
        Client::open(self.upgrade(uid).await)
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
