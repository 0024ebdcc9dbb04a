//! Rule sets against events: which rules match, what they render, how they explain.

use std::sync::Arc;

use serde_json::{Value, json};

use mih_shared::live::{
    AmqpTransport, LiveRule, RuleTarget, SoapTransport, SoapVersion, Transport,
};
use mih_shared::messages::{HttpMethod, HttpRequest, Job, Origin, Request};
use mih_testkit::fixtures;

use super::{config, event, matched_rules, post, rest, rule, service};
use crate::{CompiledRule, Match, RuleSet};

#[test]
fn patterns_conditions_sources_and_switches_decide_together() {
    let mut only_other_source = rule("other-source", &["*"], None, "sis", post("/"));
    only_other_source.sources = vec!["elsewhere".parse().expect("id")];
    let mut disabled = rule("disabled", &["*"], None, "sis", post("/"));
    disabled.enabled = false;
    let set = RuleSet::build(&config(
        vec![service("sis", rest(), true), service("off", rest(), false)],
        vec![
            rule(
                "exact",
                &["\\core\\event\\user_enrolment_created"],
                None,
                "sis",
                post("/"),
            ),
            rule(
                "exact-no-backslash",
                &["core\\event\\user_enrolment_created"],
                None,
                "sis",
                post("/"),
            ),
            rule("component", &["\\core\\event\\*"], None, "sis", post("/")),
            rule(
                "quiz-only",
                &["\\mod_quiz\\event\\*"],
                None,
                "sis",
                post("/"),
            ),
            rule("all", &["*"], None, "sis", post("/")),
            rule(
                "course-12",
                &["*"],
                Some("courseid == 12"),
                "sis",
                post("/"),
            ),
            rule(
                "numeric-string",
                &["*"],
                Some("userid == 14 && relateduserid == 27"),
                "sis",
                post("/"),
            ),
            rule(
                "nested",
                &["*"],
                Some("has(other.enrol) && other.enrol in ['manual', 'self']"),
                "sis",
                post("/"),
            ),
            rule(
                "null-related",
                &["*"],
                Some("relateduserid == null"),
                "sis",
                post("/"),
            ),
            rule(
                "missing-field",
                &["*"],
                Some("other.nope == 1"),
                "sis",
                post("/"),
            ),
            rule("to-disabled-service", &["*"], None, "off", post("/")),
            only_other_source,
            disabled,
        ],
    ));
    let enrolment = event(json!({
        "eventname": "\\core\\event\\user_enrolment_created", "component": "core", "action": "created",
        "target": "user_enrolment", "objecttable": "user_enrolments", "objectid": "4411", "crud": "c",
        "edulevel": 0, "contextid": 187, "contextlevel": 50, "contextinstanceid": 12, "userid": "14",
        "courseid": "12", "relateduserid": "27", "anonymous": 0, "other": {"enrol": "manual"}, "timecreated": 1772008269
    }));
    assert_eq!(
        matched_rules(&set, &enrolment),
        [
            "all",
            "component",
            "course-12",
            "exact",
            "exact-no-backslash",
            "nested",
            "numeric-string"
        ]
    );
    let quiz = event(json!({
        "eventname": "\\mod_quiz\\event\\attempt_submitted", "component": "mod_quiz", "crud": "u",
        "courseid": 57, "userid": 345, "relateduserid": null, "other": null
    }));
    assert_eq!(
        matched_rules(&set, &quiz),
        ["all", "null-related", "quiz-only"]
    );
}

/// Every fixture against a set of rules; the expected jobs come from plain Rust predicates.
#[test]
fn every_fixture_gives_the_expected_jobs() {
    let amqp = Transport::Amqp(AmqpTransport {
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
    });
    let soap = Transport::Soap(SoapTransport {
        endpoint: "https://erp.example/soap".into(),
        wsdl_url: None,
        version: SoapVersion::V11,
        namespace: None,
        ws_security: false,
    });
    let rules = vec![
        rule(
            "users",
            &["\\core\\event\\user_created", "\\core\\event\\user_updated"],
            None,
            "sis",
            post("/users/{{objectid}}"),
        ),
        rule(
            "quiz",
            &["\\mod_quiz\\event\\*"],
            None,
            "bus",
            RuleTarget::Amqp {
                routing_key: Some("quiz.{{other.quizid}}".into()),
                exchange: None,
            },
        ),
        rule(
            "course-12-deletes",
            &["*"],
            Some("courseid == 12 && crud == 'd'"),
            "erp",
            RuleTarget::Soap {
                operation: "Removed".into(),
            },
        ),
        rule(
            "graded",
            &["*"],
            Some("has(other.finalgrade) && other.finalgrade != null && other.finalgrade >= 50.0"),
            "sis",
            post("/grades"),
        ),
    ];
    let set = RuleSet::build(&config(
        vec![
            service("sis", rest(), true),
            service("bus", amqp, true),
            service("erp", soap, true),
        ],
        rules,
    ));
    let mut total = 0;
    for (i, data) in fixtures::moodle_events().into_iter().enumerate() {
        let name = data["eventname"].as_str().unwrap_or_default().to_owned();
        let course = data["courseid"]
            .as_i64()
            .or_else(|| data["courseid"].as_str().and_then(|s| s.parse().ok()));
        let grade = data["other"].get("finalgrade").and_then(Value::as_f64);
        let mut expected = Vec::new();
        if name == "\\core\\event\\user_created" || name == "\\core\\event\\user_updated" {
            expected.push("users");
        }
        if name.starts_with("\\mod_quiz\\event\\") {
            expected.push("quiz");
        }
        if course == Some(12) && data["crud"] == "d" {
            expected.push("course-12-deletes");
        }
        if grade.is_some_and(|g| g >= 50.0) {
            expected.push("graded");
        }
        expected.sort_unstable();
        let got = matched_rules(&set, &event(data.clone()));
        assert_eq!(got, expected, "fixture {i}: {name}");
        total += got.len();
        for found in set.matches(&event(data), Origin::Rule).expect("usable") {
            assert!(
                matches!(found, Match::Job(_)),
                "fixture {i} renders: {found:?}"
            );
        }
    }
    assert!(
        total >= 8,
        "the rule set exercises the fixtures ({total} jobs)"
    );
}

