//! The dlq crate's queries against a real PostgreSQL: every statement on `dead_letters` and
//! `dead_letter_operations` is here, so these are their tests (the system suite drives them
//! again through the API and `mih dlq`).

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use mih_dlq::store::filter::DeadLetterFilter;
use mih_dlq::store::{self, letters, operations};
use mih_shared::messages::{DeadLetter, Job, JobId, Origin, Outcome, OutcomeStatus};
use mih_testkit::{TestDatabase, fixtures};

/// A migrated database of its own; keep the first value alive for as long as the pool is used.
async fn database() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create().await.expect("test database");
    let pool = PgPool::connect(database.url()).await.expect("connects");
    mih_shared::db::migrate(&pool).await.expect("migrates");
    (database, pool)
}

/// A job for `service` posting `body` to `/users`.
fn job(service: &str, body: &str) -> Job {
    fixtures::job(service, "/users", body)
}

fn outcome(job: &Job, status: OutcomeStatus, error: Option<&str>) -> Outcome {
    fixtures::outcome(job, status, error, Utc::now())
}

fn dead(job: Job, reason: &str, error: &str, at: DateTime<Utc>) -> DeadLetter {
    fixtures::dead_letter(job, reason, Some(error), at)
}

/// A replay of `original`, as api queues it.
fn replay_of(original: &Job) -> Job {
    Job {
        id: JobId::new_v7(),
        origin: Origin::Replay,
        replay_of: Some(original.id),
        ..original.clone()
    }
}

fn filter(service: &str) -> DeadLetterFilter {
    DeadLetterFilter {
        service: Some(service.to_owned()),
        ..Default::default()
    }
}

async fn ids(db: &PgPool, filter: &DeadLetterFilter) -> Vec<Uuid> {
    letters::list(db, filter, None, 100)
        .await
        .expect("lists")
        .into_iter()
        .map(|letter| letter.job_id)
        .collect()
}

#[tokio::test]
async fn stored_dead_letters_are_listed_newest_first_filtered_paged_and_counted() {
    let (_database, db) = database().await;
    let now = Utc::now();
    let letters_in = [
        dead(
            job("sis", "{}"),
            "permanent failure: boom",
            "no",
            now - Duration::minutes(3),
        ),
        dead(
            job("sis", "{}"),
            "permanent failure: fizz",
            "BOOM in the excerpt",
            now - Duration::minutes(2),
        ),
        dead(
            job("crm", "{}"),
            "permanent failure: boom",
            "no",
            now - Duration::minutes(1),
        ),
    ];
    for letter in &letters_in {
        assert!(store::store(&db, letter).await.expect("stores"), "new");
        assert!(
            !store::store(&db, letter).await.expect("stores"),
            "the same twice is one row"
        );
    }
    let [first, second, third] = letters_in.map(|letter| letter.job.id.0);

    assert_eq!(
        ids(&db, &DeadLetterFilter::default()).await,
        [third, second, first]
    );
    assert_eq!(ids(&db, &filter("sis")).await, [second, first]);
    let boom = DeadLetterFilter {
        q: Some("boom".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&db, &boom).await,
        [third, second, first],
        "reason or last error"
    );
    let sis_boom = DeadLetterFilter {
        q: Some("boom".into()),
        ..filter("sis")
    };
    assert_eq!(letters::count(&db, &sis_boom).await.expect("counts"), 2);

    let page = letters::list(&db, &DeadLetterFilter::default(), None, 2)
        .await
        .expect("lists");
    assert_eq!(page.len(), 2);
    let last = &page[1];
    let rest = letters::list(
        &db,
        &DeadLetterFilter::default(),
        Some((last.dead_lettered_at, last.job_id)),
        2,
    )
    .await
    .expect("lists");
    assert_eq!(rest.iter().map(|l| l.job_id).collect::<Vec<_>>(), [first]);

    let stored = letters::get(&db, second)
        .await
        .expect("reads")
        .expect("there");
    assert_eq!(stored.summary.service, "sis");
    assert_eq!(
        stored.summary.last_error.as_deref(),
        Some("BOOM in the excerpt")
    );
    assert_eq!(stored.summary.last_response_status, Some(422));
    assert_eq!(stored.job["request"]["path"], "/users");
    assert!(
        letters::get(&db, Uuid::now_v7())
            .await
            .expect("reads")
            .is_none()
    );

    let buckets = letters::per_bucket(
        &db,
        3600.0,
        now - Duration::hours(1),
        now,
        Some("sis"),
        None,
    )
    .await
    .expect("counts");
    assert_eq!(buckets.iter().map(|(_, n)| n).sum::<i64>(), 2);
}

