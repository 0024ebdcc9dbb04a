//! Provisioning against a real server: idempotent, and applies changed settings.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use mih_shared::config::ConfigLoader;
use mih_shared::names::{Names, Namespace};
use mih_shared::topology::{Resource, Topology};
use mih_testkit::{NatsCluster, NatsServer, eventually, unique_namespace};

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
    // JetStream announces every API request it serves; a stream already as declared gets no
    // update (each one is a proposal to a cluster's meta leader, queued behind every other
    // replica's at a rolling start).
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let mut audit = client
        .subscribe("$JS.EVENT.ADVISORY.API")
        .await
        .expect("subscribe to API advisories");
    client.flush().await.expect("flush");
    topology
        .ensure(&js, &Resource::ALL)
        .await
        .expect("second ensure changes nothing");
    let our_updates = format!(
        "STREAM.UPDATE.{}_",
        names.namespace().as_str().to_ascii_uppercase()
    );
    let mut requests = Vec::new();
    while let Ok(Some(advisory)) =
        tokio::time::timeout(Duration::from_millis(500), audit.next()).await
    {
        requests.push(String::from_utf8_lossy(&advisory.payload).into_owned());
    }
    assert!(!requests.is_empty(), "the audit advisories arrive");
    assert!(
        !requests.iter().any(|r| r.contains(&our_updates)),
        "a stream already as declared was updated: {requests:#?}"
    );
    let buckets = [
        names.config_bucket(),
        names.circuits_bucket(),
        names.dedup_bucket(),
        names.attempts_bucket(),
        names.held_keys_bucket(),
        names.dispatchers_bucket(),
    ];
    for bucket in &buckets {
        js.get_key_value(bucket)
            .await
            .unwrap_or_else(|e| panic!("{bucket}: {e}"));
    }
    // `ensure` checks that each stream takes messages with a probe the stream refuses: two
    // rounds of probes left nothing behind.
    let bucket_streams = buckets.iter().map(|bucket| format!("KV_{bucket}"));
    for stream in [
        names.events_stream(),
        names.jobs_stream(),
        names.results_stream(),
        names.dlq_stream(),
        names.inbound_stream(),
    ]
    .into_iter()
    .chain(bucket_streams)
    {
        let state = js
            .get_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{stream}: {e}"))
            .get_info()
            .await
            .unwrap_or_else(|e| panic!("{stream}: {e}"))
            .state;
        assert_eq!(state.messages, 0, "{stream} holds a probe");
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

    // The dedup claims are bounded, oldest first, and a new bound applies at the next start.
    let claims = |js: jetstream::Context, bucket: String| async move {
        js.get_stream(format!("KV_{bucket}"))
            .await
            .expect("dedup bucket")
            .get_info()
            .await
            .expect("info")
            .config
    };
    let bounded = claims(js.clone(), names.dedup_bucket()).await;
    assert_eq!(bounded.max_messages, 1_000_000);
    assert_eq!(bounded.discard, jetstream::stream::DiscardPolicy::Old);
    let smaller = ConfigLoader::new()
        .toml("[matcher]\ndedup_max_claims = 5000\n")
        .load()
        .expect("valid");
    Topology::new(names.clone(), &smaller)
        .ensure(&js, &[Resource::DedupKv])
        .await
        .expect("update");
    assert_eq!(
        claims(js.clone(), names.dedup_bucket()).await.max_messages,
        5_000
    );
}

