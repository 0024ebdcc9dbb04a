//! What sources, services and rules have in common beyond [`Resource`]: versioned rows that
//! are audited on every change and materialised into the live config. Create, update,
//! enable/disable and delete are written once here; each resource keeps only its input
//! (`apply`) and its SQL.

use std::future::Future;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

use super::crud::{Resource, load_for_change};
use super::{publish_live, remove_live, with_etag};
use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::IfMatch;
use crate::state::AppState;

pub trait ConfigRow: Resource + Clone {
    /// The request body of a create or an update.
    type Input: DeserializeOwned + Send;
    type Live: Serialize + Send + Sync;

    /// The live-config key and value.
    fn live(&self) -> ApiResult<(String, Self::Live)>;
    fn with_enabled(&self, enabled: bool) -> Self;

    /// The `version` field of an input (the alternative to `If-Match`).
    fn input_version(input: &Self::Input) -> Option<i64>;
    /// Applies an input to the current row (none when creating), validating everything.
    fn apply(
        state: &AppState,
        db: &mut PgConnection,
        current: Option<&Self>,
        input: Self::Input,
    ) -> impl Future<Output = ApiResult<Self>> + Send;

    /// Inserts or updates, taking a new version; returns the stored row.
    fn save(
        db: &mut PgConnection,
        row: &Self,
        insert: bool,
    ) -> impl Future<Output = ApiResult<Self>> + Send;
    /// Deletes the row.
    fn delete(db: &mut PgConnection, row: &Self) -> impl Future<Output = ApiResult<()>> + Send;

    /// The answer to a create or an update (a service adds what will not work as configured).
    fn present(&self, _state: &AppState) -> impl Future<Output = ApiResult<Self::View>> + Send {
        async move { self.view() }
    }
}

/// What other rows that name a row ask of its changes: a delete is refused while they exist,
/// or takes them along; a change may be refused that they would not survive.
pub trait Referenced: ConfigRow {
    type Referrer: ConfigRow;

    /// Inside the delete's transaction, with the row locked: the referrers to delete with it,
    /// or a refusal.
    fn referrers(
        db: &mut PgConnection,
        row: &Self,
        cascade: bool,
    ) -> impl Future<Output = ApiResult<Vec<Self::Referrer>>> + Send;

    /// Inside the update's transaction: refuses a change the referrers would not survive.
    fn check_change(
        db: &mut PgConnection,
        before: &Self,
        after: &Self,
    ) -> impl Future<Output = ApiResult<()>> + Send;
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

/// `POST` of a collection: a validated new row, 409 when one with its id exists, else 201.
pub async fn create<R: ConfigRow>(
    state: &AppState,
    caller: &Caller,
    input: R::Input,
) -> ApiResult<Response> {
    caller.require(R::WRITE_ROLE)?;
    let mut tx = state.db.begin().await?;
    let row = R::apply(state, &mut tx, None, input).await?;
    let id = row.id();
    if R::load(&mut tx, &id, true).await?.is_some() {
        return Err(ApiFailure::Conflict(format!(
            "{} `{id}` already exists",
            R::KIND
        )));
    }
    let stored = commit(state, tx, &caller.actor(), "create", None, &row, true).await?;
    let view = stored.present(state).await?;
    Ok(with_etag(StatusCode::CREATED, stored.version(), &view))
}

/// `PATCH /{id}`: fields left out keep their value.
pub async fn update<R: Referenced>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    if_match: IfMatch,
    input: R::Input,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let version = R::input_version(&input);
    let current: R = load_for_change(&mut tx, caller, id, if_match, version).await?;
    let row = R::apply(state, &mut tx, Some(&current), input).await?;
    R::check_change(&mut tx, &current, &row).await?;
    let stored = commit(
        state,
        tx,
        &caller.actor(),
        "update",
        Some(&current),
        &row,
        false,
    )
    .await?;
    // After the commit: presenting may take time (a service resolves its host names) and must
    // not hold the row's lock.
    let view = stored.present(state).await?;
    Ok(with_etag(StatusCode::OK, stored.version(), &view))
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
    Ok(with_etag(StatusCode::OK, stored.version(), &stored.view()?))
}

/// `DELETE /{id}`, with the referrers `cascade` takes along.
pub async fn delete<R: Referenced>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    if_match: IfMatch,
    cascade: bool,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: R = load_for_change(&mut tx, caller, id, if_match, None).await?;
    let referrers = R::referrers(&mut tx, &current, cascade).await?;
    let actor = caller.actor();
    for referrer in &referrers {
        delete_row(&mut tx, &actor, referrer).await?;
    }
    delete_row(&mut tx, &actor, &current).await?;
    tx.commit().await?;
    for referrer in &referrers {
        forget(state, referrer).await?;
    }
    forget(state, &current).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a loaded row and audits it inside `tx`; the caller commits, then [`forget`]s it.
async fn delete_row<R: ConfigRow>(tx: &mut PgConnection, actor: &str, row: &R) -> ApiResult<()> {
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
async fn forget<R: ConfigRow>(state: &AppState, row: &R) -> ApiResult<()> {
    let (key, _) = row.live()?;
    remove_live(state, &key).await;
    Ok(())
}
