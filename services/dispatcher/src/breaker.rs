//! One service's view of its shared circuit: a cached copy kept current by watching the
//! `<ns>_circuits` key (so a circuit another replica opened pauses this one too), and
//! compare-and-set writes through [`CircuitStore`] whenever a decision changes the state.
//! While the circuit is closed and healthy, admitting and recording cost no NATS round trip.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use metrics::{counter, gauge};
use tokio::sync::watch;

use mih_shared::Shutdown;
use mih_shared::circuit::{Admission, Circuit, CircuitError, CircuitState, CircuitStore, Health};
use mih_shared::live::BreakerPolicy;
use mih_shared::names::{Names, ServiceSlug};

use crate::metrics as m;

#[derive(Debug)]
pub(crate) struct Breaker {
    store: CircuitStore,
    service: ServiceSlug,
    policy: BreakerPolicy,
    cached: watch::Sender<Circuit>,
    nats: async_nats::Client,
    subject: String,
}

impl Breaker {
    /// Loads the service's circuit and follows it until `shutdown`.
    pub(crate) async fn start(
        store: CircuitStore,
        service: ServiceSlug,
        policy: BreakerPolicy,
        nats: async_nats::Client,
        names: &Names,
        shutdown: Shutdown,
    ) -> Result<std::sync::Arc<Self>, CircuitError> {
        let (circuit, _) = store.load(&service).await?;
        let (cached, _) = watch::channel(circuit.clone());
        let breaker = std::sync::Arc::new(Breaker {
            subject: names.circuit_subject(&service),
            store,
            service,
            policy,
            cached,
            nats,
        });
        breaker.show(&circuit);
        tokio::spawn(std::sync::Arc::clone(&breaker).follow(shutdown));
        Ok(breaker)
    }

    pub(crate) fn current(&self) -> Circuit {
        self.cached.borrow().clone()
    }

    /// Wakes whoever waits for the circuit to change (a paused worker).
    pub(crate) fn changes(&self) -> watch::Receiver<Circuit> {
        self.cached.subscribe()
    }

    /// May an attempt go out now? Taking a half-open probe slot is a shared write.
    pub(crate) async fn admit(&self) -> Result<Admission, CircuitError> {
        {
            let cached = self.cached.borrow();
            if let Some(until) = cached.pause_at(Utc::now()) {
                return Ok(Admission::Paused { until });
            }
            if cached.state == CircuitState::Closed {
                return Ok(Admission::Admit { probe: false });
            }
        }
        let mut decision = Admission::Admit { probe: false };
        let (circuit, written) = self
            .store
            .modify(&self.service, |circuit| {
                let (admission, changed) = circuit.admit(&self.policy, Utc::now());
                decision = admission;
                changed
            })
            .await?;
        self.observe(circuit, written).await;
        Ok(decision)
    }

    /// Pauses the service on every replica until `until`, as its 429 answer asked. The
    /// attempts in flight all tend to get the same answer: only a longer pause is written.
    pub(crate) async fn pause(&self, until: DateTime<Utc>) -> Result<(), CircuitError> {
        if self
            .cached
            .borrow()
            .paused_until
            .is_some_and(|current| current >= until)
        {
            return Ok(());
        }
        let (circuit, written) = self
            .store
            .modify(&self.service, |circuit| circuit.pause(until))
            .await?;
        if written {
            counter!(m::PAUSES, "service" => self.service.to_string()).increment(1);
            tracing::warn!(service = %self.service, until = %until.to_rfc3339(),
                "the service answered 429: every replica pauses it");
        }
        self.observe(circuit, written).await;
        Ok(())
    }

    /// Takes an attempt's result into account.
    pub(crate) async fn record(&self, health: Health) -> Result<(), CircuitError> {
        {
            let cached = self.cached.borrow();
            let nothing_to_change = cached.state == CircuitState::Closed
                && match health {
                    Health::Up => cached.consecutive_failures == 0,
                    Health::Answered => true,
                    Health::Down(_) => false,
                };
            if nothing_to_change {
                return Ok(());
            }
        }
        let (circuit, written) = self
            .store
            .modify(&self.service, |circuit| {
                circuit.record(&self.policy, &health, Utc::now())
            })
            .await?;
        self.observe(circuit, written).await;
        Ok(())
    }

    /// Adopts a state this replica wrote, announcing a transition.
    async fn observe(&self, circuit: Circuit, written: bool) {
        let before = self.cached.borrow().state;
        let transition = written && before != circuit.state;
        self.cached.send_replace(circuit.clone());
        self.show(&circuit);
        if transition {
            self.announce(before, &circuit).await;
        }
    }

    async fn announce(&self, from: CircuitState, circuit: &Circuit) {
        counter!(m::CIRCUIT_TRANSITIONS, "service" => self.service.to_string(), "to" => circuit.state.as_str())
            .increment(1);
        match circuit.state {
            CircuitState::Open if from == CircuitState::Closed => tracing::warn!(
                service = %self.service,
                failures = circuit.consecutive_failures,
                last_error = circuit.last_error.as_deref().unwrap_or(""),
                "circuit opened; the service's jobs wait in JOBS"
            ),
            // Once per cooldown for as long as the outage lasts: the opening said it already.
            CircuitState::Open => tracing::info!(
                service = %self.service,
                failures = circuit.consecutive_failures,
                last_error = circuit.last_error.as_deref().unwrap_or(""),
                "probe failed; circuit open again"
            ),
            state => {
                tracing::info!(service = %self.service, from = from.as_str(), to = state.as_str(), "circuit changed")
            }
        }
        if let Ok(payload) = serde_json::to_vec(circuit)
            && let Err(error) = self
                .nats
                .publish(self.subject.clone(), payload.into())
                .await
        {
            tracing::debug!(%error, "circuit change not announced");
        }
    }

    fn show(&self, circuit: &Circuit) {
        let value = match circuit.state {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        };
        gauge!(m::CIRCUIT_STATE, "service" => self.service.to_string()).set(value);
    }

    /// Keeps the cached state equal to the stored one (other replicas, an admin's reset).
    async fn follow(self: std::sync::Arc<Self>, shutdown: Shutdown) {
        let key = self.service.to_string();
        while !shutdown.is_triggered() {
            let mut updates = match self.store.kv().watch(&key).await {
                Ok(updates) => updates,
                Err(error) => {
                    tracing::warn!(%error, service = %self.service, "cannot watch the circuit; retrying");
                    tokio::select! {
                        () = shutdown.triggered() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let update = tokio::select! {
                    () = shutdown.triggered() => return,
                    update = updates.next() => update,
                };
                match update {
                    Some(Ok(entry)) => {
                        let circuit = match entry.operation {
                            async_nats::jetstream::kv::Operation::Put => {
                                match serde_json::from_slice::<Circuit>(&entry.value) {
                                    Ok(circuit) => circuit,
                                    Err(error) => {
                                        tracing::warn!(%error, service = %self.service, "unreadable circuit ignored");
                                        continue;
                                    }
                                }
                            }
                            _ => Circuit::closed(Utc::now()),
                        };
                        let before = self.cached.borrow().state;
                        if before != circuit.state {
                            tracing::info!(service = %self.service, from = before.as_str(), to = circuit.state.as_str(), "circuit changed elsewhere");
                        }
                        self.show(&circuit);
                        self.cached.send_replace(circuit);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, service = %self.service, "circuit watch failed; re-watching");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}
