//! `ew-bench`: the benchmark of event-worker, driven by `bench/run.sh`.
//!
//! Subcommands (each takes `--key value` options):
//! - `raw`: the reference, a minimal XREADGROUP (COUNT 512) + pipelined XACK loop on one or more
//!   connections; runs until killed (SIGTERM prints latency figures in `--latency` mode).
//! - `sink`: a minimal keep-alive HTTP sink answering 200 at once; records publish-to-arrival
//!   latency from the `sent_ns` the publisher put in the event's data (`GET /stats`).
//! - `relay`: the http reference, a one-thread XREADGROUP to HTTP/1.1 relay (bench/src/relay.rs).
//! - `orchestrate`: preloads backlogs, starts the measured processes, detects the end of a
//!   drain from the consumer group's state, and writes the markdown results.
//! - `push`: the push-to-apps scenario (SSE and WebSocket clients against one event-worker with
//!   `[[push.channels]]` rules; `bench/run.sh --sections push`).
//! - `outbox`: the durable outbox's cost on the publish path and its drain rate
//!   (`bench/run.sh --sections outbox`; bench/src/outbox.rs).
//! - `cluster`: 1 Redis node against a 3-master Redis Cluster (drain, latency, Redis CPU per
//!   master) and the cost of `[redis] wait_replicas` (`bench/run.sh --sections cluster`;
//!   bench/src/cluster.rs).
//! - `free-port`: prints a free loopback TCP port.

mod cluster;
mod clusterrep;
mod clustertopo;
mod clusterwait;
mod orch;
mod outbox;
mod outboxrep;
mod push;
mod pushclient;
mod pushmon;
mod pushrun;
mod raw;
mod relay;
mod report;
mod sink;
mod util;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!(
            "usage: ew-bench raw|sink|orchestrate|push|outbox|cluster|free-port [--key value ...]"
        );
        std::process::exit(2);
    };
    let opts = match util::Opts::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ew-bench: {e}");
            std::process::exit(2);
        }
    };
    let result = match cmd.as_str() {
        "raw" => raw::main(&opts),
        "sink" => sink::main(&opts),
        "relay" => relay::main(&opts),
        "orchestrate" => orch::main(&opts),
        "push" => push::main(&opts),
        "outbox" => outbox::main(&opts),
        "cluster" => cluster::main(&opts),
        "free-port" => util::free_port().map(|p| println!("{p}")),
        other => Err(format!("unknown subcommand `{other}`")),
    };
    if let Err(e) = result {
        eprintln!("ew-bench {cmd}: {e}");
        std::process::exit(1);
    }
}