/// On a cluster, `streams.replicas` is applied to every stream and bucket, and raising it on a
/// hub that ran with one copy re-replicates in place: nothing is recreated, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_apply_to_every_stream_and_bucket_and_can_be_raised_in_place() {
    let cluster = NatsCluster::start().await.expect("cluster");
    let client = async_nats::connect(cluster.urls()).await.expect("connect");
    let js = jetstream::new(client);
    let names = Names::new(Namespace::parse(unique_namespace()).expect("ns"));
    let single = ConfigLoader::new().load().expect("defaults");
    assert_eq!(single.streams.replicas, 1, "one copy unless told otherwise");
    Topology::new(names.clone(), &single)
        .ensure(&js, &Resource::ALL)
        .await
        .expect("R1");
    let subject = names.events_all().replace('>', "moodle.core.x");
    js.publish(subject, "kept".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let clustered = ConfigLoader::new()
        .toml("[streams]\nreplicas = 3\n")
        .load()
        .expect("valid");
    Topology::new(names.clone(), &clustered)
        .ensure(&js, &Resource::ALL)
        .await
        .expect("raised to R3");

    let streams = [
        names.events_stream(),
        names.jobs_stream(),
        names.results_stream(),
        names.dlq_stream(),
        names.inbound_stream(),
    ];
    let buckets = [
        names.config_bucket(),
        names.circuits_bucket(),
        names.dedup_bucket(),
        names.attempts_bucket(),
        names.held_keys_bucket(),
        names.dispatchers_bucket(),
    ];
    let backing = buckets.iter().map(|bucket| format!("KV_{bucket}"));
    for stream in streams.iter().cloned().chain(backing) {
        // The copies are made in the background after the update: wait for a leader and two
        // current replicas, not only the setting.
        eventually(Duration::from_secs(20), || {
            let (js, stream) = (&js, &stream);
            async move {
                let info = js
                    .get_stream(stream)
                    .await
                    .map_err(|e| format!("{stream}: {e}"))?
                    .get_info()
                    .await
                    .map_err(|e| format!("{stream}: {e}"))?;
                if info.config.num_replicas != 3 {
                    return Err(format!("{stream}: R{}", info.config.num_replicas));
                }
                let cluster = info.cluster.ok_or(format!("{stream}: not clustered"))?;
                let current = cluster.replicas.iter().filter(|r| r.current).count();
                if cluster.leader.is_some() && current == 2 {
                    Ok(())
                } else {
                    Err(format!("{stream}: {cluster:?}"))
                }
            }
        })
        .await
        .expect("three copies of every stream and bucket");
    }
    let events = js
        .get_stream(names.events_stream())
        .await
        .expect("events")
        .get_info()
        .await
        .expect("info");
    assert_eq!(
        events.state.messages, 1,
        "the event stored at R1 is still there"
    );
}

/// `streams.placement_tags` keeps every stream and bucket on the servers carrying the tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_tags_keep_the_copies_on_the_tagged_servers() {
    let cluster = NatsCluster::start_tagged(&[&["ssd"], &["ssd"], &["hdd"]])
        .await
        .expect("cluster");
    let js = jetstream::new(async_nats::connect(cluster.urls()).await.expect("connect"));
    let names = Names::new(Namespace::parse(unique_namespace()).expect("ns"));
    let config = ConfigLoader::new()
        .toml("[streams]\nreplicas = 2\nplacement_tags = [\"ssd\"]\n")
        .load()
        .expect("valid");
    Topology::new(names.clone(), &config)
        .ensure(&js, &Resource::ALL)
        .await
        .expect("placed");
    let hdd = cluster.node(2).name().expect("named").to_owned();
    for stream in [
        names.events_stream(),
        format!("KV_{}", names.dedup_bucket()),
    ] {
        eventually(Duration::from_secs(20), || {
            let (js, stream, hdd) = (&js, &stream, &hdd);
            async move {
                let info = js
                    .get_stream(stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .get_info()
                    .await
                    .map_err(|e| e.to_string())?;
                let cluster = info.cluster.ok_or("not clustered")?;
                let mut hosts: Vec<String> =
                    cluster.replicas.iter().map(|r| r.name.clone()).collect();
                hosts.extend(cluster.leader.clone());
                if hosts.len() != 2 {
                    return Err(format!("{stream}: copies on {hosts:?}"));
                }
                if hosts.contains(hdd) {
                    return Err(format!(
                        "{stream} has a copy on the untagged {hdd}: {hosts:?}"
                    ));
                }
                Ok(())
            }
        })
        .await
        .expect("two copies, both on ssd servers");
    }
}

/// Replicas of every service start at once on a fresh cluster, each connected to another
/// node: every one of them gets the streams and buckets, none fails because a peer created
/// one between its lookup and its create (seen in CI: "subjects overlap with an existing
/// stream", code 10065, and the ingest replica exited), and each can write at once to what
/// it ensured (seen in CI: a dispatcher's first put into its presence bucket was answered
/// "no stream found for given subject", and it exited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_starting_together_on_a_cluster_all_get_the_topology() {
    let cluster = NatsCluster::start().await.expect("cluster");
    let urls = cluster.urls();
    let config = ConfigLoader::new()
        .toml("[streams]\nreplicas = 3\n")
        .load()
        .expect("valid");
    // Two rounds: the race showed in one round of two before the fix. Each takes 10-30 s,
    // because a cluster answers concurrent creates of one stream slowly.
    for round in 0..2 {
        let names = Names::new(Namespace::parse(unique_namespace()).expect("ns"));
        let mut starting = Vec::new();
        for replica in 0..6 {
            let url = urls[replica % urls.len()].clone();
            let topology = Topology::new(names.clone(), &config);
            let names = names.clone();
            starting.push(tokio::spawn(async move {
                let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
                topology.ensure(&js, &Resource::ALL).await?;
                for bucket in [names.dispatchers_bucket(), names.attempts_bucket()] {
                    let kv = js.get_key_value(&bucket).await.expect("ensured bucket");
                    if let Err(error) = kv.put(format!("replica-{replica}"), "here".into()).await {
                        panic!("replica {replica}'s first put into {bucket} failed: {error}");
                    }
                }
                Ok::<_, mih_shared::topology::TopologyError>(())
            }));
        }
        for (replica, started) in starting.into_iter().enumerate() {
            started
                .await
                .expect("joined")
                .unwrap_or_else(|e| panic!("round {round}, replica {replica}: {e}"));
        }
    }
}