#[tokio::test]
async fn a_delivered_replay_of_a_replay_resolves_the_whole_chain() {
    let (_database, db) = database().await;
    let original = job("sis", "{}");
    let first_replay = replay_of(&original);
    let second_replay = replay_of(&original);
    let other = job("sis", "{}");
    let now = Utc::now();
    for letter in [
        dead(original.clone(), "permanent failure", "no", now),
        dead(other.clone(), "permanent failure", "no", now),
    ] {
        store::store(&db, &letter).await.expect("stores");
    }
    letters::mark_replayed(&db, original.id.0, first_replay.id.0, "tester")
        .await
        .expect("marks");
    let marked = letters::summary(&db, original.id.0)
        .await
        .expect("reads")
        .expect("there");
    assert_eq!(marked.status, "replaying");
    assert_eq!(marked.replay_job_id, Some(first_replay.id.0));
    assert_eq!(marked.replayed_by.as_deref(), Some("tester"));

    // The first replay fails for good: its own dead letter arrives, linked.
    store::store(
        &db,
        &dead(first_replay.clone(), "permanent failure", "again", now),
    )
    .await
    .expect("stores");
    let failed = outcome(&second_replay, OutcomeStatus::FailedPermanent, Some("no"));
    assert!(
        !store::resolve(&db, &failed).await.expect("resolves"),
        "not delivered"
    );
    assert!(store::mark_replaying(&db, &failed).await.expect("marks"));
    let marked = letters::summary(&db, original.id.0)
        .await
        .expect("reads")
        .expect("there");
    assert_eq!(marked.replay_job_id, Some(second_replay.id.0));

    let delivered = outcome(&second_replay, OutcomeStatus::Delivered, None);
    assert!(store::resolve(&db, &delivered).await.expect("resolves"));
    assert_eq!(ids(&db, &DeadLetterFilter::default()).await, [other.id.0]);
    assert!(
        !store::resolve(&db, &delivered).await.expect("resolves"),
        "idempotent"
    );

    store::truncate(&db).await.expect("empties");
    assert_eq!(
        letters::count(&db, &DeadLetterFilter::default())
            .await
            .expect("counts"),
        0
    );
}

#[tokio::test]
async fn deleting_returns_what_was_deleted_inside_the_callers_transaction() {
    let (_database, db) = database().await;
    let now = Utc::now();
    let letters_in = [
        dead(job("sis", "{}"), "permanent failure", "no", now),
        dead(job("sis", "{}"), "permanent failure", "no", now),
        dead(job("crm", "{}"), "permanent failure", "no", now),
    ];
    for letter in &letters_in {
        store::store(&db, letter).await.expect("stores");
    }
    let one = letters_in[0].job.id.0;

    let mut tx = db.begin().await.expect("begins");
    let deleted = letters::delete(&mut tx, one)
        .await
        .expect("deletes")
        .expect("was there");
    assert_eq!(deleted.job_id, one);
    tx.rollback().await.expect("rolls back");
    assert!(
        letters::summary(&db, one).await.expect("reads").is_some(),
        "rolled back with it"
    );

    let mut tx = db.begin().await.expect("begins");
    assert!(
        letters::delete(&mut tx, one)
            .await
            .expect("deletes")
            .is_some()
    );
    assert!(
        letters::delete(&mut tx, one)
            .await
            .expect("deletes")
            .is_none()
    );
    let sis = filter("sis").validated_for_bulk().expect("valid");
    assert_eq!(
        letters::delete_matching(&mut tx, &sis)
            .await
            .expect("deletes"),
        1
    );
    tx.commit().await.expect("commits");
    assert_eq!(
        ids(&db, &DeadLetterFilter::default()).await,
        [letters_in[2].job.id.0]
    );
}