#[test]
fn jobs_carry_rendered_requests_and_derived_ids() {
    let mut with_templates = rule(
        "t",
        &["*"],
        None,
        "sis",
        RuleTarget::Rest {
            method: HttpMethod::Put,
            path: "/users/{{userid}}/{{other.username}}".into(),
        },
    );
    with_templates.body = Some(r#"{"user": "{{userid}}", "who": {{other.username}}, "rule": "{{rule.name}}", "source": "{{event.source}}"}"#.into());
    with_templates
        .headers
        .insert("X-Course".into(), "{{courseid}}".into());
    with_templates.ordering_key = Some("{{userid}}".into());
    let plain = rule("plain", &["*"], None, "sis", post("/"));
    // A fixed path renders without the event's fields; its header still reads them, and `rule`
    // names this rule, not the one rendered before it.
    let mut fixed_path = rule("fixed-path", &["*"], None, "sis", post("/fixed"));
    fixed_path
        .headers
        .insert("X-Rule".into(), "{{rule.name}}-{{userid}}".into());
    let set = RuleSet::build(&config(
        vec![service("sis", rest(), true)],
        vec![with_templates.clone(), plain.clone(), fixed_path.clone()],
    ));
    let e = event(
        json!({"eventname": "\\core\\event\\user_loggedin", "userid": "27", "courseid": 0,
                         "other": {"username": "a b/c\"d"}, "crud": "r"}),
    );
    let jobs: Vec<_> = set
        .matches(&e, Origin::Backfill)
        .expect("usable")
        .into_iter()
        .map(|m| match m {
            Match::Job(job) => job,
            other => panic!("expected a job, got {other:?}"),
        })
        .collect();
    let (templated, request) = http_job_of(&jobs, &with_templates);
    assert_eq!(
        templated.id,
        mih_shared::messages::JobId::for_rule(e.id, with_templates.id)
    );
    assert_eq!(templated.origin, Origin::Backfill);
    assert_eq!(templated.ordering_key.as_deref(), Some("27"));
    assert_eq!(request.method, HttpMethod::Put);
    assert_eq!(request.path, "/users/27/a%20b%2Fc%22d");
    assert_eq!(request.headers[0].value, "0");
    let body: Value =
        serde_json::from_str(request.body.as_deref().unwrap_or_default()).expect("JSON body");
    assert_eq!(
        body,
        json!({"user": "27", "who": "a b/c\"d", "rule": "t", "source": "moodle"})
    );

    let (_, request) = http_job_of(&jobs, &fixed_path);
    assert_eq!(request.path, "/fixed");
    assert_eq!(request.headers[0].value, "fixed-path-27");

    let (_, request) = http_job_of(&jobs, &plain);
    assert_eq!(
        request.body.as_deref(),
        Some(serde_json::to_string(&e.data).expect("json").as_str()),
        "the event as Moodle gave it"
    );
}

/// The job `rule` made, and its HTTP request.
fn http_job_of<'j>(jobs: &'j [Job], rule: &LiveRule) -> (&'j Job, &'j HttpRequest) {
    let job = jobs
        .iter()
        .find(|j| j.rule_id == Some(rule.id))
        .unwrap_or_else(|| panic!("no job of rule {}", rule.name));
    let Request::Http(request) = &job.request else {
        panic!("rule {} made a request that is not HTTP", rule.name)
    };
    (job, request)
}

