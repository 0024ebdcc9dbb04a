//! What sources, services and rules have in common: versioned rows that are audited on every
//! change and materialised into the live config. The handlers' shared steps are written once
//! here; each resource keeps only its own validation and checks.

use std::future::Future;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::PgConnection;

use super::{not_found, publish_live, remove_live, with_etag};
use crate::audit;
use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::extract::{IfMatch, check_version};
use crate::state::AppState;

pub trait ConfigRow: Clone + Send + Sync + Sized + 'static {
    /// `source`, `service`, `rule`: in errors and the audit log.
    const KIND: &'static str;
    /// The role that may change rows of this kind.
    const WRITE_ROLE: Role;
    type View: Serialize + Send;
    type Live: Serialize + Send + Sync;

    fn id(&self) -> String;
    fn version(&self) -> i64;
    fn view(&self) -> Self::View;
    /// The live-config key and value.
    fn live(&self) -> ApiResult<(String, Self::Live)>;
    fn with_enabled(&self, enabled: bool) -> Self;

    /// The row with this id (as given in a URL); `None` when it does not exist.
    fn load(
        db: &mut PgConnection,
        id: &str,
        for_update: bool,
    ) -> impl Future<Output = ApiResult<Option<Self>>> + Send;
    /// Inserts or updates, taking a new version; returns the stored row.
    fn save(
        db: &mut PgConnection,
        row: &Self,
        insert: bool,
    ) -> impl Future<Output = ApiResult<Self>> + Send;
    /// Deletes the row.
    fn delete(db: &mut PgConnection, row: &Self) -> impl Future<Output = ApiResult<()>> + Send;

    fn view_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// Saves a row and audits it in one transaction, then publishes it to the live config.
pub async fn commit<R: ConfigRow>(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &str,
    action: &str,
    before: Option<&R>,
    row: &R,
    insert: bool,
) -> ApiResult<R> {
    let stored = R::save(&mut tx, row, insert).await?;
    let id = stored.id();
    audit::record(
        &mut tx,
        actor,
        action,
        R::KIND,
        &id,
        before.map(R::view_json),
        Some(stored.view_json()),
    )
    .await?;
    tx.commit().await?;
    let (key, live) = stored.live()?;
    publish_live(state, &key, stored.version(), &live).await;
    Ok(stored)
}

/// `GET /{id}`.
pub async fn get_one<R: ConfigRow>(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let mut conn = state.db.acquire().await?;
    let row = R::load(&mut conn, id, false)
        .await?
        .ok_or_else(|| not_found(R::KIND, id))?;
    Ok(with_etag(StatusCode::OK, row.version(), &row.view()))
}

/// Loads a row for a change, checking the caller's role and the expected version.
pub async fn load_for_change<R: ConfigRow>(
    tx: &mut PgConnection,
    caller: &Caller,
    id: &str,
    if_match: IfMatch,
    body_version: Option<i64>,
) -> ApiResult<R> {
    caller.require(R::WRITE_ROLE)?;
    let current = R::load(tx, id, true)
        .await?
        .ok_or_else(|| not_found(R::KIND, id))?;
    check_version(current.version(), if_match, body_version)?;
    Ok(current)
}

/// `POST /{id}/enable` and `/disable`.
pub async fn set_enabled<R: ConfigRow>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    if_match: IfMatch,
    enabled: bool,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: R = load_for_change(&mut tx, caller, id, if_match, None).await?;
    let action = if enabled { "enable" } else { "disable" };
    let row = current.with_enabled(enabled);
    let stored = commit(
        state,
        tx,
        &caller.actor(),
        action,
        Some(&current),
        &row,
        false,
    )
    .await?;
    Ok(with_etag(StatusCode::OK, stored.version(), &stored.view()))
}

/// Deletes a loaded row and audits it inside `tx`; the caller commits, then [`forget`]s it.
pub async fn delete_row<R: ConfigRow>(
    tx: &mut PgConnection,
    actor: &str,
    row: &R,
) -> ApiResult<()> {
    R::delete(tx, row).await?;
    audit::record(
        tx,
        actor,
        "delete",
        R::KIND,
        &row.id(),
        Some(row.view_json()),
        None,
    )
    .await?;
    Ok(())
}

/// Removes a deleted row from the live config.
pub async fn forget<R: ConfigRow>(state: &AppState, row: &R) -> ApiResult<()> {
    let (key, _) = row.live()?;
    remove_live(state, &key).await;
    Ok(())
}

/// The answer of a successful delete.
pub fn deleted() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `POST` of a validated new row: 409 when one with its id exists, else stored and 201.
pub async fn create<R: ConfigRow>(
    state: &AppState,
    caller: &Caller,
    row: R,
) -> ApiResult<Response> {
    let stored = insert(state, caller, row).await?;
    Ok(with_etag(
        StatusCode::CREATED,
        stored.version(),
        &stored.view(),
    ))
}

/// Stores a validated new row (409 when one with its id exists); returns it as stored.
pub async fn insert<R: ConfigRow>(state: &AppState, caller: &Caller, row: R) -> ApiResult<R> {
    let mut tx = state.db.begin().await?;
    let id = row.id();
    if R::load(&mut tx, &id, true).await?.is_some() {
        return Err(crate::error::ApiFailure::Conflict(format!(
            "{} `{id}` already exists",
            R::KIND
        )));
    }
    commit(state, tx, &caller.actor(), "create", None, &row, true).await
}
