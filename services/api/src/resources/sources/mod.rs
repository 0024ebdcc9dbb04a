//! Sources: the Moodle sites allowed to send events. `input` checks what a client writes,
//! `store` is the table, `view` what the API shows, `handlers` the HTTP operations; this file
//! makes the pieces a [`ConfigRow`].

pub(crate) mod handlers;
mod input;
mod store;
mod view;

pub(crate) use input::SourceFilter;
pub use input::import_seeds;
pub(crate) use store::existing;
pub use store::{SourceRow, load_all};

use sqlx::{PgConnection, PgPool};

use mih_shared::live::{self, LiveSource};
use mih_shared::messages::Version;
use mih_shared::names::SourceId;

use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row::ConfigRow;
use crate::resources::crud::Resource;
use crate::state::AppState;
use input::SourceInput;
use view::SourceView;

impl Resource for SourceRow {
    const KIND: &'static str = "source";
    const READ_ROLE: Role = Role::Viewer;
    const WRITE_ROLE: Role = Role::Admin;
    type View = SourceView;
    type Filter = SourceFilter;

    fn id(&self) -> String {
        self.id.clone()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> ApiResult<SourceView> {
        Ok(SourceView::from(self))
    }

    async fn load(db: &mut PgConnection, id: &str, for_update: bool) -> ApiResult<Option<Self>> {
        Ok(store::load(db, id, for_update).await?)
    }

    async fn page(
        db: &PgPool,
        filter: &SourceFilter,
        after: Option<&str>,
        limit: i64,
    ) -> ApiResult<Vec<Self>> {
        Ok(store::page(db, after, filter.enabled, filter.q.as_deref(), limit).await?)
    }
}

impl ConfigRow for SourceRow {
    type Input = SourceInput;
    type Live = LiveSource;

    fn live(&self) -> ApiResult<(String, LiveSource)> {
        let id: SourceId = self
            .id
            .parse()
            .map_err(|e| ApiFailure::Internal(format!("stored source id: {e}")))?;
        let live = LiveSource {
            v: Version,
            id,
            name: self.name.clone(),
            enabled: self.enabled,
            signing_secrets: self.signing_secrets.0.clone(),
            bearer_token_hashes: self.bearer_token_hashes.clone(),
            version: self.version,
        };
        Ok((live::source_key(&live.id), live))
    }

    fn with_enabled(&self, enabled: bool) -> Self {
        SourceRow {
            enabled,
            ..self.clone()
        }
    }

    fn input_version(input: &SourceInput) -> Option<i64> {
        input.version
    }

    async fn apply(
        state: &AppState,
        _db: &mut PgConnection,
        current: Option<&Self>,
        input: SourceInput,
    ) -> ApiResult<Self> {
        input::apply(state, current, input)
    }

    async fn save(db: &mut PgConnection, row: &Self, insert: bool) -> ApiResult<Self> {
        Ok(store::save(db, row, insert).await?)
    }

    async fn delete(db: &mut PgConnection, row: &Self) -> ApiResult<()> {
        Ok(store::delete(db, &row.id).await?)
    }
}
