//! The API router and its OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use mih_shared::error::{ApiError, ErrorKind};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mih admin API",
        description = "Configure mih: the Moodle sites that send events (sources), the external \
                       systems events go to (services), the rules between them, and admin tokens. \
                       Authenticate with `Authorization: Bearer <admin token>`. Errors are \
                       `{\"error\", \"message\", \"errors\": [{\"field\", \"message\"}]}`; updates \
                       take `If-Match: \"<version>\"` (412 when stale) or a `version` field (409)."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, FieldErrorBody)),
    security(("bearer" = [])),
    tags(
        (name = "sources", description = "Moodle sites allowed to send events"),
        (name = "services", description = "External systems mih delivers to"),
        (name = "rules", description = "Which events go where, and how the request is built"),
        (name = "tokens", description = "Admin API tokens (admin role)"),
        (name = "audit", description = "Who changed what, when"),
        (name = "backfills", description = "Stored events replayed through a rule"),
        (name = "circuits", description = "Each service's circuit breaker, shared by every dispatcher"),
        (name = "dead-letters", description = "Jobs given up on: review, replay, delete"),
        (name = "deliveries", description = "The delivery log: every attempt"),
        (name = "stats", description = "Success rates, latencies, throughput over time"),
        (name = "queue", description = "Jobs still in JOBS per service: pending, waiting for a retry; attempt now or move to dead letters"),
        (name = "parked", description = "Messages the projections set aside because the database refused them"),
        (name = "inbound", description = "Messages services sent back towards a Moodle site, pulled and acknowledged by its plugin")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The body of every error answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    /// invalid_input, unprocessable, unauthorized, forbidden, not_found, conflict,
    /// precondition_failed, unsupported_media_type, internal, …
    error: String,
    message: String,
    /// One entry per problem, naming the field.
    errors: Option<Vec<FieldErrorBody>>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct FieldErrorBody {
    field: Option<String>,
    message: String,
}

/// Errors every operation can answer, declared once: 400 (malformed request), 401, 403,
/// 422 (invalid query or body), 415 where a body is taken; every 4xx carries [`ErrorBody`].
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build()
        };
        let describe = |code: &str| match code {
            "400" => "The request is malformed (not JSON, a NUL character in the URL)",
            "401" => "No valid admin token",
            "403" => "The token's role does not allow this",
            "404" => "No such resource",
            "409" => "Conflicts with the current state",
            "412" => "If-Match names a version that is no longer current",
            "415" => "The body is not JSON",
            "422" => "The input is invalid; `errors` names each field",
            _ => "Error",
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let mut codes = vec!["400", "401", "403", "422"];
                if operation.request_body.is_some() {
                    codes.push("415");
                }
                for code in codes {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new().description(describe(code)).into()
                        });
                }
                for (code, response) in operation.responses.responses.iter_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response
                        && code.starts_with('4')
                    {
                        response.description = describe(code).to_owned();
                        response.content.insert(
                            "application/json".to_owned(),
                            utoipa::openapi::RefOr::T(error()),
                        );
                    }
                }
            }
        }
    }
}

