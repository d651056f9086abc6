//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' own
//! `#[utoipa::path]` attributes and types, served at `GET /openapi.json` and committed as
//! `docs/openapi.json`.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Spec, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error_response::HttpErrorBody;
use super::{admin, conversations, friends, groups, me, ops, publish, user, user_data, ws};
use crate::model::MAX_ID;

/// Where the spec is served.
pub const PATH: &str = "/openapi.json";

/// The security scheme of user routes: an HS256 JWT from `POST /v1/admin/tokens`.
pub const USER_TOKEN: &str = "user_token";
/// The security scheme of the admin API: the key of `HERALD_ADMIN_KEY`.
pub const ADMIN_KEY: &str = "admin_key";

/// The group routes the admin API serves too, under `/v1/admin`, with the same handlers.
const SHARED_WITH_ADMIN: [&str; 5] = [
    "/v1/groups/{gid}",
    "/v1/groups/{gid}/members",
    "/v1/groups/{gid}/members/{uid}",
    "/v1/groups/{gid}/members/{uid}/role",
    "/v1/groups/{gid}/messages/{msgid}/recall",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "The HTTP API of Herald, a realtime push gateway. Errors are \
            `{\"error\":{\"code\",\"message\"}}`; the WebSocket protocol behind `GET /v1/ws` is \
            described in docs/protocol.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        ops::healthz_route,
        ops::readyz_route,
        ops::metrics_route,
        openapi_route,
        ws::ws_route,
        admin::tokens_route,
        admin::users_route,
        admin::deactivate_route,
        user_data::export_route,
        user_data::erase_route,
        admin::create_group_route,
        admin::retention_route,
        admin::set_retention_route,
        publish::publish_route,
        friends::admin_befriend_route,
        friends::admin_unfriend_route,
        user::messages_route,
        user::ack_route,
        user::online_route,
        user::read_route,
        user::reads_route,
        user::my_groups_route,
        groups::create_route,
        groups::update_route,
        groups::disband_route,
        groups::add_members_route,
        groups::remove_member_route,
        groups::set_role_route,
        groups::recall_route,
        groups::leave_route,
        me::profile_route,
        me::edit_profile_route,
        me::sync_route,
        friends::list_route,
        friends::request_route,
        friends::unfriend_route,
        conversations::list_route,
        conversations::open_route,
    ),
    components(schemas(HttpErrorBody)),
    modifiers(&SecuritySchemes, &AdminGroupRoutes, &CommonErrors, &IdParameters, &FlattenedOpen),
)]
struct ApiDoc;

/// The spec, built once.
static SPEC: LazyLock<Spec> = LazyLock::new(ApiDoc::openapi);

/// The spec as `docs/openapi.json` holds it.
pub fn spec_json() -> String {
    SPEC.to_pretty_json().expect("the spec serialises") + "\n"
}

/// `GET /openapi.json`: this description of the HTTP API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)),
)]
pub async fn openapi_route() -> HttpResponse {
    HttpResponse::Ok().json(&*SPEC)
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, spec: &mut Spec) {
        let components = spec.components.get_or_insert_with(Default::default);
        let mut user = Http::new(HttpAuthScheme::Bearer);
        user.bearer_format = Some("JWT".into());
        user.description = Some("A user token (HS256 JWT) issued by POST /v1/admin/tokens".into());
        components.add_security_scheme(USER_TOKEN, SecurityScheme::Http(user));
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description = Some("The admin key (HERALD_ADMIN_KEY)".into());
        components.add_security_scheme(ADMIN_KEY, SecurityScheme::Http(admin));
    }
}

/// Copies the group routes users and the admin API share to `/v1/admin`, with the admin key.
struct AdminGroupRoutes;

impl Modify for AdminGroupRoutes {
    fn modify(&self, spec: &mut Spec) {
        for path in SHARED_WITH_ADMIN {
            let mut item = spec.paths.paths[path].clone();
            for operation in operations(&mut item) {
                operation.operation_id = operation
                    .operation_id
                    .take()
                    .map(|id| format!("admin_{id}"));
                operation.summary = operation
                    .summary
                    .take()
                    .map(|summary| summary.replacen("/v1/", "/v1/admin/", 1));
                operation.tags = Some(vec!["admin".into()]);
                operation.security =
                    Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        ADMIN_KEY,
                        Vec::<String>::new(),
                    )]);
            }
            spec.paths
                .paths
                .insert(path.replacen("/v1", "/v1/admin", 1), item);
        }
    }
}

