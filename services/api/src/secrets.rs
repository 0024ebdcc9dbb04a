//! Secrets at rest: the start-up check that every stored secret can be opened, and moving them
//! all to the current key after a rotation (`mih secrets reencrypt`).

use mih_shared::crypto::{Keyring, Sealed};
use mih_shared::live::{Auth, Transport};

use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row;
use crate::resources::crud::Resource;
use crate::resources::{services, sources};
use crate::state::AppState;

/// Every sealed value of a service, named.
fn service_secrets(row: &services::ServiceRow) -> Vec<(String, &Sealed)> {
    let mut found = Vec::new();
    match &row.auth.0 {
        Auth::None => {}
        Auth::Bearer { token } => found.push(("auth.token".to_owned(), token)),
        Auth::ApiKey { key, .. } => found.push(("auth.key".to_owned(), key)),
        Auth::Basic { password, .. } => found.push(("auth.password".to_owned(), password)),
    }
    if let Transport::Amqp(amqp) = &row.transport.0
        && let Some(password) = &amqp.password
    {
        found.push(("transport.password".to_owned(), password));
    }
    if let Some(secret) = &row.signing_secret {
        found.push(("signing_secret".to_owned(), &secret.0));
    }
    found
}

/// Refuses to run when stored secrets cannot be opened: no key configured, or a key that did
/// not seal them.
pub async fn check_openable(state: &AppState) -> ApiResult<usize> {
    let mut stored: Vec<(String, Sealed)> = Vec::new();
    for row in sources::load_all(&state.db).await? {
        for secret in row.signing_secrets.iter() {
            stored.push((
                format!("source `{}` signing secret {}", row.id, secret.id),
                secret.secret.clone(),
            ));
        }
    }
    for row in services::load_all(&state.db).await? {
        for (field, sealed) in service_secrets(&row) {
            stored.push((format!("service `{}` {field}", row.name), sealed.clone()));
        }
    }
    if stored.is_empty() {
        return Ok(0);
    }
    if !state.keyring.has_key() {
        return Err(ApiFailure::Internal(format!(
            "{} secrets are stored but secret_key (MIH_SECRET_KEY) is not set; refusing to start",
            stored.len()
        )));
    }
    for (location, sealed) in &stored {
        state
            .keyring
            .open(sealed)
            .map_err(|e| ApiFailure::Internal(format!("cannot open {location}: {e}")))?;
    }
    Ok(stored.len())
}

fn reseal(keyring: &Keyring, sealed: &Sealed) -> ApiResult<Sealed> {
    let plain = keyring.open(sealed).map_err(ApiFailure::Crypto)?;
    keyring.seal(&plain).map_err(ApiFailure::Crypto)
}

/// Re-seals every secret not sealed with the current key; returns how many were moved.
pub async fn reencrypt(state: &AppState, actor: &str) -> ApiResult<usize> {
    if !state.keyring.has_key() {
        return Err(ApiFailure::Crypto(mih_shared::crypto::CryptoError::NoKey));
    }
    let keyring = &state.keyring;
    let mut moved = 0;
    for id in sources::load_all(&state.db)
        .await?
        .into_iter()
        .map(|r| r.id)
    {
        let mut tx = state.db.begin().await?;
        let Some(current) = <sources::SourceRow as Resource>::load(&mut tx, &id, true).await?
        else {
            continue;
        };
        let stale = current
            .signing_secrets
            .iter()
            .filter(|s| !keyring.is_current(&s.secret))
            .count();
        if stale == 0 {
            continue;
        }
        let mut row = current.clone();
        for secret in row.signing_secrets.0.iter_mut() {
            if !keyring.is_current(&secret.secret) {
                secret.secret = reseal(keyring, &secret.secret)?;
            }
        }
        config_row::commit(state, tx, actor, "reencrypt", Some(&current), &row, false).await?;
        moved += stale;
    }
    for name in services::load_all(&state.db)
        .await?
        .into_iter()
        .map(|r| r.name)
    {
        let mut tx = state.db.begin().await?;
        let Some(current) = <services::ServiceRow as Resource>::load(&mut tx, &name, true).await?
        else {
            continue;
        };
        let stale = service_secrets(&current)
            .iter()
            .filter(|(_, sealed)| !keyring.is_current(sealed))
            .count();
        if stale == 0 {
            continue;
        }
        let mut row = current.clone();
        let fresh = |sealed: &mut Sealed| -> ApiResult<()> {
            if !keyring.is_current(sealed) {
                *sealed = reseal(keyring, sealed)?;
            }
            Ok(())
        };
        match &mut row.auth.0 {
            Auth::None => {}
            Auth::Bearer { token } => fresh(token)?,
            Auth::ApiKey { key, .. } => fresh(key)?,
            Auth::Basic { password, .. } => fresh(password)?,
        }
        if let Transport::Amqp(amqp) = &mut row.transport.0
            && let Some(password) = &mut amqp.password
        {
            fresh(password)?;
        }
        if let Some(secret) = &mut row.signing_secret {
            fresh(&mut secret.0)?;
        }
        config_row::commit(state, tx, actor, "reencrypt", Some(&current), &row, false).await?;
        moved += stale;
    }
    Ok(moved)
}
