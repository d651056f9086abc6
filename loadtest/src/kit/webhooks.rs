//! A webhook receiver on 127.0.0.1: what the app's backend does with Herald's webhooks, as a
//! real HTTP server. It checks every request's `Herald-Signature` with the shared secret
//! (answering 401 to a bad one, as a backend must), keeps what it accepted, and answers as
//! told: at once, after a delay, with an error, or never.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;

/// How far a request's signed time may be from the receiver's clock.
const SIGNATURE_TOLERANCE_S: u64 = 300;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 after the delay.
    Accept(Duration),
    /// This status, at once.
    Fail(u16),
    /// No answer at all: the request hangs until the sender gives up.
    Hang,
}

/// What came in.
#[derive(Debug, Default)]
pub struct Received {
    /// Every event of every accepted request, in arrival order (duplicates included).
    pub accepted: Vec<Value>,
    /// Every request whose signature checked, answered or not.
    pub requests: usize,
    /// Every event of every request, answered or not.
    pub seen: Vec<Value>,
    /// The body of every request, byte for byte, answered or not.
    pub bodies: Vec<String>,
    /// Requests refused for a missing, wrong or stale signature.
    pub forged: usize,
    /// Bytes of every request whose signature checked.
    pub bytes: usize,
}

struct Shared {
    secret: Vec<u8>,
    /// Whether events and bodies are kept (tests), or only counted (load tests, where the
    /// receiver shares the harness's cores).
    keeps: bool,
    answer: Mutex<Answer>,
    received: Mutex<Received>,
}

/// The receiver; it stops when dropped.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    serving: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listens on a free loopback port, accepting everything at once, and keeps what came.
    pub async fn start(secret: &str) -> anyhow::Result<WebhookReceiver> {
        WebhookReceiver::listen(secret, true).await
    }

    /// As `start`, but only counts requests and bytes: what a load test can afford.
    pub async fn counting(secret: &str) -> anyhow::Result<WebhookReceiver> {
        WebhookReceiver::listen(secret, false).await
    }

    async fn listen(secret: &str, keeps: bool) -> anyhow::Result<WebhookReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the webhook receiver")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            keeps,
            answer: Mutex::new(Answer::Accept(Duration::ZERO)),
            received: Mutex::new(Received::default()),
        });
        let serving = tokio::spawn(serve(listener, shared.clone()));
        Ok(WebhookReceiver {
            addr,
            shared,
            serving,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    /// Reads what came in so far.
    pub fn received<T>(&self, read: impl FnOnce(&Received) -> T) -> T {
        read(&self.shared.received.lock().unwrap())
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, hyper::Error>(shared.handle(request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // A connection the sender drops (its timeout, a kill) ends here; nothing to do.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

impl Shared {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let signature = request
            .headers()
            .get("herald-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
            return respond(StatusCode::BAD_REQUEST);
        };
        if !signature.is_some_and(|s| self.signed(&s, &body)) {
            self.received.lock().unwrap().forged += 1;
            return respond(StatusCode::UNAUTHORIZED);
        }
        let events: Vec<Value> = match self.keeps {
            true => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|batch| batch["events"].as_array().cloned())
                .unwrap_or_default(),
            false => Vec::new(),
        };
        {
            let mut received = self.received.lock().unwrap();
            received.requests += 1;
            received.bytes += body.len();
            if self.keeps {
                received.seen.extend(events.iter().cloned());
                let text = String::from_utf8_lossy(&body).into_owned();
                received.bodies.push(text);
            }
        }
        let answer = *self.answer.lock().unwrap();
        match answer {
            Answer::Accept(delay) => {
                tokio::time::sleep(delay).await;
                self.received.lock().unwrap().accepted.extend(events);
                respond(StatusCode::OK)
            }
            Answer::Fail(status) => {
                respond(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
            }
            Answer::Hang => std::future::pending().await,
        }
    }

    /// Checks `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, and that t is recent.
    fn signed(&self, header: &str, body: &[u8]) -> bool {
        let field = |name: &str| {
            header
                .split(',')
                .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        };
        let (Some(t), Some(v1)) = (field("t"), field("v1")) else {
            return false;
        };
        let Ok(at) = t.parse::<u64>() else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let Ok(claimed) = hex::decode(v1) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key size");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        now.abs_diff(at) <= SIGNATURE_TOLERANCE_S && mac.verify_slice(&claimed).is_ok()
    }
}

fn respond(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