/// The errors every route of a kind can answer, so each route lists only its own: the
/// extractors' (authentication, budget, readiness, bad path or body) and storage's.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, spec: &mut Spec) {
        for item in spec.paths.paths.values_mut() {
            let path_params = item.parameters.is_some();
            for operation in operations(item) {
                let schemes: Vec<String> = operation
                    .security
                    .iter()
                    .flatten()
                    .flat_map(|s| {
                        serde_json::to_value(s)
                            .ok()
                            .and_then(|v| {
                                v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
                            })
                            .unwrap_or_default()
                    })
                    .collect();
                let mut errors = Vec::new();
                let with_params =
                    path_params || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                if with_params || operation.request_body.is_some() {
                    errors.push(("400", "bad_request: an invalid path, query or body"));
                }
                if operation.request_body.is_some() {
                    errors.push((
                        "413",
                        "too_large: the body is over HERALD_MAX_HTTP_BODY_BYTES",
                    ));
                }
                if schemes.iter().any(|s| s == USER_TOKEN) {
                    errors.extend([
                        (
                            "401",
                            "unauthorized: no token, or an invalid or expired one",
                        ),
                        (
                            "403",
                            "forbidden: the user is deactivated, or refused the change",
                        ),
                        ("429", "rate_limited: the user's request budget is spent"),
                        (
                            "503",
                            "unavailable: starting, or storage unavailable; retry",
                        ),
                    ]);
                }
                if schemes.iter().any(|s| s == ADMIN_KEY) {
                    errors.extend([
                        ("401", "unauthorized: no admin key, or a wrong one"),
                        (
                            "503",
                            "unavailable: starting, or storage unavailable; retry",
                        ),
                    ]);
                }
                for (status, description) in errors {
                    operation
                        .responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

/// An error answer: `{"error":{"code","message"}}`.
pub fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Every path parameter is a uid or a gid: 1..=2^53−1 (`model::valid_id`).
struct IdParameters;

impl Modify for IdParameters {
    fn modify(&self, spec: &mut Spec) {
        for item in spec.paths.paths.values_mut() {
            for operation in operations(item) {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.parameter_in == ParameterIn::Path {
                        parameter.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                                .minimum(Some(1))
                                .maximum(Some(MAX_ID as f64))
                                .into(),
                        );
                    }
                }
            }
        }
    }
}

/// Structs that refuse unknown fields in requests (`deny_unknown_fields`, so
/// `additionalProperties: false`) are also flattened into replies, which utoipa writes as
/// `allOf` with the rest: there the other parts' fields are not unknown, so those schemas stay
/// open. Requests carrying unknown fields are still refused with 400.
struct FlattenedOpen;

impl Modify for FlattenedOpen {
    fn modify(&self, spec: &mut Spec) {
        let Some(components) = spec.components.as_mut() else {
            return;
        };
        let flattened: Vec<String> = components
            .schemas
            .values()
            .filter_map(|schema| match schema {
                RefOr::T(Schema::AllOf(all_of)) => Some(&all_of.items),
                _ => None,
            })
            .flatten()
            .filter_map(|part| match part {
                RefOr::Ref(r) => r.ref_location.strip_prefix("#/components/schemas/"),
                RefOr::T(_) => None,
            })
            .map(str::to_owned)
            .collect();
        for name in flattened {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
                object.additional_properties = None;
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The committed copy is what the code generates: clients and reviewers read that file.
    #[test]
    fn docs_openapi_json_is_the_generated_spec() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let generated = spec_json();
        if std::env::var_os("HERALD_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("docs/openapi.json is writable");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not the spec the code generates; regenerate it with \
             `HERALD_WRITE_OPENAPI=1 cargo test --lib docs_openapi_json_is_the_generated_spec`"
        );
    }

    /// Every mounted route is in the spec and every operation of the spec is mounted. Routes
    /// are mounted only from `endpoints()`, so this compares what the server serves.
    #[test]
    fn the_spec_describes_exactly_the_mounted_routes() {
        let mounted: BTreeSet<(String, String)> = super::super::endpoints()
            .into_iter()
            .map(|e| (e.method.as_str().to_lowercase(), e.path))
            .collect();
        let value = serde_json::to_value(&*SPEC).expect("the spec serialises");
        let described: BTreeSet<(String, String)> = value["paths"]
            .as_object()
            .expect("the spec has paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("a path item is an object")
                    .keys()
                    .filter(|key| key.as_str() != "parameters")
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let unlisted: Vec<_> = mounted.difference(&described).collect();
        let unmounted: Vec<_> = described.difference(&mounted).collect();
        assert!(
            unlisted.is_empty() && unmounted.is_empty(),
            "mounted but not in the spec: {unlisted:?}; in the spec but not mounted: {unmounted:?}"
        );
    }
}
