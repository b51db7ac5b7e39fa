//! Faults inside the stage fail it loudly instead of leaving it half alive.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use recur::health::Health;
use recur::stage::offsets::{CommitPolicy, Offsets};
use recur::stage::sink::Sink;
use recur::stage::source::{Source, Task};
use recur::telemetry::Metrics;

#[test]
fn a_panicking_partition_worker_fails_the_stage() {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
    cluster.create_topic("in", 2, 1).unwrap();
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", cluster.bootstrap_servers());
    let (metrics, health) = (Metrics::new(), Arc::new(Health::default()));
    let offsets = Arc::new(Offsets::new(CommitPolicy::Acknowledged));
    let sink = Arc::new(Sink::new(client.clone(), offsets.clone(), metrics.clone()).unwrap());
    client.set("group.id", "g");
    let start = Box::new(|p: i32, _| -> Result<Task, String> {
        Ok(Box::new(move |_feed, _stop| {
            if p == 1 {
                panic!("index out of bounds in partition one");
            }
        }))
    });
    let source = Source::new(client, "in", start, offsets, sink, metrics, health.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || source.run(&s));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !health.failed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let fatal = health.fatal().expect("the panic did not fail the stage");
    assert!(
        fatal.contains("partition 1") && fatal.contains("index out of bounds in partition one"),
        "{fatal}"
    );
    // A failed stage stops serving on its own: the source returns without a stop request.
    run.join().unwrap();
}
