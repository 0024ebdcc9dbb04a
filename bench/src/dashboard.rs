//! The dashboard over a large delivery log: the overview's figures and filtered searches of
//! the log, each answered over HTTP by a running api with 1,000,000 deliveries in it.
//!
//! The log is seeded straight into PostgreSQL (one `INSERT … SELECT generate_series`), with
//! rollups computed from the rows exactly as the recorder keeps them (per minute, service and
//! rule, the same latency histogram), a few circuit changes, and a dead letter for every
//! permanent failure. The services and rules are created through the API first, so the pages
//! list them as they would. Then every request is sent `--warmups` times and measured
//! `--samples` times, one after another, as a browser or a script would send it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use mih_testkit::{ADMIN_TOKEN, MihProcesses, NatsServer, Output, TestDatabase};

use crate::process;
use crate::report::{Row, quantile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delivery attempts seeded into the log, over the last 7 days.
    #[arg(long, default_value_t = 1_000_000)]
    deliveries: i64,
    /// Measured requests per scenario.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Unmeasured requests before each scenario.
    #[arg(long, default_value_t = 3)]
    warmups: usize,
    /// Stop a scenario's measured requests after this many seconds (at least 5 are sent):
    /// a request that takes seconds says what it has to say in a few samples.
    #[arg(long, default_value_t = 30)]
    budget: u64,
}

/// The services, as an integration hub of a university would have them.
const SERVICES: [&str; 10] = [
    "sis-sync",
    "hr-directory",
    "crm",
    "lrs-xapi",
    "slack-alerts",
    "library",
    "payments",
    "analytics",
    "proctoring",
    "sms-gateway",
];

/// 40 Moodle event names, the commonest first (the seed favours the first ones).
const EVENT_NAMES: [&str; 40] = [
    r"\core\event\user_loggedin",
    r"\core\event\course_viewed",
    r"\mod_quiz\event\attempt_submitted",
    r"\core\event\user_enrolment_created",
    r"\mod_assign\event\assessable_submitted",
    r"\core\event\user_graded",
    r"\core\event\course_module_completion_updated",
    r"\mod_forum\event\post_created",
    r"\core\event\user_created",
    r"\core\event\user_updated",
    r"\mod_quiz\event\attempt_started",
    r"\mod_assign\event\submission_graded",
    r"\core\event\course_completed",
    r"\mod_forum\event\discussion_created",
    r"\core\event\user_enrolment_deleted",
    r"\core\event\role_assigned",
    r"\core\event\role_unassigned",
    r"\mod_scorm\event\sco_launched",
    r"\mod_lesson\event\lesson_ended",
    r"\core\event\badge_awarded",
    r"\core\event\course_created",
    r"\core\event\course_updated",
    r"\core\event\group_member_added",
    r"\core\event\group_member_removed",
    r"\mod_feedback\event\response_submitted",
    r"\mod_choice\event\answer_created",
    r"\mod_h5pactivity\event\statement_received",
    r"\core\event\user_deleted",
    r"\core\event\user_password_updated",
    r"\core\event\cohort_member_added",
    r"\core\event\course_section_created",
    r"\core\event\course_module_created",
    r"\mod_wiki\event\page_updated",
    r"\mod_glossary\event\entry_created",
    r"\mod_workshop\event\assessable_uploaded",
    r"\core\event\competency_user_competency_rated",
    r"\core\event\message_sent",
    r"\core\event\calendar_event_created",
    r"\mod_data\event\record_created",
    r"\core\event\grade_item_updated",
];

/// Rules: 30, rule `i` of service `i % 10`; rule `i` handles event name `i`, and rules 0–9
/// also names 30–39, so each of the 40 names has one rule.
const RULES: usize = 30;

/// The latency histogram's lower bounds, computed exactly as
/// `services/api/src/recorder/histogram.rs` computes them (that module is private to the api;
/// keep the two in step): one bucket per ms below 20 ms, then buckets `lo / 20` wide up to
/// 10 minutes, then one overflow bucket.
fn histogram_lower_bounds() -> Vec<i64> {
    const EXACT_BELOW: i64 = 20;
    const LOG_CEILING: i64 = 600_000;
    let next = |lo: i64| {
        if lo < EXACT_BELOW {
            lo + 1
        } else {
            lo + lo / 20
        }
    };
    let mut bounds = Vec::new();
    let mut lo = 0;
    while lo < LOG_CEILING {
        bounds.push(lo);
        lo = next(lo);
    }
    bounds.push(lo);
    bounds
}

