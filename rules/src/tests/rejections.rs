//! `decide` names the check that refused an event as a typed [`Rejection`], and an explanation
//! words each one as preview has always shown it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use mih_shared::live::{AmqpTransport, LiveRule, LiveService, Transport};
use mih_shared::messages::{Event, Origin};
use mih_shared::names::ServiceSlug;

use super::{config, event, post, rest, rule, service};
use crate::budget::Exhausted;
use crate::condition::{self, variables};
use crate::prepared::Prepared;
use crate::{CompiledRule, Match, Rejection, RuleSet};

type Services = BTreeMap<ServiceSlug, Arc<LiveService>>;

fn amqp() -> Transport {
    Transport::Amqp(AmqpTransport {
        host: "rabbit".into(),
        port: 5672,
        vhost: "/".into(),
        username: "guest".into(),
        password: None,
        tls: false,
        exchange: "moodle".into(),
        routing_key: "events".into(),
        queue_declare: None,
        response_queue: None,
    })
}

fn services() -> Services {
    RuleSet::build(&config(
        vec![
            service("sis", rest(), true),
            service("off", rest(), false),
            service("bus", amqp(), true),
        ],
        Vec::new(),
    ))
    .services()
    .clone()
}

fn decide<'a>(
    rule: &'a CompiledRule,
    event: &'a Prepared<'_>,
    services: &'a Services,
) -> Result<Match, Rejection<'a>> {
    let root = condition::root();
    let vars = variables(&root, event.fields());
    rule.decide(event, &vars, services, Origin::Rule)
}

/// The check an explanation ends on: (step, passed, detail).
fn last_check(rule: &CompiledRule, event: &Event, services: &Services) -> (String, bool, String) {
    let explanation = rule.explain(event, services);
    let last = explanation.checks.last().expect("checks");
    (last.step.to_owned(), last.passed, last.detail.clone())
}

fn quiz_rule(name: &str) -> LiveRule {
    rule(name, &["\\mod_quiz\\event\\*"], None, "sis", post("/"))
}

#[test]
fn decide_returns_a_typed_rejection_for_each_check() {
    let services = services();
    let quiz = event(json!({
        "eventname": "\\mod_quiz\\event\\attempt_submitted", "courseid": 12, "other": {}
    }));
    let prepared = Prepared::new(&quiz).expect("usable");
    let refused = |live: LiveRule, expected: &dyn Fn(&Rejection<'_>) -> bool, words: &str| {
        let compiled = CompiledRule::compile(Arc::new(live));
        let rejection = decide(&compiled, &prepared, &services).expect_err("refused");
        assert!(
            expected(&rejection),
            "{}: {rejection:?}",
            compiled.live.name
        );
        let step = rejection.step().as_str();
        assert_eq!(rejection.to_string(), words);
        assert_eq!(
            last_check(&compiled, &quiz, &services),
            (step.to_owned(), false, words.to_owned())
        );
    };

    let mut disabled = quiz_rule("disabled");
    disabled.enabled = false;
    refused(
        disabled,
        &|r| *r == Rejection::Disabled,
        "the rule is disabled",
    );

    let mut elsewhere = quiz_rule("elsewhere");
    elsewhere.sources = vec!["elsewhere".parse().expect("id")];
    refused(
        elsewhere,
        &|r| {
            matches!(r, Rejection::SourceMismatch { source, sources }
                if source.as_str() == "moodle" && sources.len() == 1)
        },
        "source `moodle` is not one of [\"elsewhere\"]",
    );

    refused(
        rule("core", &["\\core\\event\\*"], None, "sis", post("/")),
        &|r| {
            matches!(r, Rejection::EventMismatch { name }
                if name.as_str() == "\\mod_quiz\\event\\attempt_submitted")
        },
        "`\\mod_quiz\\event\\attempt_submitted` matches none of the rule's patterns",
    );

    refused(
        rule("nowhere", &["*"], None, "nowhere", post("/")),
        &|r| matches!(r, Rejection::ServiceMissing { service } if service.as_str() == "nowhere"),
        "service `nowhere` does not exist",
    );

    refused(
        rule("off", &["*"], None, "off", post("/")),
        &|r| matches!(r, Rejection::ServiceDisabled { service } if service.as_str() == "off"),
        "service `off` is disabled",
    );

    refused(
        rule("bus", &["*"], None, "bus", post("/")),
        &|r| {
            matches!(r, Rejection::TransportMismatch { service, transport: "amqp", target: "rest" }
                if service.as_str() == "bus")
        },
        "service `bus` is amqp but the rule targets rest",
    );

    refused(
        rule(
            "course-13",
            &["*"],
            Some("courseid == 13"),
            "sis",
            post("/"),
        ),
        &|r| *r == Rejection::ConditionFalse,
        "the condition is false",
    );

    refused(
        rule("missing", &["*"], Some("other.nope == 1"), "sis", post("/")),
        &|r| matches!(r, Rejection::ConditionError(error) if error.contains("nope")),
        "the condition cannot be decided for this event: No such key: nope",
    );

    refused(
        rule("broken", &["*"], Some("courseid =="), "sis", post("/")),
        &|r| matches!(r, Rejection::ConditionBroken { .. }),
        &format!(
            "the condition does not compile: {}",
            condition::Condition::compile("courseid ==").expect_err("does not compile")
        ),
    );

    // The rule that refuses nothing matches.
    let compiled = CompiledRule::compile(Arc::new(quiz_rule("takes-it")));
    assert!(matches!(
        decide(&compiled, &prepared, &services),
        Ok(Match::Job(_))
    ));
}

#[test]
fn a_condition_out_of_its_budget_is_its_own_rejection() {
    let list: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    let condition = format!(
        "other.items.exists(i, [{}].exists(j, i == j + 1000000))",
        list.join(", ")
    );
    let compiled = CompiledRule::compile(Arc::new(rule(
        "looping",
        &["*"],
        Some(&condition),
        "sis",
        post("/"),
    )));
    let items: Vec<u32> = (0..200_000).collect();
    let large = event(json!({"eventname": "\\mod_quiz\\event\\x", "other": {"items": items}}));
    let prepared = Prepared::new(&large).expect("usable");
    let services = services();
    assert_eq!(
        decide(&compiled, &prepared, &services).expect_err("refused"),
        Rejection::OutOfBudget(Exhausted::Steps { limit: 5_000_000 })
    );
}
