//! The overview: is anything failing, where, since when. Figures of a window (1 h, 24 h,
//! 7 d) from the recorder's rollups, the circuits and queues of every service now, refreshed
//! every 10 s by htmx without reloading the page.

use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use mih_dlq::store::filter::DeadLetterFilter;
use mih_shared::names::ServiceSlug;

use super::i18n::{Lang, t};
use super::render::{failure_page, page as render_page, render};
use super::session::Session;
use crate::error::ApiFailure;
use crate::resources::{circuits, stats};
use crate::state::AppState;

/// The windows offered: name, length, message.
const WINDOWS: [(&str, i64, &str); 3] = [
    ("1h", 3_600, "window-1h"),
    ("24h", 86_400, "window-24h"),
    ("7d", 604_800, "window-7d"),
];

#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    window: Option<String>,
}

fn window(query: &WindowQuery) -> (&'static str, i64) {
    WINDOWS
        .iter()
        .find(|(name, _, _)| query.window.as_deref() == Some(*name))
        .map_or((WINDOWS[0].0, WINDOWS[0].1), |(name, seconds, _)| {
            (*name, *seconds)
        })
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<WindowQuery>,
) -> Response {
    let (name, seconds) = window(&query);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    match figures(&state, session.lang, name, seconds).await {
        Ok(mut data) => {
            data["title"] = json!(t(session.lang, "overview-title", None));
            data["page"] = json!("overview");
            data["windows"] = Value::Array(
                WINDOWS
                    .iter()
                    .map(|(value, _, key)| json!({"value": value, "key": key, "selected": *value == name}))
                    .collect(),
            );
            render_page(
                StatusCode::OK,
                "overview",
                session.lang,
                Some(&session),
                &path,
                data,
            )
        }
        Err(failure) => failure_page(&session, &path, &failure),
    }
}

