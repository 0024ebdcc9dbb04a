//! Reliability suite: the hub as separate `mih` processes (ingest, matcher, dispatcher, dlq,
//! api) under steady load while one thing breaks — a service killed with SIGKILL, NATS,
//! PostgreSQL or RabbitMQ stopped, the HTTP target refusing, hanging, failing, slow or
//! flapping. After each, every event ingest answered 202 for must be delivered or
//! dead-lettered, and every duplicate must carry an `Idempotency-Key` the target saw before.
//!
//! Each scenario prints a table row and writes `target/reliability/<scenario>.json`.
//! Short by default (a few seconds of load); `MIH_RELIABILITY_SECONDS=60` for the long variant
//! (the fault repeats every 10 s), `MIH_RELIABILITY_RATE` for the load (default 100 events/s).

mod hub;
mod load;
mod report;
mod scenario;
mod target;

use scenario::{Fault, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ingest() {
    run("kill-ingest", Fault::Kill("ingest")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_matcher() {
    run("kill-matcher", Fault::Kill("matcher")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dispatcher() {
    run("kill-dispatcher", Fault::Kill("dispatcher")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dispatcher_with_ordered_delivery() {
    run("kill-dispatcher-ordered", Fault::KillOrdered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_replicas_with_partitions() {
    run("kill-replicas-partitions", Fault::KillReplicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dlq() {
    run("kill-dlq", Fault::Kill("dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_api() {
    run("kill-api", Fault::Kill("api")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart() {
    run("nats-restart", Fault::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart() {
    run("postgres-restart", Fault::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restart() {
    run("rabbitmq-restart", Fault::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_refuses() {
    run("target-refuses", Fault::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_hangs() {
    run("target-hangs", Fault::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answers_500() {
    run("target-500", Fault::Error500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_is_slow() {
    run("target-slow", Fault::Slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_flaps() {
    run("target-flaps", Fault::Flap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_node_lost() {
    run("nats-cluster-node-lost", Fault::NatsNode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_stream_leader_lost() {
    run("nats-cluster-leader-lost", Fault::StreamLeader).await;
}
