//! The shells every listed, versioned resource shares — list a page, get one, load one for a
//! change — written once over [`Resource`]. Each resource keeps only its SQL and its checks.

use std::future::Future;

use axum::Json;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{not_found, with_etag};
use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::extract::{IfMatch, Page, PageQuery, check_version};
use crate::state::AppState;

/// A row the API lists, shows and changes under optimistic concurrency (its `version`).
pub trait Resource: Send + Sync + Sized + 'static {
    /// `source`, `service`, `rule`, `token`: in errors and the audit log.
    const KIND: &'static str;
    /// The role that may read rows of this kind.
    const READ_ROLE: Role;
    /// The role that may change rows of this kind.
    const WRITE_ROLE: Role;
    type View: Serialize + Send;
    /// The list's query parameters besides paging.
    type Filter: Send + Sync;

    /// The id as URLs name it; also the list's cursor.
    fn id(&self) -> String;
    fn version(&self) -> i64;
    fn view(&self) -> ApiResult<Self::View>;

    /// The row with this id (as given in a URL); `None` when it does not exist.
    fn load(
        db: &mut PgConnection,
        id: &str,
        for_update: bool,
    ) -> impl Future<Output = ApiResult<Option<Self>>> + Send;

    /// Up to `limit` rows after the cursor `after`, in id order, that pass `filter`.
    fn page(
        db: &PgPool,
        filter: &Self::Filter,
        after: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = ApiResult<Vec<Self>>> + Send;

    /// The view as the audit log keeps it.
    fn view_json(&self) -> serde_json::Value {
        self.view()
            .ok()
            .and_then(|view| serde_json::to_value(view).ok())
            .unwrap_or_default()
    }
}

/// `GET` of a collection: one page of views.
pub async fn list<R: Resource>(
    state: &AppState,
    caller: &Caller,
    filter: R::Filter,
    page: PageQuery,
) -> ApiResult<Json<Page<R::View>>> {
    caller.require(R::READ_ROLE)?;
    let limit = page.limit()?;
    let rows = R::page(&state.db, &filter, page.cursor.as_deref(), limit + 1).await?;
    let page = Page::from_rows(rows, limit, R::id).try_map(|row| row.view())?;
    Ok(Json(page))
}

/// `GET /{id}`, with its ETag.
pub async fn get_one<R: Resource>(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Response> {
    caller.require(R::READ_ROLE)?;
    let mut conn = state.db.acquire().await?;
    let row = R::load(&mut conn, id, false)
        .await?
        .ok_or_else(|| not_found(R::KIND, id))?;
    Ok(with_etag(StatusCode::OK, row.version(), &row.view()?))
}

/// Loads a row for a change, checking the caller's role and the expected version.
pub async fn load_for_change<R: Resource>(
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
