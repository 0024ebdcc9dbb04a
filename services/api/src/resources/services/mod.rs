//! Services: the external systems mih delivers to. `input` checks what a client writes,
//! `store` is the table, `view` what the API shows, `reach` whether the dispatcher will be
//! allowed to reach it, `handlers` the HTTP operations; this file makes the pieces a
//! [`ConfigRow`].

pub(crate) mod handlers;
mod input;
mod reach;
mod store;
mod view;

pub use store::{ServiceRow, load, load_all};

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use mih_shared::live::{self, LiveService};
use mih_shared::messages::Version;
use mih_shared::names::ServiceSlug;

use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row::ConfigRow;
use crate::resources::crud::Resource;
use crate::state::AppState;
use input::{ServiceFilter, ServiceInput};
use store::{u32_of, u64_of};
use view::ServiceView;

/// Every service as the live configuration carries it, by name (preview, backfill).
pub async fn load_live(db: &PgPool) -> ApiResult<BTreeMap<ServiceSlug, Arc<LiveService>>> {
    let mut services = BTreeMap::new();
    for row in load_all(db).await? {
        let (_, live) = row.live()?;
        services.insert(live.name.clone(), Arc::new(live));
    }
    Ok(services)
}

impl Resource for ServiceRow {
    const KIND: &'static str = "service";
    const READ_ROLE: Role = Role::Viewer;
    const WRITE_ROLE: Role = Role::Admin;
    type View = ServiceView;
    type Filter = ServiceFilter;

    fn id(&self) -> String {
        self.name.clone()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> ApiResult<ServiceView> {
        Ok(ServiceView::from(self))
    }

    async fn load(db: &mut PgConnection, id: &str, for_update: bool) -> ApiResult<Option<Self>> {
        Ok(store::load(db, id, for_update).await?)
    }

    async fn page(
        db: &PgPool,
        filter: &ServiceFilter,
        after: Option<&str>,
        limit: i64,
    ) -> ApiResult<Vec<Self>> {
        Ok(store::page(
            db,
            after,
            filter.kind.as_deref(),
            filter.enabled,
            filter.q.as_deref(),
            limit,
        )
        .await?)
    }
}

impl ConfigRow for ServiceRow {
    type Input = ServiceInput;
    type Live = LiveService;

    fn live(&self) -> ApiResult<(String, LiveService)> {
        let live = LiveService {
            v: Version,
            name: self
                .name
                .parse()
                .map_err(|e| ApiFailure::Internal(format!("stored service name: {e}")))?,
            description: self.description.clone(),
            enabled: self.enabled,
            transport: self.transport.0.clone(),
            auth: self.auth.0.clone(),
            signing_secret: self.signing_secret.as_ref().map(|s| s.0.clone()),
            headers: self.headers.0.clone(),
            timeout_ms: u64_of(self.timeout_ms),
            retry: self.retry(),
            breaker: self.breaker(),
            concurrency: u32_of(self.concurrency),
            rate_limit_per_sec: self.rate_limit_per_sec.map(u32_of),
            max_job_age_ms: u64_of(self.max_job_age_ms),
            inbound: self.inbound.as_ref().map(|i| i.0.clone()),
            version: self.version,
        };
        Ok((live::service_key(&live.name), live))
    }

    fn with_enabled(&self, enabled: bool) -> Self {
        ServiceRow {
            enabled,
            ..self.clone()
        }
    }

    fn input_version(input: &ServiceInput) -> Option<i64> {
        input.version
    }

    async fn apply(
        state: &AppState,
        db: &mut PgConnection,
        current: Option<&Self>,
        input: ServiceInput,
    ) -> ApiResult<Self> {
        let row = input::apply(state, current, input)?;
        if let Some(inbound) = &row.inbound {
            // The Moodle site that receives the messages must exist (it may be disabled).
            let source = inbound.0.source.as_str();
            if crate::resources::sources::existing(db, &[source.to_owned()])
                .await?
                .is_empty()
            {
                return Err(ApiFailure::invalid(
                    "inbound.source",
                    format!("there is no source `{source}` (GET /api/v1/sources lists them)"),
                ));
            }
        }
        Ok(row)
    }

    async fn save(db: &mut PgConnection, row: &Self, insert: bool) -> ApiResult<Self> {
        Ok(store::save(db, row, insert).await?)
    }

    async fn delete(db: &mut PgConnection, row: &Self) -> ApiResult<()> {
        Ok(store::delete(db, &row.name).await?)
    }

    /// With what will not work as configured: an address the dispatcher's SSRF guard refuses, a
    /// host that does not resolve.
    async fn present(&self, state: &AppState) -> ApiResult<ServiceView> {
        Ok(ServiceView {
            warnings: reach::warnings(&state.ssrf, &self.transport.0).await,
            ..self.view()?
        })
    }
}
