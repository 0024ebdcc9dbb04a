//! Making the live config equal to PostgreSQL: at start and on a schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use mih_shared::Shutdown;

use crate::error::{ApiFailure, ApiResult};
use crate::live::ReconcileReport;
use crate::resources::config_row::ConfigRow;
use crate::resources::{rules, services, sources};
use crate::state::AppState;

fn json<T: serde::Serialize>(value: &T) -> ApiResult<Value> {
    serde_json::to_value(value)
        .map_err(|e| ApiFailure::Internal(format!("cannot encode live config: {e}")))
}

/// Every row, materialised as its live key and value.
async fn desired(state: &AppState) -> ApiResult<BTreeMap<String, Value>> {
    let mut desired = BTreeMap::new();
    add(&mut desired, sources::load_all(&state.db).await?)?;
    add(&mut desired, services::load_all(&state.db).await?)?;
    add(&mut desired, rules::load_all(&state.db).await?)?;
    Ok(desired)
}

fn add<R: ConfigRow>(desired: &mut BTreeMap<String, Value>, rows: Vec<R>) -> ApiResult<()> {
    for row in rows {
        let (key, live) = row.live()?;
        desired.insert(key, json(&live)?);
    }
    Ok(())
}

pub async fn once(state: &AppState) -> ApiResult<ReconcileReport> {
    let desired = desired(state).await?;
    state
        .live
        .reconcile(desired)
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))
}

/// Reconciles every `interval` until shutdown; problems are logged and retried next time.
pub async fn periodically(state: AppState, interval: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = tick.tick() => {}
        }
        match once(&state).await {
            Ok(report) if report.written + report.removed > 0 => {
                tracing::warn!(
                    written = report.written,
                    removed = report.removed,
                    "live config repaired"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "live config reconcile failed; retrying later"),
        }
    }
}
