//! HTTP routes, grouped by area, and the extractors that authenticate callers.

mod admin;
mod conversations;
mod demo;
mod error_response;
mod friends;
mod groups;
mod me;
pub mod openapi;
mod ops;
mod publish;
mod user;
mod user_data;
mod ws;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use tracing::Instrument;

use crate::auth::{bearer, unauthorized, AdminKey, TokenIssuer, TokenVerifier};
use crate::budget::{RequestKind, UserBudgets};
use crate::error::{ApiError, ErrorCode};
use crate::model::effect::Effect;
use crate::model::refusal::Refusal;
use crate::registry::{Directory, Publish, Publisher};
use crate::session::SessionContext;
use crate::store::Store;

/// What every route can reach.
pub struct AppState {
    /// Whether storage is prepared (migrations applied); requests wait for it with 503.
    pub ready: Arc<AtomicBool>,
    pub store: Store,
    pub directory: Addr<Directory>,
    pub publisher: Addr<Publisher>,
    /// Verifies user tokens.
    pub tokens: TokenVerifier,
    /// Signs the tokens the gateway issues.
    pub issuer: TokenIssuer,
    pub admin_key: AdminKey,
    /// Origins browsers may open WebSockets from; empty allows any.
    pub allowed_origins: Vec<String>,
    pub sessions: Arc<SessionContext>,
    /// Each user's request budget over HTTP (the user API and WebSocket upgrades).
    pub budgets: UserBudgets,
    /// Groups one admin publish request may post into.
    pub publish_max_groups: usize,
}

/// Where clients open their WebSocket.
const WS_PATH: &str = "/v1/ws";

/// Runs each HTTP request in a span of its own; the user, once authenticated, is recorded in
/// it, so every log line of the request says whose it was. WebSocket upgrades go without:
/// a reconnect storm would hold one span per session at once, and the subscriber keeps the
/// memory of its busiest moment (~0.8 KiB a span); the session's own span carries its logs.
pub async fn in_request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.path() == WS_PATH {
        return next.call(req).await;
    }
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = req.path(),
        uid = tracing::field::Empty,
    );
    next.call(req).instrument(span).await
}

/// One route of the API: the method and path it answers, and its handler.
pub struct Endpoint {
    pub method: Method,
    pub path: String,
    route: actix_web::Route,
}

impl Endpoint {
    fn new<F, Args>(method: Method, path: impl Into<String>, handler: F) -> Self
    where
        F: actix_web::Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        Endpoint {
            route: web::method(method.clone()).to(handler),
            method,
            path: path.into(),
        }
    }
}

/// Every route of the API, the one list both `routes` mounts and the OpenAPI test compares
/// with the spec: a route cannot be served without the test seeing it. The demo's are not
/// here: they exist only with `HERALD_DEMO`, for development, and are not part of the API.
pub fn endpoints() -> Vec<Endpoint> {
    let mut endpoints = vec![
        Endpoint::new(Method::GET, "/healthz", ops::healthz_route),
        Endpoint::new(Method::GET, "/readyz", ops::readyz_route),
        Endpoint::new(Method::GET, "/metrics", ops::metrics_route),
        Endpoint::new(Method::GET, openapi::PATH, openapi::openapi_route),
        Endpoint::new(Method::GET, WS_PATH, ws::ws_route),
        Endpoint::new(Method::POST, "/v1/admin/tokens", admin::tokens_route),
        Endpoint::new(Method::POST, "/v1/admin/users", admin::users_route),
        Endpoint::new(
            Method::POST,
            "/v1/admin/users/{uid}/deactivate",
            admin::deactivate_route,
        ),
        Endpoint::new(
            Method::GET,
            "/v1/admin/users/{uid}/export",
            user_data::export_route,
        ),
        Endpoint::new(
            Method::POST,
            "/v1/admin/users/{uid}/erase",
            user_data::erase_route,
        ),
        Endpoint::new(Method::POST, "/v1/admin/groups", admin::create_group_route),
        Endpoint::new(
            Method::GET,
            "/v1/admin/groups/{gid}/retention",
            admin::retention_route,
        ),
        Endpoint::new(
            Method::PUT,
            "/v1/admin/groups/{gid}/retention",
            admin::set_retention_route,
        ),
        Endpoint::new(Method::POST, "/v1/admin/messages", publish::publish_route),
        Endpoint::new(
            Method::POST,
            "/v1/admin/friends",
            friends::admin_befriend_route,
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/admin/friends/{uid}/{friend}",
            friends::admin_unfriend_route,
        ),
        Endpoint::new(
            Method::GET,
            "/v1/groups/{gid}/messages",
            user::messages_route,
        ),
        Endpoint::new(Method::POST, "/v1/groups/{gid}/ack", user::ack_route),
        Endpoint::new(Method::GET, "/v1/groups/{gid}/online", user::online_route),
        Endpoint::new(Method::POST, "/v1/groups/{gid}/read", user::read_route),
        Endpoint::new(Method::GET, "/v1/groups/{gid}/reads", user::reads_route),
        Endpoint::new(Method::POST, "/v1/groups", groups::create_route),
        Endpoint::new(Method::POST, "/v1/groups/{gid}/leave", groups::leave_route),
        Endpoint::new(Method::GET, "/v1/me", me::profile_route),
        Endpoint::new(Method::PATCH, "/v1/me", me::edit_profile_route),
        Endpoint::new(Method::GET, "/v1/me/groups", user::my_groups_route),
        Endpoint::new(Method::POST, "/v1/sync", me::sync_route),
        Endpoint::new(Method::GET, "/v1/friends", friends::list_route),
        Endpoint::new(Method::POST, "/v1/friends", friends::request_route),
        Endpoint::new(Method::DELETE, "/v1/friends/{uid}", friends::unfriend_route),
        Endpoint::new(Method::GET, "/v1/conversations", conversations::list_route),
        Endpoint::new(Method::POST, "/v1/conversations", conversations::open_route),
    ];
    endpoints.extend(group_endpoints::<User>("/v1"));
    endpoints.extend(group_endpoints::<Admin>("/v1/admin"));
    endpoints
}

