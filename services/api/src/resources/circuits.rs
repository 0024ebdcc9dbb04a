//! The circuit breaker of each service, as the dispatchers share it in `<ns>_circuits`:
//! `GET /api/v1/circuits`, `GET /api/v1/circuits/{service}`, and an operator's
//! `POST /api/v1/circuits/{service}/reset`, which closes it (every dispatcher resumes at once),
//! and `GET /api/v1/circuits/{service}/history`: when it opened and closed, from the recorder's
//! `circuit_changes`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::Serialize;
use utoipa::IntoParams;
use utoipa::ToSchema;

use mih_shared::circuit::{Circuit, CircuitState};
use mih_shared::live::LiveService;
use mih_shared::names::ServiceSlug;

use super::{not_found, services};
use crate::audit;
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// One service's circuit.
#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitView {
    pub service: String,
    /// closed, open or half_open.
    pub state: String,
    pub consecutive_failures: u32,
    /// When it last opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// While open: when the first probe may go out.
    pub probe_at: Option<DateTime<Utc>>,
    pub changed_at: DateTime<Utc>,
    /// The failure that last counted.
    pub last_error: Option<String>,
    /// While the service asked for a pause (it answered 429): no attempt before then, on
    /// any replica. The circuit's state is not changed by a pause.
    pub paused_until: Option<DateTime<Utc>>,
    /// The service's breaker settings.
    pub failure_threshold: u32,
    pub cooldown_ms: u64,
    pub half_open_probes: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitList {
    pub items: Vec<CircuitView>,
}

fn view(service: &LiveService, circuit: &Circuit) -> CircuitView {
    let policy = service.breaker;
    let cooldown =
        chrono::Duration::milliseconds(i64::try_from(policy.cooldown_ms).unwrap_or(i64::MAX));
    CircuitView {
        service: service.name.to_string(),
        state: circuit.state.as_str().to_owned(),
        consecutive_failures: circuit.consecutive_failures,
        opened_at: circuit.opened_at,
        probe_at: (circuit.state == CircuitState::Open)
            .then(|| circuit.opened_at.map(|at| at + cooldown))
            .flatten(),
        changed_at: circuit.changed_at,
        last_error: circuit.last_error.clone(),
        paused_until: circuit.pause_at(Utc::now()),
        failure_threshold: policy.failure_threshold,
        cooldown_ms: policy.cooldown_ms,
        half_open_probes: policy.half_open_probes,
    }
}

fn store_failure(error: &mih_shared::circuit::CircuitError) -> ApiFailure {
    ApiFailure::Internal(format!("circuit state unavailable: {error}"))
}

async fn service(state: &AppState, name: &str) -> ApiResult<Arc<LiveService>> {
    let slug = ServiceSlug::parse(name).map_err(|_| not_found("service", name))?;
    services::load_live(&state.db)
        .await?
        .remove(&slug)
        .ok_or_else(|| not_found("service", name))
}

/// Every service's circuit (a service that never failed is closed).
#[utoipa::path(get, path = "/api/v1/circuits", tag = "circuits",
    responses((status = 200, body = CircuitList), (status = 401), (status = 403)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<CircuitList>> {
    caller.require(Role::Viewer)?;
    Ok(Json(CircuitList {
        items: all(&state).await?,
    }))
}

/// Every service's circuit, for the API and the dashboard.
pub(crate) async fn all(state: &AppState) -> ApiResult<Vec<CircuitView>> {
    let services = services::load_live(&state.db).await?;
    let stored: std::collections::HashMap<String, Circuit> = state
        .circuits
        .all()
        .await
        .map_err(|e| store_failure(&e))?
        .into_iter()
        .collect();
    let items = services
        .values()
        .map(|service| {
            let circuit = stored
                .get(service.name.as_str())
                .cloned()
                .unwrap_or_else(|| Circuit::closed(Utc::now()));
            view(service, &circuit)
        })
        .collect();
    Ok(items)
}

/// One service's circuit.
#[utoipa::path(get, path = "/api/v1/circuits/{service}", tag = "circuits", params(("service" = String, Path)),
    responses((status = 200, body = CircuitView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<CircuitView>> {
    caller.require(Role::Viewer)?;
    let service = service(&state, &name).await?;
    let (circuit, _) = state
        .circuits
        .load(&service.name)
        .await
        .map_err(|e| store_failure(&e))?;
    Ok(Json(view(&service, &circuit)))
}

/// Close a service's circuit now, and lift a pause its 429 asked for: held jobs are delivered
/// at once, without waiting for the cooldown and a successful probe.
#[utoipa::path(post, path = "/api/v1/circuits/{service}/reset", tag = "circuits", params(("service" = String, Path)),
    responses((status = 200, body = CircuitView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<CircuitView>> {
    caller.require(Role::Operator)?;
    let service = service(&state, &name).await?;
    let (before, _) = state
        .circuits
        .load(&service.name)
        .await
        .map_err(|e| store_failure(&e))?;
    let (after, _) = state
        .circuits
        .modify(&service.name, |circuit| {
            let was_closed = circuit.state == CircuitState::Closed
                && circuit.consecutive_failures == 0
                && circuit.pause_at(Utc::now()).is_none();
            *circuit = Circuit::closed(Utc::now());
            !was_closed
        })
        .await
        .map_err(|e| store_failure(&e))?;
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        &caller.actor(),
        "reset",
        "circuit",
        service.name.as_str(),
        serde_json::to_value(view(&service, &before)).ok(),
        serde_json::to_value(view(&service, &after)).ok(),
    )
    .await?;
    Ok(Json(view(&service, &after)))
}

/// One change of state of a circuit.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CircuitChange {
    /// closed, open or half_open.
    pub state: String,
    pub changed_at: DateTime<Utc>,
    pub consecutive_failures: i32,
    /// The failure that last counted when it changed.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitHistory {
    /// Newest first.
    pub items: Vec<CircuitChange>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many changes (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// How a service's circuit changed state, newest first (kept as long as
/// `circuit_changes_max_age`). Writes that only counted a failure are not changes.
#[utoipa::path(get, path = "/api/v1/circuits/{service}/history", tag = "circuits",
    params(("service" = String, Path), HistoryQuery),
    responses((status = 200, body = CircuitHistory), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<CircuitHistory>> {
    caller.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiFailure::invalid(
            "limit",
            format!("must be between 1 and 500 (is {limit})"),
        ));
    }
    let service = service(&state, &name).await?;
    Ok(Json(CircuitHistory {
        items: changes(&state, service.name.as_str(), limit).await?,
    }))
}

/// The rows whose state differs from the service's previous row.
pub(crate) async fn changes(
    state: &AppState,
    service: &str,
    limit: i64,
) -> ApiResult<Vec<CircuitChange>> {
    Ok(sqlx::query_as(
        "SELECT state, changed_at, consecutive_failures, last_error FROM ( \
             SELECT state, changed_at, consecutive_failures, last_error, revision, \
                    lag(state) OVER (ORDER BY revision) AS previous \
             FROM circuit_changes WHERE service = $1) AS stored \
         WHERE previous IS DISTINCT FROM state \
         ORDER BY revision DESC LIMIT $2",
    )
    .bind(service)
    .bind(limit)
    .fetch_all(&state.db)
    .await?)
}
