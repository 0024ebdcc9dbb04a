//! System tests: the whole hub, in process or as the real binary, against real NATS (the pinned
//! server, one per test), real PostgreSQL (a database per test) and real HTTP.

mod api;
mod backfill;
mod bad_input;
mod dashboard;
mod dead_letters;
mod deliveries;
mod dispatcher;
mod event_partitions;
mod facade;
mod harness;
mod inbound;
mod ingest;
mod lifecycle;
mod live_config;
mod matcher;
mod moodle;
mod observability;
mod ordering;
mod outages;
mod partitions;
mod preview;
mod process;
mod queue;
mod rate_limits;
mod rebuild;
mod retention;
mod secrets;
mod slow_clients;
mod stats;
mod topology;
mod traces;