/// The live part alone, for htmx's refresh.
pub async fn live(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<WindowQuery>,
) -> Response {
    let (name, seconds) = window(&query);
    let rendered = match figures(&state, session.lang, name, seconds).await {
        Ok(data) => render("overview_live", session.lang, Some(&session), "/", data),
        Err(failure) => Err(failure.to_string()),
    };
    match rendered {
        Ok(html) => Html(html).into_response(),
        // Keep what is shown; the next refresh tries again.
        Err(error) => {
            tracing::warn!(%error, "overview refresh");
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// Everything the live part shows.
async fn figures(
    state: &AppState,
    lang: Lang,
    window: &str,
    seconds: i64,
) -> Result<Value, ApiFailure> {
    let now = Utc::now();
    let from = now - TimeDelta::seconds(seconds);
    let circuits = circuits::all(state).await?;
    // Independent reads, at once: the page answers in the time of the slowest, not the sum.
    let (figures, pending, dead) = tokio::try_join!(
        stats::stats(
            state,
            stats::StatsQuery {
                from: Some(from.to_rfc3339()),
                to: Some(now.to_rfc3339()),
                ..stats::StatsQuery::default()
            },
        ),
        async { Ok(pending_per_service(state, &circuits).await) },
        async {
            mih_dlq::store::letters::count_per_service(&state.db, &DeadLetterFilter::default())
                .await
                .map_err(ApiFailure::from)
        },
    )?;
    let dead: HashMap<String, i64> = dead.into_iter().collect();
    let dead_total: i64 = dead.values().sum();
    let pending_total: u64 = pending.iter().flatten().sum();
    let mut services = Vec::with_capacity(circuits.len());
    let mut open = 0;
    for (circuit, pending) in circuits.iter().zip(pending) {
        if circuit.state != "closed" {
            open += 1;
        }
        services.push(json!({
            "name": circuit.service,
            "state_key": format!("circuit-{}", circuit.state),
            "badge": match circuit.state.as_str() { "closed" => "ok", "open" => "error", _ => "warn" },
            "probe_at": circuit.probe_at.map(|at| at.to_rfc3339()),
            "failures": circuit.consecutive_failures,
            "last_error": circuit.last_error,
            "pending_known": pending.is_some(),
            "pending": pending.unwrap_or(0),
            "dead_letters": dead.get(&circuit.service).copied().unwrap_or(0),
        }));
    }
    let totals = &figures.totals;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let cards = json!({
        "success_known": totals.success_rate.is_some(),
        "success_rate": totals.success_rate.unwrap_or(0.0),
        "per_minute": round(totals.throughput_per_s * 60.0),
        "latency_known": totals.latency.p50_ms.is_some(),
        "p50": totals.latency.p50_ms.map(round),
        "p95": totals.latency.p95_ms.map(round),
        "p99": totals.latency.p99_ms.map(round),
        "dead_letters": dead_total,
        "pending": pending_total,
        "open_circuits": open,
    });
    Ok(json!({
        "live_url": format!("/overview/live?window={window}"),
        "updated": now.to_rfc3339(),
        "cards": cards,
        "charts": charts(lang, &figures),
        "services": services,
    }))
}

/// Jobs of each service waiting in JOBS or being delivered, asked at once; `None` for a
/// service whose consumer no dispatcher has created yet (or when NATS did not answer).
async fn pending_per_service(
    state: &AppState,
    circuits: &[circuits::CircuitView],
) -> Vec<Option<u64>> {
    let Ok(streams) = mih_shared::partition::streams(
        &state.js,
        &state.names,
        mih_shared::partition::Partitioned::Jobs,
        state.partitions,
    )
    .await
    else {
        return vec![None; circuits.len()];
    };
    let streams = &streams;
    futures::future::join_all(circuits.iter().map(|circuit| async move {
        let slug = ServiceSlug::parse(circuit.service.as_str()).ok()?;
        let mut pending = 0u64;
        for (_, stream) in streams {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&state.names.dispatch_consumer(&slug))
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            pending += info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0);
        }
        Some(pending)
    }))
    .await
}

/// The three charts, each with its data for uPlot and the same values as a table.
fn charts(lang: Lang, figures: &stats::Stats) -> Vec<Value> {
    let at: Vec<DateTime<Utc>> = figures.series.iter().map(|p| p.at).collect();
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let chart = |id: &str, title: &str, unit: &str, series: Vec<(&str, Vec<Option<f64>>)>| {
        let labels: Vec<String> = series.iter().map(|(key, _)| t(lang, key, None)).collect();
        let data = json!({
            "title": t(lang, title, None),
            "time_label": t(lang, "chart-table-time", None),
            "unit": unit,
            "x": at.iter().map(DateTime::timestamp).collect::<Vec<_>>(),
            "series": series.iter().zip(&labels).map(|((_, values), label)| json!({"label": label, "values": values})).collect::<Vec<_>>(),
        });
        let rows: Vec<Value> = at
            .iter()
            .enumerate()
            .map(|(i, at)| {
                json!({
                    "at": at.to_rfc3339(),
                    "values": series.iter().map(|(_, values)| values[i].map_or_else(|| "–".to_owned(), |v| v.to_string())).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({"id": id, "title": t(lang, title, None), "data": data.to_string(), "labels": labels, "rows": rows})
    };
    #[allow(clippy::cast_precision_loss)]
    let count = |f: fn(&stats::Figures) -> i64| -> Vec<Option<f64>> {
        figures
            .series
            .iter()
            .map(|p| Some(f(&p.figures) as f64))
            .collect()
    };
    let latency = |f: fn(&stats::Latency) -> Option<f64>| -> Vec<Option<f64>> {
        figures
            .series
            .iter()
            .map(|p| f(&p.figures.latency).map(round))
            .collect()
    };
    vec![
        chart(
            "chart-deliveries",
            "chart-deliveries",
            "count",
            vec![
                ("series-delivered", count(|f| f.delivered)),
                ("series-failed", count(|f| f.failed)),
            ],
        ),
        chart(
            "chart-success-rate",
            "chart-success-rate",
            "%",
            vec![(
                "series-success-rate",
                figures
                    .series
                    .iter()
                    .map(|p| p.figures.success_rate.map(|r| round(r * 100.0)))
                    .collect(),
            )],
        ),
        chart(
            "chart-latency",
            "chart-latency",
            "ms",
            vec![
                ("series-p50", latency(|l| l.p50_ms)),
                ("series-p95", latency(|l| l.p95_ms)),
                ("series-p99", latency(|l| l.p99_ms)),
            ],
        ),
    ]
}
