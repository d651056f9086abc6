//! The browser chat demo (`HERALD_DEMO`, development only): the page and the client library
//! embedded from `clients/demo/`, and a token route that hands anyone a token for one of the
//! demo users, who are created on first use together with the group they share.
//! Mounted only when the demo is on; otherwise `/demo/*` is 404 like any unknown path.

use actix_web::{http::header, web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{publish, AppState};
use crate::error::ApiError;
use crate::model::refusal::Refusal;
use crate::store::{NewGroup, StoreError, UserUpsert};

/// The demo users, by uid from 1.
const NICKNAMES: [&str; 4] = ["ann", "bob", "cleo", "dan"];
/// The group they share: a gid of its own, apart from the groups one makes by hand.
const DEMO_GID: u64 = 1_000_000;
/// Tokens last a day; the page asks again when one expires.
const TOKEN_TTL_S: u64 = 24 * 3600;

/// The files of `/demo/`, by name: `clients/demo/`, the client library built into one file.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../clients/demo/index.html"),
    ),
    (
        "demo.css",
        "text/css; charset=utf-8",
        include_str!("../../clients/demo/demo.css"),
    ),
    (
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/demo/demo.js"),
    ),
    (
        "herald-client.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/demo/herald-client.js"),
    ),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/demo",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/demo/"))
                .finish()
        }),
    )
    .route("/demo/", web::get().to(|| file("index.html")))
    .route("/demo/token", web::post().to(token_route))
    .route(
        "/demo/{file}",
        web::get().to(|name: web::Path<String>| file(name.into_inner())),
    );
}

async fn file(name: impl AsRef<str>) -> Result<HttpResponse, ApiError> {
    let (_, content_type, text) = FILES
        .iter()
        .find(|(file, _, _)| *file == name.as_ref())
        .ok_or_else(|| ApiError::not_found("no such file in the demo"))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, *content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(*text))
}

#[derive(Deserialize)]
pub struct TokenRequest {
    uid: u64,
}

/// `POST /demo/token {"uid":1}`: a token for demo user 1–4, and the demo group's gid.
async fn token_route(
    body: web::Json<TokenRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.require_ready()?;
    let uid = body.uid;
    if !(1..=NICKNAMES.len() as u64).contains(&uid) {
        return Err(ApiError::bad_request(format!(
            "the demo users are 1..={}",
            NICKNAMES.len()
        )));
    }
    prepare(&state).await?;
    Ok(HttpResponse::Ok().json(json!({
        "token": state.issuer.issue(uid, TOKEN_TTL_S, None)?,
        "uid": uid,
        "gid": DEMO_GID,
    })))
}

/// Creates the demo users and their group, unless they exist (also when asked concurrently).
async fn prepare(state: &AppState) -> Result<(), ApiError> {
    let uids: Vec<u64> = (1..=NICKNAMES.len() as u64).collect();
    if state.store.user_active(uids[uids.len() - 1]).await? != Some(true) {
        let users: Vec<UserUpsert> = uids
            .iter()
            .zip(NICKNAMES)
            .map(|(&uid, nickname)| UserUpsert {
                uid,
                nickname: Some(nickname.to_owned()),
                avatar: None,
                signature: None,
            })
            .collect();
        let effects = state.store.upsert_users(&users).await?;
        publish(state, effects).await?;
    }
    let group = NewGroup {
        gid: Some(DEMO_GID),
        name: "demo",
        description: "Everyone of the demo",
        owner: uids[0],
        members: &uids,
    };
    match state.store.create_group(&group, None).await {
        Ok((_, effects)) => publish(state, effects).await,
        Err(StoreError::Refused(Refusal::GroupExists { .. })) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
