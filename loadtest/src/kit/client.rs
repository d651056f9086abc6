//! Opening a WebSocket session on Herald and reading it: the upgrade (a bearer token, or
//! whatever else a test puts in it), the `hello`, text frames, and how a connection ended.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{anyhow, Context};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::frames::{Frame, Hello};

pub type Socket = WebSocketStream<TcpStream>;

/// Loopback source addresses connections are spread over, so 20,000+ sessions do not run
/// out of ephemeral ports on one (source, destination) pair.
const SOURCE_ADDRESSES: usize = 8;

/// Client buffers sized on purpose: small frames, many sessions.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// A WebSocket upgrade request to Herald's `/v1/ws`, and where it is sent from.
pub struct Upgrade {
    addr: SocketAddr,
    request: Request,
    /// The loopback address to connect from; the kernel's choice when None.
    source: Option<IpAddr>,
}

/// Why a session did not open.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the upgrade with this HTTP status.
    Refused(u16),
    /// The server closed the session before its hello, with this close code if any.
    Closed(Option<u16>),
    /// The connection, the handshake or the hello failed otherwise.
    Failed(anyhow::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(status) => write!(f, "upgrade refused with HTTP {status}"),
            ConnectError::Closed(code) => write!(f, "closed before the hello (code {code:?})"),
            ConnectError::Failed(error) => write!(f, "{error:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl Upgrade {
    /// To `/v1/ws{query}` at `addr`, with no header of its own.
    pub fn to(addr: SocketAddr, query: &str) -> Upgrade {
        let request = format!("ws://{addr}/v1/ws{query}")
            .into_client_request()
            // A socket address and a query of URL characters make a valid URL.
            .expect("a WebSocket URL");
        Upgrade {
            addr,
            request,
            source: None,
        }
    }

    /// To `/v1/ws` at `addr`, carrying `token` as a bearer header.
    pub fn bearer(addr: SocketAddr, token: &str) -> Upgrade {
        Upgrade::to(addr, "").header("authorization", &format!("Bearer {token}"))
    }

    /// With one more header, as `origin` or a raw `authorization`.
    pub fn header(mut self, name: &'static str, value: &str) -> Upgrade {
        // Callers pass header text of their own making: a bad one is a bug in the caller.
        let value = value.parse().expect("a valid header value");
        self.request.headers_mut().insert(name, value);
        self
    }

    /// Sent from the `n`-th of the loopback source addresses (127.0.0.1 to 127.0.0.8).
    pub fn spread(mut self, n: usize) -> Upgrade {
        let last = 1 + (n % SOURCE_ADDRESSES) as u8;
        self.source = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)));
        self
    }

    /// Opens the session and reads its hello, decoded as `H`.
    pub async fn open<H: DeserializeOwned>(self) -> Result<(Socket, H), ConnectError> {
        let stream = self.connect().await.map_err(ConnectError::Failed)?;
        let mut ws = match tokio_tungstenite::client_async_with_config(
            self.request,
            stream,
            Some(socket_config()),
        )
        .await
        {
            Ok((ws, _response)) => ws,
            Err(tungstenite::Error::Http(response)) => {
                return Err(ConnectError::Refused(response.status().as_u16()))
            }
            Err(error) => {
                return Err(ConnectError::Failed(
                    anyhow!(error).context("WebSocket handshake"),
                ))
            }
        };
        let text = loop {
            match next_text(&mut ws).await {
                Ok(Some(text)) => break text,
                Ok(None) => continue,
                Err(End::Closed(code)) => return Err(ConnectError::Closed(code)),
                Err(End::Broken) => {
                    return Err(ConnectError::Failed(anyhow!(
                        "the connection ended before the hello"
                    )))
                }
            }
        };
        if !serde_json::from_str::<Frame>(&text).is_ok_and(|frame| frame.kind == "hello") {
            return Err(ConnectError::Failed(anyhow!(
                "expected a hello, got {text}"
            )));
        }
        let hello = serde_json::from_str(&text)
            .with_context(|| format!("decoding the hello {text}"))
            .map_err(ConnectError::Failed)?;
        Ok((ws, hello))
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Opens a session for the `n`-th simulated client with `token`, and reads its hello.
pub async fn connect(
    addr: SocketAddr,
    n: usize,
    token: &str,
) -> Result<(Socket, Hello), ConnectError> {
    Upgrade::bearer(addr, token).spread(n).open().await
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed it, with this code if it gave one.
    Closed(Option<u16>),
    /// It broke without a close frame.
    Broken,
}

/// The next message: its text, None for a message that is not text (a ping…), or how the
/// connection ended.
pub async fn next_text(
    ws: &mut (impl Stream<Item = Result<Message, tungstenite::Error>> + Unpin),
) -> Result<Option<Utf8Bytes>, End> {
    match ws.next().await {
        Some(Ok(Message::Text(text))) => Ok(Some(text)),
        Some(Ok(Message::Close(close))) => Err(End::Closed(close.map(|c| u16::from(c.code)))),
        Some(Ok(_)) => Ok(None),
        Some(Err(_)) | None => Err(End::Broken),
    }
}
