//! Watches the dedup bucket's size: how many claims it holds and how old the oldest is. Once
//! `matcher.dedup_max_claims` is reached the oldest claims are dropped, and the age of the
//! oldest one left is the horizon that really holds; the metrics say so, and a warning names
//! the setting to raise.

use std::time::Duration;

use async_nats::jetstream;
use metrics::gauge;

use mih_shared::Shutdown;

use crate::metrics as m;

/// Stream info is a request to the stream's leader; twice a minute is plenty for a size that
/// changes over hours.
const EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub claims: u64,
    /// Age of the oldest claim kept.
    pub oldest: Duration,
}

impl Reading {
    /// The bucket is at its bound and drops claims younger than the configured horizon.
    pub(crate) fn shortens(&self, max_claims: i64, horizon: Duration) -> bool {
        let full = i64::try_from(self.claims).unwrap_or(i64::MAX) >= max_claims;
        // A claim is only dropped early if it had not expired anyway; a margin keeps a bucket
        // that merely expires claims at the horizon from being reported.
        full && self.oldest + Duration::from_secs(60) < horizon
    }
}

pub(crate) async fn read(js: &jetstream::Context, stream: &str) -> Result<Reading, String> {
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let state = stream.get_info().await.map_err(|e| e.to_string())?.state;
    let oldest = if state.messages == 0 {
        Duration::ZERO
    } else {
        let age = time::OffsetDateTime::now_utc() - state.first_timestamp;
        Duration::try_from(age).unwrap_or(Duration::ZERO)
    };
    Ok(Reading {
        claims: state.messages,
        oldest,
    })
}

pub(crate) async fn watch(
    js: jetstream::Context,
    stream: String,
    max_claims: i64,
    horizon: Duration,
    shutdown: Shutdown,
) {
    let mut warned = false;
    loop {
        match read(&js, &stream).await {
            Ok(reading) => {
                #[allow(clippy::cast_precision_loss)]
                gauge!(m::DEDUP_CLAIMS).set(reading.claims as f64);
                gauge!(m::DEDUP_OLDEST_SECONDS).set(reading.oldest.as_secs_f64());
                let shortens = reading.shortens(max_claims, horizon);
                gauge!(m::DEDUP_SHORTENED).set(if shortens { 1.0 } else { 0.0 });
                if shortens && !warned {
                    tracing::warn!(
                        claims = reading.claims,
                        kept_for = ?reading.oldest,
                        horizon = ?horizon,
                        "the dedup bucket is full: claims are dropped before matcher.dedup_horizon; raise matcher.dedup_max_claims (nats-server memory grows with it) or accept the shorter horizon"
                    );
                }
                warned = shortens;
            }
            Err(error) => tracing::debug!(%error, %stream, "cannot read the dedup bucket's size"),
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_bucket_dropping_young_claims_shortens_the_horizon() {
        let day = Duration::from_secs(24 * 3600);
        let reading = |claims, oldest_s| Reading {
            claims,
            oldest: Duration::from_secs(oldest_s),
        };
        assert!(reading(1_000, 600).shortens(1_000, day));
        assert!(!reading(999, 600).shortens(1_000, day), "not full");
        assert!(
            !reading(1_000, 24 * 3600).shortens(1_000, day),
            "full, but its claims live their whole horizon"
        );
    }
}