/// The `mih` binary next to this one (both built by the same `cargo build`).
fn mih_binary() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name("mih");
    if !path.is_file() {
        bail!(
            "{} not found: build both with `cargo build --release -p mih -p mih-bench`",
            path.display()
        );
    }
    Ok(path)
}

/// NATS, a fresh database and `mih run --service api`. (`BenchHub` keeps its database to
/// itself; this benchmark writes into it.)
struct Hub {
    _nats: NatsServer,
    db: TestDatabase,
    mih: tokio::process::Child,
    processes: MihProcesses,
}

impl Hub {
    async fn start() -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let db = TestDatabase::create().await?;
        let log_level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
        let mut processes = MihProcesses::new(mih_binary()?, &nats.url(), db.url(), &log_level);
        processes.listen(&["api"])?;
        let output = if std::env::var_os("BENCH_LOG").is_some() {
            Output::Inherit
        } else {
            Output::ErrorsOnly
        };
        let mih = processes.spawn(&["api"], &output).context("starting mih")?;
        processes
            .wait_ready("api", Duration::from_secs(30))
            .await
            .context("api did not become ready")?;
        Ok(Self {
            _nats: nats,
            db,
            mih,
            processes,
        })
    }

    fn url(&self, path: &str) -> String {
        self.processes.url("api", path)
    }
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let hub = Hub::start().await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let rules = create_config(&hub, &http).await?;
    let mut db = PgConnection::connect(hub.db.url()).await?;
    let seeded = seed(&mut db, &rules, args.deliveries).await?;
    eprintln!(
        "seeded {} deliveries in {:.1} s (rows {:.1} s, rollups {:.1} s, vacuum analyze {:.1} s)",
        args.deliveries,
        seeded.total.as_secs_f64(),
        seeded.rows.as_secs_f64(),
        seeded.rollups.as_secs_f64(),
        seeded.analyze.as_secs_f64()
    );
    let session = login(&hub, &http).await?;
    let scenarios = scenarios(&mut db, &rules).await?;
    drop(db);

    let mut rows = Vec::new();
    for scenario in &scenarios {
        rows.push(measure(&hub, &http, &session, scenario, args).await?);
        // Page 2 of a search: the cursor its first page gave.
        if let Some(next) = scenario.page_two {
            let second = Scenario {
                name: format!("{}, page 2", scenario.name),
                path: next_page(&hub, &http, &session, scenario, next).await?,
                dashboard: scenario.dashboard,
                page_two: None,
            };
            rows.push(measure(&hub, &http, &session, &second, args).await?);
        }
    }
    Ok(rows)
}