/// The whole HTTP surface, one path a line.
#[rustfmt::skip] // a table: one line each, however long
fn api() -> OpenApiRouter<AppState> {
    use crate::resources::rules::handlers as rules;
    use crate::resources::services::handlers as services;
    use crate::resources::sources::handlers as sources;
    use crate::resources::tokens::handlers as tokens;
    use crate::resources::{audit, backfills, circuits, dead_letters, deliveries, facade, inbound, parked, preview, queue, stats};

    Table::new(ApiDoc::openapi())
        .at("/api/v1/sources",                             routes!(sources::list, sources::create))
        .at("/api/v1/sources/{id}",                        routes!(sources::get_one, sources::update, sources::delete))
        .at("/api/v1/sources/{id}/enable",                 routes!(sources::enable))
        .at("/api/v1/sources/{id}/disable",                routes!(sources::disable))
        .at("/api/v1/services",                            routes!(services::list, services::create))
        .at("/api/v1/services/{name}",                     routes!(services::get_one, services::update, services::delete))
        .at("/api/v1/services/{name}/enable",              routes!(services::enable))
        .at("/api/v1/services/{name}/disable",             routes!(services::disable))
        .at("/api/v1/services/{name}/request",             routes!(facade::call))
        .at("/api/v1/rules",                               routes!(rules::list, rules::create))
        .at("/api/v1/rules/preview",                       routes!(preview::preview))
        .at("/api/v1/rules/{id}",                          routes!(rules::get_one, rules::update, rules::delete))
        .at("/api/v1/rules/{id}/enable",                   routes!(rules::enable))
        .at("/api/v1/rules/{id}/disable",                  routes!(rules::disable))
        .at("/api/v1/rules/{id}/backfill",                 routes!(backfills::start))
        .at("/api/v1/tokens",                              routes!(tokens::list, tokens::create))
        .at("/api/v1/tokens/{id}",                         routes!(tokens::get_one, tokens::update, tokens::revoke))
        .at("/api/v1/audit",                               routes!(audit::list))
        .at("/api/v1/backfills",                           routes!(backfills::list))
        .at("/api/v1/backfills/{id}",                      routes!(backfills::get_one))
        .at("/api/v1/backfills/{id}/cancel",               routes!(backfills::cancel))
        .at("/api/v1/circuits",                            routes!(circuits::list))
        .at("/api/v1/circuits/{service}",                  routes!(circuits::get_one))
        .at("/api/v1/circuits/{service}/reset",            routes!(circuits::reset))
        .at("/api/v1/circuits/{service}/history",          routes!(circuits::history))
        .at("/api/v1/parked",                              routes!(parked::list))
        .at("/api/v1/parked/{id}",                         routes!(parked::get_one, parked::delete_one))
        .at("/api/v1/parked/{id}/retry",                   routes!(parked::retry))
        .at("/api/v1/dead-letters",                        routes!(dead_letters::list))
        .at("/api/v1/dead-letters/replay",                 routes!(dead_letters::replay_matching))
        .at("/api/v1/dead-letters/delete",                 routes!(dead_letters::delete_matching))
        .at("/api/v1/dead-letters/operations/{id}",        routes!(dead_letters::get_operation))
        .at("/api/v1/dead-letters/operations/{id}/cancel", routes!(dead_letters::cancel_operation))
        .at("/api/v1/dead-letters/{job_id}",               routes!(dead_letters::get_one, dead_letters::delete_one))
        .at("/api/v1/dead-letters/{job_id}/replay",        routes!(dead_letters::replay_one))
        .at("/api/v1/deliveries",                          routes!(deliveries::list))
        .at("/api/v1/deliveries/{job_id}",                 routes!(deliveries::get_one))
        .at("/api/v1/queue",                               routes!(queue::list))
        .at("/api/v1/queue/{service}/jobs",                routes!(queue::jobs))
        .at("/api/v1/queue/{service}/jobs/{seq}/attempt-now", routes!(queue::attempt_now))
        .at("/api/v1/queue/{service}/jobs/{seq}/dead-letter", routes!(queue::dead_letter))
        .at("/api/v1/stats",                               routes!(stats::get_stats))
        .at("/api/v1/inbound",                             routes!(inbound::pull))
        .at("/api/v1/inbound/ack",                         routes!(inbound::acknowledge))
        .at("/api/v1/inbound/log",                         routes!(inbound::log::list))
        .into_router()
}

/// Builds the route table. Each [`Table::at`] mounts the handlers of one path and checks that
/// it is the path their `#[utoipa::path]` documents, so the table and the OpenAPI document
/// cannot drift apart.
struct Table(OpenApiRouter<AppState>);

impl Table {
    fn new(document: utoipa::openapi::OpenApi) -> Self {
        Table(OpenApiRouter::with_openapi(document))
    }

    fn at(self, path: &str, handlers: UtoipaMethodRouter<AppState>) -> Self {
        let documented: Vec<&String> = handlers.1.paths.keys().collect();
        debug_assert!(
            documented.iter().all(|documented| *documented == path),
            "the route table mounts {path} where the handlers document {documented:?}"
        );
        Table(self.0.routes(handlers))
    }

    fn into_router(self) -> OpenApiRouter<AppState> {
        self.0
    }
}

/// The OpenAPI document, pretty-printed (served, committed as `services/api/openapi.json`).
pub fn openapi_json() -> String {
    let (_, mut document) = api().split_for_parts();
    // Runs on the merged document: modifiers given to `#[openapi]` run before routes are added.
    CommonResponses.modify(&mut document);
    let mut text = document
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// Every API route, with `/api/v1/openapi.json` and a JSON 404 for unknown API paths.
pub fn router(state: AppState) -> Router {
    let (router, _) = api().split_for_parts();
    let document = openapi_json();
    router
        .merge(crate::dashboard::router())
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        // Every route's requests get a server span named after the route (the caller's trace
        // continues through a facade call or a replay).
        .route_layer(axum::middleware::from_fn(
            mih_shared::telemetry::http_server_middleware,
        ))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                ApiError::new(
                    ErrorKind::NotFound,
                    "no such endpoint; see /api/v1/openapi.json",
                ),
            )
                .into_response()
        })
        .layer(axum::middleware::from_fn(refuse_nul))
        .with_state(state)
}

/// PostgreSQL cannot store NUL; a `%00` in a path or query is refused before it gets there.
async fn refuse_nul(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let uri = request.uri().to_string().to_ascii_lowercase();
    if uri.contains("%00") {
        return ApiError::new(
            ErrorKind::InvalidInput,
            "the URL must not contain NUL characters (%00)",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_route_table_mounts_each_handler_at_its_documented_path() {
        // `Table::at` asserts it; building the table is the test.
        let (_, document) = super::api().split_for_parts();
        assert!(
            document
                .paths
                .paths
                .contains_key("/api/v1/rules/{id}/backfill")
        );
    }

    #[test]
    fn the_committed_openapi_document_is_current() {
        let committed = include_str!("../openapi.json");
        assert!(
            committed == super::openapi_json(),
            "services/api/openapi.json is out of date: run `cargo run -q -- openapi > services/api/openapi.json`"
        );
    }
}
