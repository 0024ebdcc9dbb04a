//! Provisioning against a real server: idempotent, and applies changed settings.

use std::time::Duration;

use async_nats::jetstream;

use mih_shared::config::ConfigLoader;
use mih_shared::names::{Names, Namespace};
use mih_shared::topology::{Resource, Topology};
use mih_testkit::{NatsServer, unique_namespace};

#[tokio::test]
async fn ensure_creates_everything_is_idempotent_and_applies_changes() {
    let nats = NatsServer::start().await.expect("nats");
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let names = Names::new(Namespace::parse(unique_namespace()).expect("ns"));
    let config = ConfigLoader::new().load().expect("defaults");
    let topology = Topology::new(names.clone(), &config);

    topology
        .ensure(&js, &Resource::ALL)
        .await
        .expect("first ensure");
    topology
        .ensure(&js, &Resource::ALL)
        .await
        .expect("second ensure changes nothing");
    for stream in [
        names.events_stream(),
        names.jobs_stream(),
        names.results_stream(),
        names.dlq_stream(),
    ] {
        js.get_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{stream}: {e}"));
    }
    for bucket in [
        names.config_bucket(),
        names.circuits_bucket(),
        names.dedup_bucket(),
        names.attempts_bucket(),
    ] {
        js.get_key_value(&bucket)
            .await
            .unwrap_or_else(|e| panic!("{bucket}: {e}"));
    }
    let jobs = js
        .get_stream(names.jobs_stream())
        .await
        .expect("jobs")
        .get_info()
        .await
        .expect("info");
    assert_eq!(
        jobs.config.retention,
        jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(jobs.config.max_age, Duration::ZERO);

    // A restart with a new retention setting updates the stream in place.
    let changed = ConfigLoader::new()
        .toml("[streams]\nevents_max_age = \"3days\"\n")
        .load()
        .expect("valid");
    Topology::new(names.clone(), &changed)
        .ensure(&js, &[Resource::Events])
        .await
        .expect("update");
    let events = js
        .get_stream(names.events_stream())
        .await
        .expect("events")
        .get_info()
        .await
        .expect("info");
    assert_eq!(events.config.max_age, Duration::from_secs(3 * 24 * 3600));
}