#[test]
fn render_failures_are_permanent_and_keep_the_unrendered_target() {
    let mut broken = rule("broken", &["*"], None, "sis", post("/x/{{other.missing}}"));
    broken.body = Some(r#"{"a": 1}"#.into());
    let mut not_json = rule("not-json", &["*"], None, "sis", post("/"));
    not_json.body = Some(r#"{"a": {{{other.text}}}}"#.into());
    let set = RuleSet::build(&config(
        vec![service("sis", rest(), true)],
        vec![broken, not_json],
    ));
    let e = event(json!({"eventname": "\\core\\event\\x", "other": {"text": "not json"}}));
    let failures: Vec<String> = set
        .matches(&e, Origin::Rule)
        .expect("usable")
        .into_iter()
        .map(|m| match m {
            Match::RenderFailed { job, reason } => {
                let Request::Http(request) = job.request else {
                    panic!("http")
                };
                format!("{} | {reason}", request.path)
            }
            Match::Job(job) => panic!("expected a failure, got {job:?}"),
        })
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(
        failures[0].starts_with("/x/{{other.missing}} | target.path: variable `other.missing`"),
        "{}",
        failures[0]
    );
    assert!(failures[1].contains("not valid JSON"), "{}", failures[1]);
}

#[test]
fn explanations_say_which_check_decided() {
    let mut r = rule(
        "r",
        &["\\mod_quiz\\event\\*"],
        Some("courseid == 12"),
        "sis",
        post("/"),
    );
    r.sources = vec!["moodle".parse().expect("id")];
    let set = RuleSet::build(&config(vec![service("sis", rest(), true)], vec![r.clone()]));
    let compiled = set.rule(&r.id).expect("rule");
    let wrong_event = compiled.explain(
        &event(json!({"eventname": "\\core\\event\\x", "courseid": 12})),
        set.services(),
    );
    assert!(!wrong_event.matched);
    let last = wrong_event.checks.last().expect("checks");
    assert_eq!((last.step, last.passed), ("event", false));
    assert!(last.detail.contains("matches none"), "{}", last.detail);

    let wrong_course = compiled.explain(
        &event(json!({"eventname": "\\mod_quiz\\event\\x", "courseid": 13})),
        set.services(),
    );
    let last = wrong_course.checks.last().expect("checks");
    assert_eq!((last.step, last.passed), ("condition", false));

    let good = compiled.explain(
        &event(json!({"eventname": "\\mod_quiz\\event\\x", "courseid": "12"})),
        set.services(),
    );
    assert!(good.matched && good.request.is_some());
    let steps: Vec<&str> = good.checks.iter().map(|c| c.step).collect();
    assert_eq!(
        steps,
        [
            "enabled",
            "source",
            "event",
            "service",
            "condition",
            "render"
        ]
    );
}

#[test]
fn broken_rules_report_their_fields() {
    let mut r = rule("r", &["*"], Some("courseid =="), "sis", post("/{{#if}}"));
    r.headers.insert("X-A".into(), "{{a".into());
    let compiled = CompiledRule::compile(Arc::new(r));
    let fields: Vec<&str> = compiled
        .problems()
        .iter()
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(fields, ["condition", "target.path", "headers.X-A"]);
}

#[test]
fn a_condition_out_of_budget_does_not_match_and_explains_why() {
    let list: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    let condition = format!(
        "other.items.exists(i, [{}].exists(j, i == j + 1000000))",
        list.join(", ")
    );
    let r = rule("r", &["*"], Some(&condition), "sis", post("/"));
    let set = RuleSet::build(&config(vec![service("sis", rest(), true)], vec![r.clone()]));
    let items: Vec<u32> = (0..200_000).collect();
    let large = event(json!({"eventname": "\\mod_quiz\\event\\x", "other": {"items": items}}));
    assert!(
        set.matches(&large, Origin::Rule)
            .expect("usable")
            .is_empty()
    );
    let explanation = set
        .rule(&r.id)
        .expect("rule")
        .explain(&large, set.services());
    let last = explanation.checks.last().expect("checks");
    assert_eq!((last.step, last.passed), ("condition", false));
    assert_eq!(
        last.detail,
        "the condition exceeded its evaluation budget (more than 5,000,000 steps) for this event"
    );
    // An ordinary event is decided as usual.
    let small = event(json!({"eventname": "\\mod_quiz\\event\\x", "other": {"items": [1000005]}}));
    assert_eq!(matched_rules(&set, &small), ["r"]);
}

#[test]
fn rules_that_loop_make_their_events_costly_to_match() {
    let plain = rule(
        "plain",
        &["\\core\\event\\user_created"],
        Some("courseid == 12 && other.enrol in ['manual', 'self']"),
        "sis",
        post("/users/{{userid}}"),
    );
    let looping = rule(
        "looping",
        &["\\mod_quiz\\event\\*"],
        Some("other.items.exists(i, i.grade > 50)"),
        "sis",
        post("/"),
    );
    let mut each = rule("each", &["\\mod_assign\\event\\*"], None, "sis", post("/"));
    each.body = Some("[{{~#each other.items}}{{this}}{{/each}}]".into());
    let set = RuleSet::build(&config(
        vec![service("sis", rest(), true)],
        vec![plain, looping, each],
    ));
    let costly = |name: &str| set.may_be_costly(&event(json!({"eventname": name})));
    assert!(!costly("\\core\\event\\user_created"));
    assert!(costly("\\mod_quiz\\event\\attempt_submitted"));
    assert!(costly("\\mod_assign\\event\\submission_created"));
    assert!(
        !costly("\\mod_forum\\event\\post_created"),
        "no candidate rule"
    );
}