#[tokio::test]
async fn a_job_that_held_nul_is_replayed_from_its_exact_copy() {
    let (_database, db) = database().await;
    let held_nul = job("sis", "{\"name\":\"a\u{0}b\"}");
    let plain = job("sis", "{}");
    for letter in [
        dead(
            held_nul.clone(),
            "permanent failure: \u{0}",
            "no",
            Utc::now(),
        ),
        dead(plain.clone(), "permanent failure", "no", Utc::now()),
    ] {
        store::store(&db, &letter)
            .await
            .expect("stores, NUL or not");
    }
    let exact = letters::replayable(&db, held_nul.id.0)
        .await
        .expect("reads")
        .expect("there");
    assert_eq!(exact.job["request"]["body"], "{\"name\":\"a\u{0}b\"}");
    assert_eq!(exact.stage, "delivery");
    let stored = letters::get(&db, held_nul.id.0)
        .await
        .expect("reads")
        .expect("there");
    assert_ne!(stored.job, exact.job, "the jsonb copy cannot hold NUL");
    let copy = letters::replayable(&db, plain.id.0)
        .await
        .expect("reads")
        .expect("there");
    assert_eq!(copy.job["request"]["body"], "{}");
}

#[tokio::test]
async fn a_bulk_replay_counts_its_set_then_walks_it_by_job_id_until_cancelled() {
    let (_database, db) = database().await;
    let now = Utc::now();
    let mut sis: Vec<Uuid> = Vec::new();
    for n in 0..5 {
        let service = if n < 4 { "sis" } else { "crm" };
        let letter = dead(job(service, "{}"), "permanent failure", "no", now);
        store::store(&db, &letter).await.expect("stores");
        if n < 4 {
            sis.push(letter.job.id.0);
        }
    }
    sis.sort();
    let set = filter("sis").validated_for_bulk().expect("valid");

    let mut tx = db.begin().await.expect("begins");
    let operation = operations::create_replay(&mut tx, &set, "tester")
        .await
        .expect("creates");
    tx.commit().await.expect("commits");
    assert_eq!((operation.total, operation.status.as_str()), (4, "running"));
    assert_eq!(
        operations::running(&db).await.expect("lists"),
        [operation.id]
    );

    let progress = operations::progress(&db, operation.id)
        .await
        .expect("reads")
        .expect("there");
    let walked: DeadLetterFilter = serde_json::from_value(progress.filter).expect("the filter");
    assert_eq!(walked, set);
    // Replayed by hand meanwhile: counted, not replayed again.
    letters::mark_replayed(&db, sis[1], Uuid::now_v7(), "someone")
        .await
        .expect("marks");
    let batch = operations::next_batch(&db, &walked, progress.created_at, None, 2)
        .await
        .expect("reads");
    assert_eq!(
        batch
            .iter()
            .map(|i| (i.job_id, i.already))
            .collect::<Vec<_>>(),
        [(sis[0], false), (sis[1], true)]
    );
    assert!(
        operations::checkpoint(&db, operation.id, 2, 0, sis[1], None)
            .await
            .expect("checkpoints")
    );
    let rest = operations::next_batch(&db, &walked, progress.created_at, Some(sis[1]), 10)
        .await
        .expect("reads");
    assert_eq!(rest.iter().map(|i| i.job_id).collect::<Vec<_>>(), &sis[2..]);

    assert!(
        operations::cancel(&db, operation.id)
            .await
            .expect("cancels")
    );
    assert!(
        !operations::cancel(&db, operation.id)
            .await
            .expect("cancels"),
        "once"
    );
    assert!(
        !operations::checkpoint(&db, operation.id, 1, 1, sis[2], Some("late"))
            .await
            .expect("checkpoints"),
        "a cancelled operation takes no more progress"
    );
    assert!(
        !operations::finish(&db, operation.id, "completed", None)
            .await
            .expect("ends")
    );
    let ended = operations::get(&db, operation.id)
        .await
        .expect("reads")
        .expect("there");
    assert_eq!(
        (ended.status.as_str(), ended.done, ended.failed),
        ("cancelled", 2, 0)
    );
    assert!(operations::running(&db).await.expect("lists").is_empty());
}
