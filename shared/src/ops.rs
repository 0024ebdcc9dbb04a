//! Operational endpoints every service serves: `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::readiness::Readiness;
use crate::shutdown::Shutdown;

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// The operational routes; merge them into a service's own router.
pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { readiness, metrics })
}

/// Alive: the process answers. Deliberately checks nothing else, so a dependency outage makes
/// pods unready rather than restarting them.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let report = state.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

async fn render_metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Serves a service's router with the `[http]` limits; see [`crate::server`].
pub use crate::server::serve;

/// The whole life of a service whose work is still to come: provision what it uses, report
/// ready, serve the operational routes until shutdown.
pub async fn run_provision_only(
    ctx: crate::ServiceContext,
    shutdown: Shutdown,
) -> Result<(), crate::RunError> {
    ctx.ensure_topology().await?;
    let app = router(ctx.readiness.clone(), ctx.metrics.clone());
    ctx.readiness.mark_started();
    tracing::info!("provisioned; serving operational endpoints only");
    serve(ctx.listener, app, ctx.service, ctx.config.http, shutdown).await?;
    Ok(())
}
