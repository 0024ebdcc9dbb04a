//! The dashboard: server-rendered pages for administrators at `/`, reading what the API reads
//! (the same stores and views), with a little JavaScript (htmx, uPlot) for live updates and
//! charts. Logged in with an API token; every page is sent with a strict Content-Security-Policy.

mod assets;
mod config;
mod dead_letters;
mod deliveries;
mod event_catalogue;
mod events;
mod form;
mod i18n;
mod inbound;
mod login;
mod overview;
mod queue;
mod render;
mod rule_form;
mod rules;
mod service_form;
mod services;
mod session;
mod sources;
mod tokens;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};

use crate::state::AppState;

/// No inline script or style, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; \
                   form-action 'self'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/overview/live", get(overview::live))
        .route("/services", get(services::list))
        .route(
            "/services/new",
            get(service_form::new_form).post(service_form::create),
        )
        .route("/services/{name}", get(services::detail))
        .route(
            "/services/{name}/edit",
            get(service_form::edit_form).post(service_form::update),
        )
        .route("/services/{name}/enable", post(services::enable))
        .route("/services/{name}/disable", post(services::disable))
        .route("/services/{name}/reset", post(services::reset))
        .route("/services/{name}/test", post(services::test))
        .route("/rules", get(rules::list))
        .route(
            "/rules/new",
            get(rule_form::new_form).post(rule_form::create),
        )
        .route("/rules/preview", post(rule_form::preview))
        .route("/rules/{id}", get(rules::detail))
        .route(
            "/rules/{id}/edit",
            get(rule_form::edit_form).post(rule_form::update),
        )
        .route("/rules/{id}/enable", post(rules::enable))
        .route("/rules/{id}/disable", post(rules::disable))
        .route("/rules/{id}/backfill", post(rules::start_backfill))
        .route("/backfills/{id}/progress", get(rules::backfill_progress))
        .route("/backfills/{id}/cancel", post(rules::cancel_backfill))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{job_id}", get(deliveries::detail))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay-all", post(dead_letters::replay_all))
        .route(
            "/dead-letters/operations/{id}/progress",
            get(dead_letters::operation_progress),
        )
        .route(
            "/dead-letters/operations/{id}/cancel",
            post(dead_letters::cancel_operation),
        )
        .route("/dead-letters/{job_id}", get(dead_letters::detail))
        .route(
            "/dead-letters/{job_id}/replay",
            post(dead_letters::replay_one),
        )
        .route(
            "/dead-letters/{job_id}/delete",
            post(dead_letters::delete_one),
        )
        .route("/queue", get(queue::overview))
        .route("/queue/{service}", get(queue::service_jobs))
        .route(
            "/queue/{service}/jobs/{seq}/attempt-now",
            post(queue::attempt_now),
        )
        .route(
            "/queue/{service}/jobs/{seq}/dead-letter",
            post(queue::dead_letter),
        )
        .route("/events", get(events::list))
        .route("/inbound", get(inbound::list))
        .route("/sources", get(sources::list).post(sources::add))
        .route("/sources/{id}/rotate", post(sources::rotate))
        .route("/sources/{id}/enable", post(sources::enable))
        .route("/sources/{id}/disable", post(sources::disable))
        .route("/tokens", get(tokens::list).post(tokens::issue))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/lang", get(login::choose_language))
        .route("/assets/{*path}", get(assets::asset))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
