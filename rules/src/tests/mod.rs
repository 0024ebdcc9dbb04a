//! Unit tests of the engine as a whole: rule sets built from a live configuration, matched
//! against Moodle events; the fixtures they share are here.

mod matching;
mod rejections;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use mih_shared::crypto::Sealed;
use mih_shared::live::{
    Auth, BreakerPolicy, LiveConfig, LiveRule, LiveService, RestTransport, RetryPolicy, RuleTarget,
    Transport,
};
use mih_shared::messages::{Event, EventId, HttpMethod, Origin, RuleId, Version};
use mih_shared::moodle::EventPattern;
use mih_shared::names::SourceId;

use crate::{Match, RuleSet};

fn service(name: &str, transport: Transport, enabled: bool) -> LiveService {
    LiveService {
        v: Version,
        name: name.parse().expect("name"),
        description: String::new(),
        enabled,
        transport,
        auth: Auth::None,
        signing_secret: None::<Sealed>,
        headers: BTreeMap::new(),
        timeout_ms: 5000,
        retry: RetryPolicy {
            max_retries: 3,
            backoff_base_ms: 100,
            backoff_cap_ms: 1000,
        },
        breaker: BreakerPolicy {
            failure_threshold: 5,
            cooldown_ms: 1000,
            half_open_probes: 1,
        },
        concurrency: 1,
        rate_limit_per_sec: None,
        max_job_age_ms: 60_000,
        inbound: None,
        version: 1,
    }
}

fn rest() -> Transport {
    Transport::Rest(RestTransport {
        base_url: "https://sis.example".into(),
    })
}

fn rule(
    name: &str,
    events: &[&str],
    condition: Option<&str>,
    service: &str,
    target: RuleTarget,
) -> LiveRule {
    LiveRule {
        v: Version,
        id: RuleId(uuid::Uuid::now_v7()),
        name: name.into(),
        description: String::new(),
        enabled: true,
        sources: Vec::new(),
        events: events
            .iter()
            .map(|e| EventPattern::parse(e).expect("pattern"))
            .collect(),
        condition: condition.map(str::to_owned),
        service: service.parse().expect("service"),
        target,
        headers: BTreeMap::new(),
        body: None,
        content_type: "application/json".into(),
        ordering_key: None,
        ordering_on_dead_letter: Default::default(),
        version: 1,
    }
}

fn post(path: &str) -> RuleTarget {
    RuleTarget::Rest {
        method: HttpMethod::Post,
        path: path.into(),
    }
}

fn config(services: Vec<LiveService>, rules: Vec<LiveRule>) -> LiveConfig {
    LiveConfig {
        services: services
            .into_iter()
            .map(|s| (s.name.clone(), Arc::new(s)))
            .collect(),
        rules: rules.into_iter().map(|r| (r.id, Arc::new(r))).collect(),
        ..LiveConfig::default()
    }
}

fn event(data: Value) -> Event {
    let Value::Object(data) = data else {
        panic!("an object")
    };
    Event {
        v: Version,
        id: EventId::new_v7(),
        source: SourceId::parse("moodle").expect("source"),
        received_at: Utc::now(),
        dedup_key: "k".into(),
        data: data.into(),
    }
}

fn matched_rules(set: &RuleSet, event: &Event) -> Vec<String> {
    let mut names: Vec<String> = set
        .matches(event, Origin::Rule)
        .expect("event is usable")
        .into_iter()
        .map(|m| {
            let job = match m {
                Match::Job(job) | Match::RenderFailed { job, .. } => job,
            };
            set.rule(&job.rule_id.expect("rule id"))
                .expect("rule")
                .live
                .name
                .clone()
        })
        .collect();
    names.sort();
    names
}