/// Creates the services and rules through the API; the rules' ids and services, in order.
async fn create_config(hub: &Hub, http: &reqwest::Client) -> anyhow::Result<Vec<(Uuid, String)>> {
    let post = |path: &str, body: Value| {
        http.post(hub.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    for (i, name) in SERVICES.iter().enumerate() {
        let answer = post(
            "/api/v1/services",
            json!({"name": name, "transport": {"kind": "rest", "base_url": format!("http://127.0.0.1:9/{i}/")}}),
        )
        .await?;
        if !answer.status().is_success() {
            bail!("creating service {name}: {}", answer.text().await?);
        }
    }
    let mut rules = Vec::with_capacity(RULES);
    for i in 0..RULES {
        let service = SERVICES[i % SERVICES.len()];
        let mut events = vec![EVENT_NAMES[i]];
        if i + RULES < EVENT_NAMES.len() {
            events.push(EVENT_NAMES[i + RULES]);
        }
        let answer = post(
            "/api/v1/rules",
            json!({
                "name": format!("{service}: rule {i}"),
                "events": events,
                "service": service,
                "condition": "courseid > 0",
                "target": {"kind": "rest", "method": "POST", "path": "/moodle/{{courseid}}"},
                "body": r#"{"user": {{userid}}, "course": {{courseid}}, "event": "{{eventname}}"}"#,
            }),
        )
        .await?;
        if !answer.status().is_success() {
            bail!("creating rule {i}: {}", answer.text().await?);
        }
        let created: Value = answer.json().await?;
        let id = created["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .with_context(|| format!("rule {i} created without an id: {created}"))?;
        rules.push((id, service.to_owned()));
    }
    Ok(rules)
}

struct Seeded {
    total: Duration,
    rows: Duration,
    rollups: Duration,
    analyze: Duration,
}

/// The delivery log, its rollups, circuit changes and dead letters.
async fn seed(
    db: &mut PgConnection,
    rules: &[(Uuid, String)],
    deliveries: i64,
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    // Which rule handles each event name (see RULES).
    let pair_rule: Vec<Uuid> = (0..EVENT_NAMES.len())
        .map(|k| rules[if k < RULES { k } else { k - RULES }].0)
        .collect();
    let pair_service: Vec<String> = (0..EVENT_NAMES.len())
        .map(|k| rules[if k < RULES { k } else { k - RULES }].1.clone())
        .collect();
    let names: Vec<String> = EVENT_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let services: Vec<String> = SERVICES.iter().map(|s| (*s).to_owned()).collect();
    // One row per attempt. 2 % are facade calls (no rule, no event); the rest pick an event
    // name, the commonest most often (random()^1.7 skews towards the first names). The
    // proctoring service fails more than the others. Retried attempts (failed_retryable,
    // timeout) are attempts 1–4 of their job; the request is on attempt 1 only. Rows go in
    // in time order, as the recorder writes them, so the table's physical order is a real
    // log's.
    sqlx::query(
        "INSERT INTO deliveries (job_id, attempt, service, rule_id, event_id, source, eventname, \
           origin, status, started_at, duration_ms, response_status, response_excerpt, error, \
           trace_id, replay_of, request, recorded_at) \
         SELECT gen_random_uuid(), attempt, service, rule_id, \
           CASE WHEN facade THEN NULL ELSE gen_random_uuid() END, \
           CASE WHEN facade THEN NULL ELSE 'moodle' END, eventname, \
           CASE WHEN facade THEN 'facade' ELSE 'rule' END, status, started_at, duration_ms, \
           CASE status WHEN 'delivered' THEN (ARRAY[200, 201, 202, 204])[1 + g % 4] \
             WHEN 'failed_retryable' THEN (ARRAY[500, 502, 503, 429])[1 + g % 4] \
             WHEN 'failed_permanent' THEN (ARRAY[400, 404, 422])[1 + g % 3] END, \
           CASE status \
             WHEN 'delivered' THEN '{\"ok\":true,\"id\":' || g || '}' \
             WHEN 'failed_retryable' THEN '<html><head><title>503 Service Unavailable</title>\
</head><body><h1>Service Unavailable</h1><p>upstream connect error or disconnect/reset \
before headers. reset reason: connection failure</p></body></html>' \
             WHEN 'failed_permanent' THEN '{\"error\":\"invalid_user\",\"message\":\"User ' \
               || (g % 50000) || ' not found in the directory\"}' END, \
           CASE status \
             WHEN 'failed_retryable' THEN 'HTTP ' || (ARRAY[500, 502, 503, 429])[1 + g % 4] \
               || ' from ' || service || ': the target is unavailable, retrying' \
             WHEN 'timeout' THEN 'no response from ' || service || ' within 10 s' \
             WHEN 'failed_permanent' THEN 'HTTP ' || (ARRAY[400, 404, 422])[1 + g % 3] \
               || ' from ' || service || ': the target refused the request: user ' \
               || (g % 50000) || ' not found' END, \
           md5(g::text), NULL, \
           CASE WHEN attempt = 1 THEN jsonb_build_object('transport', 'http', \
             'method', 'POST', 'path', '/moodle/' || (g % 900 + 2), \
             'headers', jsonb_build_array(jsonb_build_object('name', 'X-Mih-Event', \
               'value', coalesce(eventname, 'facade'))), \
             'body', '{\"user\": ' || (g % 50000) || ', \"course\": ' || (g % 900 + 2) \
               || ', \"event\": \"' || coalesce(eventname, '') || '\"}', \
             'content_type', 'application/json') END, \
           started_at + duration_ms * interval '1 ms' \
         FROM ( \
           SELECT g, facade, attempt, status, started_at, \
             CASE WHEN facade THEN ($4::text[])[1 + g % 10] ELSE ($2::text[])[pair] END AS service, \
             CASE WHEN facade THEN NULL ELSE ($1::uuid[])[pair] END AS rule_id, \
             CASE WHEN facade THEN NULL ELSE ($3::text[])[pair] END AS eventname, \
             CASE status \
               WHEN 'delivered' THEN 25 + floor(600 * r3 ^ 4) \
               WHEN 'timeout' THEN 10000 + floor(40 * r3) \
               WHEN 'failed_retryable' THEN 5 + floor(2500 * r3 ^ 2) \
               ELSE 40 + floor(300 * r3) END::bigint AS duration_ms \
           FROM ( \
             SELECT g, r1 < 0.02 AS facade, 1 + floor(40 * r2 ^ 1.7)::int AS pair, r3, \
               now() - r4 * interval '7 days' AS started_at, \
               CASE WHEN s < 0.95 THEN 'delivered' WHEN s < 0.975 THEN 'failed_retryable' \
                 WHEN s < 0.99 THEN 'timeout' ELSE 'failed_permanent' END AS status, \
               CASE WHEN s >= 0.95 AND s < 0.99 THEN 1 + g % 4 ELSE 1 END AS attempt \
             FROM ( \
               SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4, \
                 CASE WHEN g % 10 = 8 THEN random() * 0.9 + 0.1 ELSE random() END AS s \
               FROM generate_series(1, $5::int) AS g \
             ) AS drawn \
           ) AS chosen \
         ) AS attempts ORDER BY started_at",
    )
    .bind(&pair_rule)
    .bind(&pair_service)
    .bind(&names)
    .bind(&services)
    .bind(i32::try_from(deliveries).context("--deliveries is too large")?)
    .execute(&mut *db)
    .await
    .context("seeding deliveries")?;
    let rows = started.elapsed();

    // The rollups, as the recorder keeps them: per minute (UTC), service and rule ('' for no
    // rule); latency counts only attempts that went out, in the histogram's buckets (1-based:
    // width_bucket over the lower bounds gives the same index as `histogram::bucket_of` + 1).
    let rollups_started = Instant::now();
    sqlx::query(
        "CREATE FUNCTION pg_temp.mih_histogram(idx int[], cnt bigint[], n int) RETURNS int[] \
         LANGUAGE plpgsql IMMUTABLE AS $$ \
         DECLARE h int[] := array_fill(0, ARRAY[n]); k int; \
         BEGIN \
           FOR k IN 1 .. coalesce(array_length(idx, 1), 0) LOOP \
             IF idx[k] IS NOT NULL THEN h[idx[k]] := h[idx[k]] + cnt[k]; END IF; \
           END LOOP; \
           RETURN h; \
         END $$",
    )
    .execute(&mut *db)
    .await?;
    let bounds = histogram_lower_bounds();
    let buckets = i32::try_from(bounds.len())?;
    sqlx::query(
        "INSERT INTO delivery_rollups (minute, service, rule_key, delivered, failed_retryable, \
           failed_permanent, timeout, circuit_open, latency_sum_ms, latency_max_ms, latency_buckets) \
         SELECT minute, service, rule_key, sum(delivered), sum(failed_retryable), \
           sum(failed_permanent), sum(timeout), sum(circuit_open), sum(latency_sum), \
           max(latency_max), pg_temp.mih_histogram(array_agg(bucket), array_agg(timed), $2) \
         FROM ( \
           SELECT date_trunc('minute', started_at, 'UTC') AS minute, service, \
             coalesce(rule_id::text, '') AS rule_key, \
             CASE WHEN status <> 'circuit_open' THEN width_bucket(duration_ms, $1::bigint[]) END \
               AS bucket, \
             count(*) FILTER (WHERE status = 'delivered') AS delivered, \
             count(*) FILTER (WHERE status = 'failed_retryable') AS failed_retryable, \
             count(*) FILTER (WHERE status = 'failed_permanent') AS failed_permanent, \
             count(*) FILTER (WHERE status = 'timeout') AS timeout, \
             count(*) FILTER (WHERE status = 'circuit_open') AS circuit_open, \
             count(*) FILTER (WHERE status <> 'circuit_open') AS timed, \
             coalesce(sum(duration_ms) FILTER (WHERE status <> 'circuit_open'), 0) AS latency_sum, \
             coalesce(max(duration_ms) FILTER (WHERE status <> 'circuit_open'), 0) AS latency_max \
           FROM deliveries GROUP BY 1, 2, 3, 4 \
         ) AS per_bucket GROUP BY 1, 2, 3",
    )
    .bind(&bounds)
    .bind(buckets)
    .execute(&mut *db)
    .await
    .context("seeding rollups")?;
    // The period rollups, derived from the minutes by the statements that do it when a hub is
    // upgraded (their tables are still empty here, as they are then).
    sqlx::raw_sql(include_str!(
        "../../migrations/0010_delivery_period_rollups_from_minutes.sql"
    ))
    .execute(&mut *db)
    .await
    .context("seeding period rollups")?;
    let rollups = rollups_started.elapsed();

    // Circuits: proctoring opened and closed again a few times, payments once.
    let now = Utc::now();
    let mut revision = 0_i64;
    for (service, hours_ago) in [
        ("proctoring", 150),
        ("proctoring", 100),
        ("proctoring", 30),
        ("proctoring", 5),
        ("payments", 60),
    ] {
        for (state, minutes) in [("open", 0), ("half_open", 1), ("closed", 2)] {
            revision += 1;
            sqlx::query(
                "INSERT INTO circuit_changes (service, revision, state, changed_at, \
                 consecutive_failures, last_error) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(service)
            .bind(revision)
            .bind(state)
            .bind(now - TimeDelta::hours(hours_ago) + TimeDelta::minutes(minutes))
            .bind(if state == "closed" { 0 } else { 5 })
            .bind((state != "closed").then(|| format!("no response from {service} within 10 s")))
            .execute(&mut *db)
            .await?;
        }
    }
    // Permanent failures of rule jobs end in dead letters.
    sqlx::query(
        "INSERT INTO dead_letters (job_id, service, rule_id, event_id, source, eventname, origin, \
           stage, reason, attempts, job, last_outcome, dead_lettered_at) \
         SELECT job_id, service, rule_id, event_id, source, eventname, origin, 'delivery', \
           'permanent failure', attempt, \
           jsonb_build_object('job_id', job_id, 'service', service, 'request', request), \
           jsonb_build_object('status', status, 'error', error, \
             'response_status', response_status), started_at + duration_ms * interval '1 ms' \
         FROM deliveries WHERE status = 'failed_permanent' AND origin = 'rule'",
    )
    .execute(&mut *db)
    .await
    .context("seeding dead letters")?;

    // What autovacuum would have done by the time a log is this large.
    let analyze_started = Instant::now();
    sqlx::query(
        "VACUUM (ANALYZE) deliveries, delivery_rollups, delivery_period_rollups, \
         delivery_period_latency, dead_letters, circuit_changes",
    )
    .execute(&mut *db)
    .await?;
    Ok(Seeded {
        total: started.elapsed(),
        rows,
        rollups,
        analyze: analyze_started.elapsed(),
    })
}

/// Logs in as a browser does: the form's CSRF cookie, then the token; the session cookie.
async fn login(hub: &Hub, http: &reqwest::Client) -> anyhow::Result<String> {
    let form = http.get(hub.url("/login")).send().await?;
    let csrf = cookie(form.headers(), "mih_login").context("GET /login set no mih_login")?;
    let body = format!(
        "token={}&csrf={}&next=%2F",
        percent_encode(ADMIN_TOKEN),
        percent_encode(&csrf)
    );
    let answer = http
        .post(hub.url("/login"))
        .header("cookie", format!("mih_login={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let session = cookie(answer.headers(), "mih_session")
        .with_context(|| format!("POST /login answered {} without a session", answer.status()))?;
    Ok(format!("mih_session={session}"))
}

/// The value of the cookie `name` among a response's Set-Cookie headers.
fn cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// Percent-encodes everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Scenario {
    name: String,
    path: String,
    /// A dashboard page (session cookie) rather than the API (bearer token).
    dashboard: bool,
    /// For searches: measure page 2 as well, following the cursor (the API's `next_cursor`
    /// or the page's "next" link).
    page_two: Option<PageTwo>,
}

#[derive(Clone, Copy)]
enum PageTwo {
    Api,
    Dashboard,
}

/// What is measured, with filter values taken from the seeded log.
async fn scenarios(
    db: &mut PgConnection,
    rules: &[(Uuid, String)],
) -> anyhow::Result<Vec<Scenario>> {
    let now = Utc::now();
    let rfc = |at: chrono::DateTime<Utc>| percent_encode(&at.to_rfc3339());
    let api = |name: &str, path: String| Scenario {
        name: name.to_owned(),
        path,
        dashboard: false,
        page_two: None,
    };
    let page = |name: &str, path: String| Scenario {
        name: name.to_owned(),
        path,
        dashboard: true,
        page_two: None,
    };
    let with_two = |mut s: Scenario, how: PageTwo| {
        s.page_two = Some(how);
        s
    };
    // A rule of the busiest service, and an event name in the middle of the popularity list.
    let service = rules[0].1.as_str();
    let rule = rules[5].0;
    let eventname = EVENT_NAMES[12];
    let (rule_count, name_count): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM deliveries WHERE rule_id = $1), \
         (SELECT count(*) FROM deliveries WHERE eventname = $2)",
    )
    .bind(rule)
    .bind(eventname)
    .fetch_one(&mut *db)
    .await?;
    eprintln!("rule {rule}: {rule_count} attempts; {eventname}: {name_count} attempts");
    let mut list = Vec::new();
    for (label, window) in [("1h", 1), ("24h", 24), ("7d", 24 * 7)] {
        list.push(api(
            &format!("GET /api/v1/stats, {label}"),
            format!(
                "/api/v1/stats?from={}&to={}",
                rfc(now - TimeDelta::hours(window)),
                rfc(now)
            ),
        ));
    }
    list.push(api(
        "GET /api/v1/stats, 7d, one service",
        format!(
            "/api/v1/stats?from={}&service={service}",
            rfc(now - TimeDelta::days(7))
        ),
    ));
    for window in ["1h", "24h", "7d"] {
        list.push(page(
            &format!("GET /?window={window}"),
            format!("/?window={window}"),
        ));
        list.push(page(
            &format!("GET /overview/live?window={window}"),
            format!("/overview/live?window={window}"),
        ));
    }
    let day_ago = rfc(now - TimeDelta::hours(24));
    let searches = [
        ("deliveries?service", format!("service={service}")),
        (
            "deliveries?service&status=failed_permanent",
            format!("service={service}&status=failed_permanent"),
        ),
        ("deliveries?rule_id", format!("rule_id={rule}")),
        (
            "deliveries?eventname",
            format!("eventname={}", percent_encode(eventname)),
        ),
        (
            "deliveries?q=not found&from=24h ago",
            format!("q={}&from={day_ago}", percent_encode("not found")),
        ),
        (
            "deliveries?status=timeout&from&to (2 d)",
            format!(
                "status=timeout&from={}&to={}",
                rfc(now - TimeDelta::hours(72)),
                rfc(now - TimeDelta::hours(24))
            ),
        ),
    ];
    for (name, query) in searches {
        list.push(with_two(
            api(
                &format!("GET /api/v1/{name}"),
                format!("/api/v1/deliveries?{query}"),
            ),
            PageTwo::Api,
        ));
    }
    list.push(with_two(
        page(
            "GET /deliveries?service&status=failed_retryable (page)",
            format!("/deliveries?service={service}&status=failed_retryable"),
        ),
        PageTwo::Dashboard,
    ));
    list.push(with_two(
        page(
            "GET /deliveries?status=timeout (page)",
            "/deliveries?status=timeout".to_owned(),
        ),
        PageTwo::Dashboard,
    ));
    Ok(list)
}

fn request(
    hub: &Hub,
    http: &reqwest::Client,
    session: &str,
    dashboard: bool,
    path: &str,
) -> reqwest::RequestBuilder {
    let request = http.get(hub.url(path));
    if dashboard {
        request.header("cookie", session)
    } else {
        request.bearer_auth(ADMIN_TOKEN)
    }
}

/// The path of a search's second page.
async fn next_page(
    hub: &Hub,
    http: &reqwest::Client,
    session: &str,
    scenario: &Scenario,
    how: PageTwo,
) -> anyhow::Result<String> {
    let answer = request(hub, http, session, scenario.dashboard, &scenario.path)
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!("{}: {}", scenario.name, answer.status());
    }
    match how {
        PageTwo::Api => {
            let page: Value = answer.json().await?;
            let cursor = page["next_cursor"]
                .as_str()
                .with_context(|| format!("{}: no next_cursor", scenario.name))?;
            Ok(format!(
                "{}&cursor={}",
                scenario.path,
                percent_encode(cursor)
            ))
        }
        PageTwo::Dashboard => {
            let html = answer.text().await?;
            // Handlebars escapes `=` and `&` in the link.
            let html = html.replace("&#x3D;", "=").replace("&amp;", "&");
            let start = html
                .find("/deliveries?cursor=")
                .with_context(|| format!("{}: no link to the next page", scenario.name))?;
            let end = html[start..]
                .find('"')
                .map_or(html.len(), |end| start + end);
            Ok(html[start..end].to_owned())
        }
    }
}

/// `--warmups` requests, then `--samples` measured ones, one at a time.
async fn measure(
    hub: &Hub,
    http: &reqwest::Client,
    session: &str,
    scenario: &Scenario,
    args: &Args,
) -> anyhow::Result<Row> {
    let pid = hub.mih.id().context("mih is not running")?;
    let mut items = 0;
    // Slow answers are warm after one request.
    let warmups = if scenario.name.contains("7d") {
        1
    } else {
        args.warmups
    };
    for _ in 0..warmups {
        let answer = request(hub, http, session, scenario.dashboard, &scenario.path)
            .send()
            .await?;
        let status = answer.status();
        let body = answer.bytes().await?;
        if !status.is_success() {
            bail!(
                "{}: {status}: {}",
                scenario.name,
                String::from_utf8_lossy(&body)
            );
        }
        if !scenario.dashboard
            && let Ok(page) = serde_json::from_slice::<Value>(&body)
        {
            items = page["items"].as_array().map_or(0, Vec::len);
        }
    }
    let cpu_before = process::cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let mut times = Vec::with_capacity(args.samples);
    for taken in 0..args.samples {
        if taken >= 5 && started.elapsed() > Duration::from_secs(args.budget) {
            break;
        }
        let sent = Instant::now();
        let answer = request(hub, http, session, scenario.dashboard, &scenario.path)
            .send()
            .await?;
        let status = answer.status();
        // The whole body, as a browser waits for it.
        let _body = answer.bytes().await?;
        times.push(sent.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("{}: {status}", scenario.name);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process::cpu_time(pid).unwrap_or_default() - cpu_before;
    times.sort_by(f64::total_cmp);
    let (_, peak) = process::memory_mib(pid).unwrap_or((0.0, 0.0));
    eprintln!(
        "{:<62} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms",
        scenario.name,
        quantile(&times, 0.5),
        quantile(&times, 0.95),
        times.last().copied().unwrap_or(0.0)
    );
    #[allow(clippy::cast_precision_loss)]
    let per_second = times.len() as f64 / seconds;
    Ok(Row {
        scenario: scenario.name.clone(),
        events: items,
        requests: Some(times.len()),
        concurrency: 1,
        seconds,
        events_per_sec: per_second,
        request_p50_ms: Some(quantile(&times, 0.5)),
        request_p95_ms: Some(quantile(&times, 0.95)),
        request_p99_ms: Some(quantile(&times, 0.99)),
        request_max_ms: times.last().copied(),
        mih_cpu_cores: cpu.as_secs_f64() / seconds,
        mih_peak_rss_mib: peak,
        ..Row::default()
    })
}
