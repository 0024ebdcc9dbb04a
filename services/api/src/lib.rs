//! api: the admin REST API (`/api/v1/*`, OpenAPI at `/api/v1/openapi.json`). PostgreSQL holds
//! the configuration; after each committed change the materialised object goes to the
//! `<ns>_config` KV bucket that ingest, matcher and dispatcher follow.
//!
//! Its public face is what the `mih` binary's commands and the tests need: [`run`], the OpenAPI
//! document, the state the admin commands open, token issuing and secret re-encryption,
//! dead-letter replays ([`Replayer`]), the delivery log's writes ([`delivery_log`]) and the
//! retention purge. Everything else stays inside.

mod advisory;
mod audit;
mod auth;
mod backfill;
mod dashboard;
mod error;
mod extract;
pub mod inbound_log;
mod live;
mod recent;
mod reconcile;
mod recorder;
mod replay;
pub mod retention;
// utoipa's `path` macro expands to fully qualified paths.
#[allow(unused_qualifications)]
mod resources;
mod routes;
mod secrets;
mod state;

use mih_shared::{RunError, ServiceContext, Shutdown, db, ops};

pub use auth::Role;
pub use error::ApiFailure;
pub use replay::{Replayed, Replayer, RunEnd};
pub use resources::tokens::{IssuedToken, issue as issue_token};
pub use routes::openapi_json;
pub use secrets::reencrypt as reencrypt_secrets;
pub use state::AppState;

/// The delivery log (`deliveries`, `delivery_rollups`, `circuit_changes`) written as the
/// recorder writes it: for `mih rebuild-projections`, and for tests that seed it.
pub mod delivery_log {
    pub use crate::recorder::{CONSUMER, record, record_batch, record_circuit, truncate};
}

/// Opens what the API works with: the keyring and the live config writer.
async fn state(ctx: &ServiceContext) -> Result<AppState, RunError> {
    let pool = ctx.database()?.clone();
    // A secret_key that cannot be read is a setting to fix: no use waiting for it.
    ctx.config.keyring().map_err(|e| RunError::Setting {
        setting: "secret_key (MIH_SECRET_KEY)",
        problem: e.into(),
    })?;
    ctx.open_at_start("the api's buckets".into(), || {
        AppState::open(&ctx.config, pool.clone(), ctx.jetstream.clone())
    })
    .await
}

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    let pool = ctx.database()?.clone();
    let applied = db::migrate(&pool)
        .await
        .map_err(|cause| RunError::Migrate { cause })?;
    tracing::info!(migrations = applied, "database schema up to date");
    ctx.ensure_topology().await?;
    let state = state(&ctx).await?;
    let secrets = secrets::check_openable(&state)
        .await
        .map_err(|e| RunError::Setting {
            setting: "secret_key (MIH_SECRET_KEY)",
            problem: e.into(),
        })?;
    if let Some(token) = &ctx.config.bootstrap_admin_token {
        match resources::tokens::ensure_bootstrap(&state.db, token.expose()).await {
            Ok(true) => tracing::info!("bootstrap admin token created"),
            Ok(false) | Err(ApiFailure::Conflict(_)) => {}
            Err(e) => {
                return Err(RunError::Setting {
                    setting: "bootstrap_admin_token (MIH_BOOTSTRAP_ADMIN_TOKEN)",
                    problem: e.into(),
                });
            }
        }
    }
    let seeded = resources::sources::import_seeds(&state, &ctx.config)
        .await
        .map_err(|e| RunError::Setting {
            setting: "sources",
            problem: e.into(),
        })?;
    let report = reconcile::once(&state).await.map_err(|e| RunError::Open {
        what: format!("the live configuration ({})", state.names.config_bucket()),
        cause: e.into(),
    })?;
    tracing::info!(
        secrets,
        seeded_sources = seeded,
        written = report.written,
        removed = report.removed,
        unchanged = report.unchanged,
        "live config reconciled"
    );
    tokio::spawn(reconcile::periodically(
        state.clone(),
        ctx.config.api.reconcile_interval,
        shutdown.clone(),
    ));
    tokio::spawn(backfill::runner(state.clone(), shutdown.clone()));
    tokio::spawn(recorder::run(state.clone(), shutdown.clone()));
    tokio::spawn(inbound_log::run(state.clone(), shutdown.clone()));
    tokio::spawn(replay::runner(state.replayer(), shutdown.clone()));
    tokio::spawn(retention::periodically(
        state.db.clone(),
        state.replayer(),
        ctx.config.retention.clone(),
        shutdown.clone(),
    ));
    let app = routes::router(state).merge(ops::router(ctx.readiness.clone(), ctx.metrics.clone()));
    ctx.readiness.mark_started();
    ops::serve(ctx.listener, app, ctx.service, ctx.config.http, shutdown).await?;
    Ok(())
}