/// The group operations users and the admin API share, under `prefix`.
fn group_endpoints<C: Caller + 'static>(prefix: &str) -> [Endpoint; 6] {
    [
        Endpoint::new(
            Method::PATCH,
            format!("{prefix}/groups/{{gid}}"),
            groups::update_route::<C>,
        ),
        Endpoint::new(
            Method::DELETE,
            format!("{prefix}/groups/{{gid}}"),
            groups::disband_route::<C>,
        ),
        Endpoint::new(
            Method::POST,
            format!("{prefix}/groups/{{gid}}/members"),
            groups::add_members_route::<C>,
        ),
        Endpoint::new(
            Method::DELETE,
            format!("{prefix}/groups/{{gid}}/members/{{uid}}"),
            groups::remove_member_route::<C>,
        ),
        Endpoint::new(
            Method::PUT,
            format!("{prefix}/groups/{{gid}}/members/{{uid}}/role"),
            groups::set_role_route::<C>,
        ),
        Endpoint::new(
            Method::POST,
            format!("{prefix}/groups/{{gid}}/messages/{{msgid}}/recall"),
            groups::recall_route::<C>,
        ),
    ]
}

/// Mounts every route; the demo's (`/demo/`, development only) when `demo` is on.
pub fn routes(max_http_body: usize, demo: bool) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(max_http_body)
                .error_handler(|err, _| {
                    let error = match &err {
                        actix_web::error::JsonPayloadError::Overflow { .. }
                        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                            ApiError::new(ErrorCode::TooLarge, err.to_string())
                        }
                        _ => ApiError::bad_request(format!("invalid JSON body: {err}")),
                    };
                    error.into()
                }),
        )
        .app_data(
            web::PathConfig::default().error_handler(|err, _| {
                ApiError::bad_request(format!("invalid path: {err}")).into()
            }),
        )
        .app_data(
            web::QueryConfig::default().error_handler(|err, _| {
                ApiError::bad_request(format!("invalid query: {err}")).into()
            }),
        )
        .configure(|cfg| {
            for endpoint in endpoints() {
                cfg.route(&endpoint.path, endpoint.route);
            }
            if demo {
                demo::routes(cfg);
            }
        })
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::not_found("no such endpoint"))
        }));
    }
}

impl AppState {
    /// Refuses requests (503) while storage is being prepared at start.
    pub fn require_ready(&self) -> Result<(), ApiError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "starting: storage is not ready yet, retry later",
            ))
        }
    }

    /// Charges a request to the user's budget; past it, 429 `rate_limited`.
    pub fn charge(&self, uid: u64, kind: RequestKind) -> Result<(), ApiError> {
        self.budgets
            .charge(uid, kind)
            .map_err(|limit| ApiError::new(ErrorCode::RateLimited, limit.explain()))
    }
}

fn state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .expect("AppState is registered with the App")
}

/// An authenticated, active user (HS256 bearer token), charged for the request: a read
/// (GET) or a change (any other method). Routes that read much charge the rest themselves.
pub struct User {
    pub uid: u64,
}

impl FromRequest for User {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = state(req);
        let token = bearer(
            req.headers()
                .get("authorization")
                .and_then(|h| h.to_str().ok()),
        )
        .map(str::to_owned);
        let kind = if req.method() == Method::GET {
            RequestKind::Read
        } else {
            RequestKind::Change
        };
        Box::pin(async move {
            state.require_ready()?;
            let token = token.ok_or_else(|| unauthorized("missing bearer token"))?;
            let identity = state.tokens.verify(&token).await?;
            tracing::Span::current().record("uid", identity.uid);
            state.charge(identity.uid, kind)?;
            require_active(&state.store, identity.uid).await?;
            Ok(User { uid: identity.uid })
        })
    }
}

/// Refuses users never created or deactivated (403).
pub async fn require_active(store: &Store, uid: u64) -> Result<(), ApiError> {
    match store.user_active(uid).await? {
        Some(true) => Ok(()),
        Some(false) => Err(Refusal::UserDeactivated { uid }.into()),
        None => Err(ApiError::forbidden(format!("user {uid} does not exist"))),
    }
}

/// Who asks for a change: a user acting in their own name, or the app's backend.
pub trait Caller: FromRequest<Error = ApiError> {
    /// The user acting, `None` for the admin API (which may do anything).
    fn acting_uid(&self) -> Option<u64>;
}

impl Caller for User {
    fn acting_uid(&self) -> Option<u64> {
        Some(self.uid)
    }
}

impl Caller for Admin {
    fn acting_uid(&self) -> Option<u64> {
        None
    }
}

/// Carries a committed change's effects to the live gateway: events and notices to the
/// sessions concerned, members joining and leaving live groups.
pub async fn publish(state: &AppState, effects: Vec<Effect>) -> Result<(), ApiError> {
    if !effects.is_empty() {
        state.publisher.send(Publish(effects)).await?;
    }
    Ok(())
}

/// The app's backend, holding the admin key.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = state(req);
        let presented = bearer(
            req.headers()
                .get("authorization")
                .and_then(|h| h.to_str().ok()),
        );
        std::future::ready(state.require_ready().and_then(|()| match presented {
            Some(key) => state.admin_key.check(key).map(|()| Admin),
            None => Err(unauthorized("missing admin bearer key")),
        }))
    }
}
