//! The services that accept inbound messages, ready for authentication and rate limiting,
//! rebuilt from the live configuration whenever it changes.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use mih_shared::crypto::Keyring;
use mih_shared::live::{LiveConfig, LiveInbound};
use mih_shared::names::{ServiceSlug, SourceId};
use mih_shared::signature::SigningSecret;
use mih_shared::sources::{ActiveSecret, SourceError, TokenHash, open_secrets, token_hashes};

/// One service's inbound endpoint.
#[derive(Debug)]
pub(crate) struct InboundService {
    pub name: ServiceSlug,
    pub source: SourceId,
    /// What it was opened from: an unchanged service keeps its rate limiter across refreshes.
    settings: LiveInbound,
    signing_secrets: Vec<ActiveSecret>,
    bearer_token_hashes: Vec<TokenHash>,
    pub limiter: DefaultDirectRateLimiter,
}

impl InboundService {
    fn open(
        name: &ServiceSlug,
        inbound: &LiveInbound,
        keyring: &Keyring,
    ) -> Result<Self, SourceError> {
        let owner = format!("service `{name}` (inbound)");
        let rate = NonZeroU32::new(inbound.rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(inbound.burst).unwrap_or(rate);
        Ok(Self {
            name: name.clone(),
            source: inbound.source.clone(),
            settings: inbound.clone(),
            signing_secrets: open_secrets(&owner, &inbound.signing_secrets, keyring)?,
            bearer_token_hashes: token_hashes(&owner, &inbound.bearer_token_hashes)?,
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// The signing secrets accepted at `now` (a rotated-out secret expires).
    pub fn secrets_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> + Clone {
        self.signing_secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| &s.secret)
    }

    pub fn accepts_token(&self, hash: &TokenHash) -> bool {
        self.bearer_token_hashes.iter().any(|h| h == hash)
    }
}

/// The current inbound services, shared by every request handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct InboundDirectory {
    current: Arc<ArcSwap<HashMap<ServiceSlug, Arc<InboundService>>>>,
}

impl InboundDirectory {
    /// Rebuilds from the live config: the enabled inbound endpoints. A service whose secrets
    /// cannot be opened is left out (its webhooks are refused) and returned.
    pub fn refresh(&self, config: &LiveConfig, keyring: &Keyring) -> Vec<SourceError> {
        let previous = self.current.load();
        let mut next = HashMap::new();
        let mut problems = Vec::new();
        for live in config.services.values() {
            let Some(inbound) = live.inbound.as_ref().filter(|i| i.enabled && live.enabled) else {
                continue;
            };
            if let Some(kept) = previous.get(&live.name).filter(|k| k.settings == *inbound) {
                next.insert(live.name.clone(), Arc::clone(kept));
                continue;
            }
            match InboundService::open(&live.name, inbound, keyring) {
                Ok(service) => {
                    next.insert(live.name.clone(), Arc::new(service));
                }
                Err(error) => problems.push(error),
            }
        }
        self.current.store(Arc::new(next));
        problems
    }

    pub fn get(&self, name: &str) -> Option<Arc<InboundService>> {
        let name = ServiceSlug::parse(name).ok()?;
        self.current.load().get(&name).cloned()
    }
}