#[tokio::test]
async fn an_unpartitioned_jobs_stream_keeps_its_jobs_when_partitions_are_added() {
    let nats = NatsServer::start().await.expect("nats");
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let names = Names::new(Namespace::parse(unique_namespace()).expect("ns"));
    // JOBS as every hub before partitions declared it: every subject under `<ns>.jobs`, which
    // would overlap the other partitions' subjects.
    js.create_stream(jetstream::stream::Config {
        name: names.jobs_stream(),
        subjects: vec![names.jobs_all()],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .expect("the old JOBS");
    let sis = mih_shared::names::ServiceSlug::parse("sis").expect("slug");
    for n in 0..3 {
        js.publish(names.job_subject(&sis), format!("job {n}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let config = ConfigLoader::new()
        .toml("[streams]\njob_partitions = 3\n")
        .load()
        .expect("valid");
    Topology::new(names.clone(), &config)
        .ensure(&js, &[Resource::Jobs])
        .await
        .expect("partitions added to a hub that had one JOBS stream");
    let mut old = js.get_stream(names.jobs_stream()).await.expect("JOBS");
    let info = old.info().await.expect("info");
    assert_eq!(info.config.subjects, names.jobs_of_partition(0));
    assert_eq!(info.state.messages, 3, "its jobs stay");
    for partition in 1..3 {
        let mut stream = js
            .get_stream(names.jobs_partition_stream(partition))
            .await
            .expect("partition stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.subjects, names.jobs_of_partition(partition));
        assert_eq!(
            info.config.retention,
            jetstream::stream::RetentionPolicy::WorkQueue
        );
    }
}

#[tokio::test]
async fn an_unpartitioned_events_stream_keeps_its_events_when_partitions_are_added() {
    let nats = NatsServer::start().await.expect("nats");
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let names = Names::new(Namespace::parse(unique_namespace()).expect("ns"));
    // EVENTS as every hub before partitions declared it: every subject under `<ns>.events`,
    // which would overlap the other partitions' subjects.
    js.create_stream(jetstream::stream::Config {
        name: names.events_stream(),
        subjects: vec![names.events_all()],
        ..Default::default()
    })
    .await
    .expect("the old EVENTS");
    let moodle: mih_shared::names::SourceId = "moodle".parse().expect("source");
    let viewed =
        mih_shared::moodle::EventName::parse("\\core\\event\\course_viewed").expect("name");
    for n in 0..3 {
        js.publish(
            names.event_subject(&moodle, &viewed),
            format!("event {n}").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }
    let config = ConfigLoader::new()
        .toml("[streams]\nevent_partitions = 3\n")
        .load()
        .expect("valid");
    Topology::new(names.clone(), &config)
        .ensure(&js, &[Resource::Events])
        .await
        .expect("partitions added to a hub that had one EVENTS stream");
    let mut old = js.get_stream(names.events_stream()).await.expect("EVENTS");
    let info = old.info().await.expect("info");
    assert_eq!(info.config.subjects, [names.events_of_partition(0)]);
    assert_eq!(info.state.messages, 3, "its events stay");
    for partition in 1..3 {
        let mut stream = js
            .get_stream(names.events_partition_stream(partition))
            .await
            .expect("partition stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.subjects, [names.events_of_partition(partition)]);
        assert_eq!(info.config.max_age, config.streams.events_max_age);
    }
    // Old subjects still land in partition 0, new ones in theirs.
    js.publish(names.event_subject_in(&moodle, &viewed, 2), "new".into())
        .await
        .expect("publish")
        .await
        .expect("stored in partition 2");
}
