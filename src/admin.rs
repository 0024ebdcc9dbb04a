//! Administrative commands that work on the database (and live config) directly, without a
//! running api: bootstrapping tokens and re-encrypting secrets.

use std::time::Duration;

use anyhow::Context;

use mih_api::{AppState, IssuedToken, Role};
use mih_shared::config::Config;
use mih_shared::names::Names;
use mih_shared::topology::{Resource, Topology};
use mih_shared::{connect, db};

/// Who the audit log says made a change from the command line.
const CLI_ACTOR: &str = "cli";

/// Issues a token straight into the database (migrating it first, so this works on a fresh one).
pub async fn create_token(
    config: &Config,
    role: Role,
    label: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<IssuedToken> {
    let pool = connect::connect_database(&config.database).await?;
    db::migrate(&pool).await.context("migrating the database")?;
    let expires_at = expires_in
        .map(|d| chrono::Duration::from_std(d).map(|d| chrono::Utc::now() + d))
        .transpose()
        .context("--expires-in is too long")?;
    Ok(mih_api::issue_token(&pool, label, role, expires_at, CLI_ACTOR, None).await?)
}

/// Re-seals every secret with the current key and updates the live config.
pub async fn reencrypt(config: Config) -> anyhow::Result<usize> {
    let pool = connect::connect_database(&config.database).await?;
    db::migrate(&pool).await.context("migrating the database")?;
    let nats = connect::connect_nats(&config.nats, "mih-cli").await?;
    let js = async_nats::jetstream::new(nats.clone());
    let names = Names::new(config.namespace.clone());
    Topology::new(names.clone(), &config)
        .ensure(&js, &[Resource::ConfigKv, Resource::CircuitsKv])
        .await?;
    let state = AppState::open(&config, pool, js).await?;
    let moved = mih_api::reencrypt_secrets(&state, CLI_ACTOR).await?;
    nats.flush().await.context("flushing NATS")?;
    Ok(moved)
}

/// Closes a service's circuit in the shared state, as `POST /api/v1/circuits/{service}/reset`
/// does (without the audit entry: that needs api's database).
pub async fn reset_circuit(
    config: &Config,
    service: &str,
) -> anyhow::Result<mih_shared::circuit::Circuit> {
    use mih_shared::circuit::{Circuit, CircuitStore};
    let slug = mih_shared::names::ServiceSlug::parse(service)
        .map_err(|e| anyhow::anyhow!("service `{service}`: {e}"))?;
    let nats = connect::connect_nats(&config.nats, "mih-cli").await?;
    let js = async_nats::jetstream::new(nats);
    let names = Names::new(config.namespace.clone());
    let live = js
        .get_key_value(names.config_bucket())
        .await
        .context("opening the live config (has the hub run in this namespace?)")?;
    if live
        .get(mih_shared::live::service_key(&slug))
        .await
        .context("reading the live config")?
        .is_none()
    {
        anyhow::bail!(
            "service `{service}` does not exist in namespace {}",
            config.namespace
        );
    }
    let circuits = CircuitStore::open(&js, &names.circuits_bucket()).await?;
    let (circuit, _) = circuits
        .modify(&slug, |circuit| {
            *circuit = Circuit::closed(chrono::Utc::now());
            true
        })
        .await?;
    Ok(circuit)
}
