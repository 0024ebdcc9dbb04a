//! Auto-purge of the projections by age and by row count, with 0 meaning unlimited.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use mih_shared::ServiceName;

use crate::harness::TestHub;

async fn hub(retention: &str) -> (TestHub, PgPool) {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api])
        .toml(&format!("[retention]\n{retention}"))
        .start()
        .await;
    let db = PgPool::connect(hub.config.database.url.expose())
        .await
        .expect("test database");
    (hub, db)
}

async fn delivery(db: &PgPool, started_at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO deliveries (job_id, attempt, service, origin, status, started_at, duration_ms)
         VALUES ($1, 1, 'sis', 'rule', 'delivered', $2, 5)",
    )
    .bind(Uuid::now_v7())
    .bind(started_at)
    .execute(db)
    .await
    .expect("delivery row");
}

async fn dead_letter(db: &PgPool, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO dead_letters (job_id, service, origin, stage, reason, attempts, job, dead_lettered_at)
         VALUES ($1, 'sis', 'rule', 'delivery', 'HTTP 400', 1, '{}', $2)",
    )
    .bind(Uuid::now_v7())
    .bind(at)
    .execute(db)
    .await
    .expect("dead letter row");
}

async fn rollup(db: &PgPool, minute: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO delivery_rollups (minute, service, rule_key, delivered, latency_buckets)
         VALUES ($1, 'sis', '', 1, '{}')",
    )
    .bind(minute)
    .execute(db)
    .await
    .expect("rollup row");
}

async fn count(db: &PgPool, table: &str) -> i64 {
    let statement = format!("SELECT count(*) FROM {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(statement.as_str()))
        .fetch_one(db)
        .await
        .expect("count")
}

async fn oldest(db: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT min(started_at) FROM deliveries")
        .fetch_one(db)
        .await
        .expect("oldest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_and_rows_beyond_the_limit_are_purged_in_batches() {
    let (hub, db) = hub(r#"interval = "200ms"
           deliveries_max_age = "30days"
           deliveries_max_rows = 250
           dead_letters_max_age = "7days"
           dead_letters_max_rows = 0
           rollups_max_age = "0s"
           rollups_max_rows = 0
           batch_size = 100"#)
    .await;
    let now = Utc::now();
    // 40 deliveries too old, 300 recent ones of which the 50 oldest are beyond the limit.
    for i in 0..40 {
        delivery(
            &db,
            now - chrono::Duration::days(40) - chrono::Duration::minutes(i),
        )
        .await;
    }
    for i in 0..300 {
        delivery(&db, now - chrono::Duration::minutes(i)).await;
    }
    for day in [1, 2, 8, 9, 30] {
        dead_letter(&db, now - chrono::Duration::days(day)).await;
    }
    // Rollups have no limit (0): even a year-old one stays.
    rollup(&db, now - chrono::Duration::days(365)).await;

    mih_testkit::eventually(Duration::from_secs(20), || async {
        let (deliveries, dead) = (
            count(&db, "deliveries").await,
            count(&db, "dead_letters").await,
        );
        if deliveries == 250 && dead == 2 {
            Ok(())
        } else {
            Err(format!("{deliveries} deliveries, {dead} dead letters"))
        }
    })
    .await
    .expect("purged");
    // The newest 250 are the ones kept.
    let kept_from = oldest(&db).await;
    assert!(
        kept_from > now - chrono::Duration::minutes(251),
        "{kept_from}"
    );
    assert_eq!(count(&db, "delivery_rollups").await, 1, "0 means unlimited");
    hub.stop().await;
}

#[tokio::test]
async fn a_purge_reports_what_it_deleted() {
    let (hub, db) = hub(r#"interval = "1h""#).await;
    let now = Utc::now();
    for i in 0..5 {
        delivery(&db, now - chrono::Duration::days(31 + i)).await;
    }
    delivery(&db, now).await;
    let mut settings = hub.config.retention.clone();
    settings.batch_size = 2;
    let purged = mih_api::retention::purge(&db, &settings)
        .await
        .expect("purge");
    assert_eq!(purged.total(), 5);
    assert!(purged.by_table.contains(&("deliveries", 5)));
    assert_eq!(count(&db, "deliveries").await, 1);
    let again = mih_api::retention::purge(&db, &settings)
        .await
        .expect("purge");
    assert_eq!(again.total(), 0);
    hub.stop().await;
}

async fn period_rollup(db: &PgPool, width_s: i32, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO delivery_period_rollups (width_s, at, service, rule_key, delivered)
         VALUES ($1, $2, 'sis', '', 1)",
    )
    .bind(width_s)
    .bind(at)
    .execute(db)
    .await
    .expect("period rollup row");
    sqlx::query(
        "INSERT INTO delivery_period_latency (width_s, at, service, rule_key, bucket, samples)
         VALUES ($1, $2, 'sis', '', 5, 1)",
    )
    .bind(width_s)
    .bind(at)
    .execute(db)
    .await
    .expect("period latency row");
}

#[tokio::test]
async fn statistics_of_every_period_width_are_purged_by_the_rollups_age() {
    let (hub, db) = hub(r#"interval = "1h"
           rollups_max_age = "30days""#)
    .await;
    let now = Utc::now();
    for at in [now - chrono::Duration::days(40), now] {
        rollup(&db, at).await;
        for width in [900, 86_400] {
            period_rollup(&db, width, at).await;
        }
    }
    let purged = mih_api::retention::purge(&db, &hub.config.retention)
        .await
        .expect("purge");
    for table in [
        "delivery_rollups",
        "delivery_period_rollups",
        "delivery_period_latency",
    ] {
        let expected: u64 = if table == "delivery_rollups" { 1 } else { 2 };
        assert!(
            purged.by_table.contains(&(table, expected)),
            "{table}: {:?}",
            purged.by_table
        );
        assert_eq!(
            count(&db, table).await,
            i64::try_from(expected).expect("small"),
            "{table}"
        );
    }
    hub.stop().await;
}
