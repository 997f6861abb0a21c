//! The one metric catalogue: every name, help text, label set and bucket of the
//! metrics contract (README "Metrics") lives here. Labels come from bounded sets only (env, group, configured
//! or discovered types, handler names, fixed outcome and reason words), never ids or errors.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every `outcome` label of `event_worker_events_total` (each type's series start at 0).
pub const OUTCOMES: [&str; 3] = ["success", "retried", "dead_lettered"];

/// Handles to every metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `event_worker_events_total{env,group,type,outcome}`; outcome = success|retried|dead_lettered.
    pub events_total: IntCounterVec,
    /// `event_worker_dead_lettered_total{env,group,type,reason}`.
    pub dead_lettered_total: IntCounterVec,
    /// `event_worker_handler_duration_seconds{env,group,type}`.
    pub handler_duration_seconds: HistogramVec,
    /// `event_worker_end_to_end_latency_seconds{env,group,type}`: entry id time to success.
    pub end_to_end_latency_seconds: HistogramVec,
    /// `event_worker_in_flight{env,group}`.
    pub in_flight: IntGaugeVec,
    /// `event_worker_reclaimed_total{env,group,type}`.
    pub reclaimed_total: IntCounterVec,
    /// `event_worker_breaker_state{env,handler}`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// `event_worker_breaker_rejected_total{env,handler}`: events rescheduled by an open breaker.
    pub breaker_rejected_total: IntCounterVec,
    /// `event_worker_redis_up{env}`.
    pub redis_up: IntGaugeVec,
    /// `event_worker_published_total{env,type}`.
    pub published_total: IntCounterVec,
    /// `event_worker_publish_duplicates_total{env,type}`: publishes through the API refused
    /// as repeats of a (type, id) within the dedup window (nothing written).
    pub publish_duplicates_total: IntCounterVec,
    /// `event_worker_publish_unreplicated_total{env,type}` and
    /// `event_worker_moves_unreplicated_total{env}`: waited writes (`[redis] wait_replicas`)
    /// fewer replicas acknowledged than asked within `wait_timeout`.
    pub publish_unreplicated_total: IntCounterVec,
    /// See `publish_unreplicated_total`.
    pub moves_unreplicated_total: IntCounterVec,
    /// `event_worker_retries_forwarded_total{env,group}`: moves from the retry set to redeliver.
    pub retries_forwarded_total: IntCounterVec,
    /// `event_worker_handed_on_total{env,group}`: events read by a consumer without a route
    /// for their type and handed back to the retry set (no attempt used; not `retried`).
    pub handed_on_total: IntCounterVec,
    /// `event_worker_redis_errors_total{env,op}`: failed Redis operations by kind.
    pub redis_errors_total: IntCounterVec,
    /// `event_worker_redis_refused_writes_total{env,cause}`: commands Redis refused;
    /// cause = oom|readonly|misconf (see `redis::refusals`).
    pub redis_refused_writes_total: IntCounterVec,
    /// `event_worker_redis_node_errors_total{env,node,kind}`: errors per Redis Cluster node
    /// (`host:port` as `CLUSTER SLOTS` names it; kind = connection|read; none on a single
    /// node).
    pub redis_node_errors_total: IntCounterVec,
    /// `event_worker_redis_cluster_masters{env}`: masters serving slots (Redis Cluster only).
    pub redis_cluster_masters: IntGaugeVec,
    /// `event_worker_redis_cluster_topology_changes_total{env}`: failovers, slot moves and
    /// replica changes seen (always 0 on a single node).
    pub redis_cluster_topology_changes_total: IntCounterVec,
    /// `event_worker_history_dropped_total{env}`: history records not written.
    pub history_dropped_total: IntCounterVec,
    /// `event_worker_fields_dropped_total{env,type}`: producer fields not passed on to HTTP
    /// handlers (names that are not valid attribute names, reserved names, bad `traceparent`).
    pub fields_dropped_total: IntCounterVec,
    /// `event_worker_dlq_replayed_total{env,group,type}`.
    pub dlq_replayed_total: IntCounterVec,
    /// `event_worker_dlq_purged_total{env}`: DLQ entries deleted by an operator.
    pub dlq_purged_total: IntCounterVec,
    /// `event_worker_dlq_trimmed_total{env}`: DLQ entries removed by the retention policy.
    pub dlq_trimmed_total: IntCounterVec,
    /// `event_worker_groups_recreated_total{env,group}`: consumer groups found missing (stream
    /// deleted, or Redis lost its data) and recreated at `0`.
    pub groups_recreated_total: IntCounterVec,
    /// `event_worker_stream_trimmed_total{env,type}`: acknowledged entries trimmed by `stream_retention`.
    pub stream_trimmed_total: IntCounterVec,
    /// `event_worker_stream_lag{env,group,type}`, read at scrape time.
    pub stream_lag: IntGaugeVec,
    /// `event_worker_pending{env,group,type}`, read at scrape time.
    pub pending: IntGaugeVec,
    /// `event_worker_retry_depth{env,group}`, read at scrape time.
    pub retry_depth: IntGaugeVec,
    /// `event_worker_dlq_depth{env}`, read at scrape time.
    pub dlq_depth: IntGaugeVec,
    /// `event_worker_unconsumed_streams{env,cause}`: streams under `events:<env>:` nobody
    /// consumes; cause = invalid_type|no_group (set by discovery's scan).
    pub unconsumed_streams: IntGaugeVec,
    /// `event_worker_unconsumed_entries{env,cause}`: the entries those streams hold.
    pub unconsumed_entries: IntGaugeVec,
    /// `event_worker_push_connections{env,transport}`: open push connections (sse|ws).
    pub push_connections: IntGaugeVec,
    /// `event_worker_push_subscriptions{env}`: channel subscriptions of open connections.
    pub push_subscriptions: IntGaugeVec,
    /// `event_worker_push_resumes_total{env,result,reason}`: per channel of a connection;
    /// result = fresh|recovered|failed, reason = none|trimmed|history_lost|over_cap.
    pub push_resumes_total: IntCounterVec,
    /// `event_worker_push_replayed_total{env}`: messages replayed on resume.
    pub push_replayed_total: IntCounterVec,
    /// `event_worker_push_delivery_latency_seconds{env}`: append to hand-off to a client.
    pub push_delivery_latency_seconds: HistogramVec,
    /// `event_worker_push_slow_disconnects_total{env}`: clients cut for a full buffer.
    pub push_slow_disconnects_total: IntCounterVec,
    /// `event_worker_push_appended_total{env,result}`: channel appends; result =
    /// appended|duplicate.
    pub push_appended_total: IntCounterVec,
    /// `event_worker_push_rules_skipped_total{env}`: matching rules that did not apply (a
    /// template field missing, or the name invalid).
    pub push_rules_skipped_total: IntCounterVec,
    /// `event_worker_push_devices_behind{env}`: sampled devices with messages after their
    /// acknowledged position.
    pub push_devices_behind: IntGaugeVec,
    /// `event_worker_push_projector_active{env}`: 1 while this instance holds the projector
    /// lease and projects, 0 while it stands by.
    pub push_projector_active: IntGaugeVec,
    /// `event_worker_push_oldest_unacked_age_seconds{env}`: age of the oldest message a
    /// sampled device has not acknowledged.
    pub push_oldest_unacked_age_seconds: prometheus::GaugeVec,
    /// `event_worker_outbox_depth{env}`: events queued in the local outbox.
    pub outbox_depth: IntGaugeVec,
    /// `event_worker_outbox_bytes{env}`: bytes its segments take.
    pub outbox_bytes: IntGaugeVec,
    /// `event_worker_outbox_oldest_age_seconds{env}`: age of the oldest queued event (0 when empty).
    pub outbox_oldest_age_seconds: prometheus::GaugeVec,
    /// `event_worker_outbox_appended_total{env,reason}`: publishes queued locally; reason =
    /// timeout|unreachable|oom|readonly|misconf|behind.
    pub outbox_appended_total: IntCounterVec,
    /// `event_worker_outbox_drained_total{env}`: queued events Redis confirmed.
    pub outbox_drained_total: IntCounterVec,
    /// `event_worker_outbox_refused_total{env,reason}`: publishes neither Redis nor the
    /// outbox took; reason = full|disk_full|not_writable|error.
    pub outbox_refused_total: IntCounterVec,
    /// `event_worker_outbox_torn_records_total{env}`: torn last records (a crash mid-write,
    /// never acknowledged) discarded when the outbox was opened.
    pub outbox_torn_records_total: IntCounterVec,
    /// `event_worker_outbox_fsyncs_total{env}`: fsyncs of the outbox's active segment.
    pub outbox_fsyncs_total: IntCounterVec,
    /// `event_worker_outbox_fsync_seconds_total{env}`: time those fsyncs took (the rate of
    /// this over the rate of `fsyncs_total` is the mean fsync latency).
    pub outbox_fsync_seconds_total: prometheus::CounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    /// A fresh registry with every metric of the catalogue.
    pub fn new() -> Self {
        let r = Registry::new();
        let egt = &["env", "group", "type"];
        Metrics {
            events_total: counter(
                &r,
                "event_worker_events_total",
                "Events finished by outcome.",
                &["env", "group", "type", "outcome"],
            ),
            dead_lettered_total: counter(
                &r,
                "event_worker_dead_lettered_total",
                "Events moved to the DLQ by reason.",
                &["env", "group", "type", "reason"],
            ),
            handler_duration_seconds: histogram(
                &r,
                "event_worker_handler_duration_seconds",
                "Handler run time.",
                egt,
                LATENCY_BUCKETS,
            ),
            end_to_end_latency_seconds: histogram(
                &r,
                "event_worker_end_to_end_latency_seconds",
                "From the event's stream entry time to handler success.",
                egt,
                E2E_BUCKETS,
            ),
            in_flight: gauge(
                &r,
                "event_worker_in_flight",
                "Events being handled now.",
                &["env", "group"],
            ),
            reclaimed_total: counter(
                &r,
                "event_worker_reclaimed_total",
                "Pending entries claimed from dead or stuck consumers.",
                egt,
            ),
            breaker_state: gauge(
                &r,
                "event_worker_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                &["env", "handler"],
            ),
            breaker_rejected_total: counter(
                &r,
                "event_worker_breaker_rejected_total",
                "Events rescheduled because the handler's breaker was open.",
                &["env", "handler"],
            ),
            redis_up: gauge(
                &r,
                "event_worker_redis_up",
                "1 when the last Redis ping succeeded.",
                &["env"],
            ),
            published_total: counter(
                &r,
                "event_worker_published_total",
                "Events published through this process.",
                &["env", "type"],
            ),
            publish_duplicates_total: counter(
                &r,
                "event_worker_publish_duplicates_total",
                "Publishes refused as repeats of a (type, id) within the dedup window; nothing written.",
                &["env", "type"],
            ),
            publish_unreplicated_total: counter(
                &r,
                "event_worker_publish_unreplicated_total",
                "Publishes through the API written on the master but acknowledged by fewer than redis.wait_replicas replicas within redis.wait_timeout.",
                &["env", "type"],
            ),
            moves_unreplicated_total: counter(
                &r,
                "event_worker_moves_unreplicated_total",
                "Moves across cluster slots whose destination fewer than redis.wait_replicas replicas acknowledged in time; the source was kept and the move tried again.",
                &["env"],
            ),
            retries_forwarded_total: counter(
                &r,
                "event_worker_retries_forwarded_total",
                "Due retries moved to the group's redeliver stream.",
                &["env", "group"],
            ),
            handed_on_total: counter(
                &r,
                "event_worker_handed_on_total",
                "Events a consumer without a route for their type handed back to the group's retry set (no attempt used); dead-lettered as no_route after no_route_grace.",
                &["env", "group"],
            ),
            redis_errors_total: counter(
                &r,
                "event_worker_redis_errors_total",
                "Failed Redis operations.",
                &["env", "op"],
            ),
            redis_refused_writes_total: counter(
                &r,
                "event_worker_redis_refused_writes_total",
                "Writes Redis refused: out of memory, read-only replica, failed RDB save.",
                &["env", "cause"],
            ),
            redis_node_errors_total: counter(
                &r,
                "event_worker_redis_node_errors_total",
                "Connection errors per Redis Cluster node (none on a single node).",
                &["env", "node", "kind"],
            ),
            redis_cluster_masters: gauge(
                &r,
                "event_worker_redis_cluster_masters",
                "Redis Cluster masters serving slots, as the last topology read saw them.",
                &["env"],
            ),
            redis_cluster_topology_changes_total: counter(
                &r,
                "event_worker_redis_cluster_topology_changes_total",
                "Redis Cluster topology changes seen: failovers, slot moves, replicas added or gone.",
                &["env"],
            ),
            history_dropped_total: counter(
                &r,
                "event_worker_history_dropped_total",
                "History records that could not be written.",
                &["env"],
            ),
            fields_dropped_total: counter(
                &r,
                "event_worker_fields_dropped_total",
                "Producer fields not passed on to HTTP handlers (invalid or reserved names, invalid traceparent), counted when a group first reads the event.",
                &["env", "type"],
            ),
            dlq_replayed_total: counter(
                &r,
                "event_worker_dlq_replayed_total",
                "DLQ entries replayed to their group.",
                egt,
            ),
            dlq_purged_total: counter(
                &r,
                "event_worker_dlq_purged_total",
                "DLQ entries deleted by an operator.",
                &["env"],
            ),
            dlq_trimmed_total: counter(
                &r,
                "event_worker_dlq_trimmed_total",
                "DLQ entries removed by the retention policy (dlq_max_len, dlq_max_age).",
                &["env"],
            ),
            groups_recreated_total: counter(
                &r,
                "event_worker_groups_recreated_total",
                "Consumer groups found missing (stream deleted or Redis data lost) and recreated at 0.",
                &["env", "group"],
            ),
            stream_trimmed_total: counter(
                &r,
                "event_worker_stream_trimmed_total",
                "Acknowledged type-stream entries trimmed by stream_retention.",
                &["env", "type"],
            ),
            stream_lag: gauge(
                &r,
                "event_worker_stream_lag",
                "Entries not yet delivered to the group.",
                egt,
            ),
            pending: gauge(
                &r,
                "event_worker_pending",
                "Entries delivered to the group and not acknowledged.",
                egt,
            ),
            retry_depth: gauge(
                &r,
                "event_worker_retry_depth",
                "Events waiting in the group's retry set.",
                &["env", "group"],
            ),
            dlq_depth: gauge(
                &r,
                "event_worker_dlq_depth",
                "Entries in the DLQ.",
                &["env"],
            ),
            unconsumed_streams: gauge(
                &r,
                "event_worker_unconsumed_streams",
                "Streams under events:<env>: that nobody consumes (invalid type name, or no consumer group).",
                &["env", "cause"],
            ),
            unconsumed_entries: gauge(
                &r,
                "event_worker_unconsumed_entries",
                "Entries in the streams nobody consumes.",
                &["env", "cause"],
            ),
            push_connections: gauge(
                &r,
                "event_worker_push_connections",
                "Open push connections by transport.",
                &["env", "transport"],
            ),
            push_subscriptions: gauge(
                &r,
                "event_worker_push_subscriptions",
                "Channel subscriptions of open push connections.",
                &["env"],
            ),
            push_resumes_total: counter(
                &r,
                "event_worker_push_resumes_total",
                "Channel resumes of push connections by result and reason.",
                &["env", "result", "reason"],
            ),
            push_replayed_total: counter(
                &r,
                "event_worker_push_replayed_total",
                "Messages replayed to push clients on resume.",
                &["env"],
            ),
            push_delivery_latency_seconds: histogram(
                &r,
                "event_worker_push_delivery_latency_seconds",
                "Time from a channel append to its hand-off to a push client.",
                &["env"],
                LATENCY_BUCKETS,
            ),
            push_slow_disconnects_total: counter(
                &r,
                "event_worker_push_slow_disconnects_total",
                "Push clients disconnected because their buffer was full.",
                &["env"],
            ),
            push_appended_total: counter(
                &r,
                "event_worker_push_appended_total",
                "Push channel appends by result (appended, duplicate).",
                &["env", "result"],
            ),
            push_rules_skipped_total: counter(
                &r,
                "event_worker_push_rules_skipped_total",
                "Push rules that matched an event but did not apply (field missing, invalid name).",
                &["env"],
            ),
            push_projector_active: gauge(
                &r,
                "event_worker_push_projector_active",
                "1 while this instance holds the push projector lease and projects.",
                &["env"],
            ),
            push_devices_behind: gauge(
                &r,
                "event_worker_push_devices_behind",
                "Sampled push devices with messages after their acknowledged position.",
                &["env"],
            ),
            outbox_depth: gauge(
                &r,
                "event_worker_outbox_depth",
                "Events queued in the local outbox, waiting for Redis.",
                &["env"],
            ),
            outbox_bytes: gauge(
                &r,
                "event_worker_outbox_bytes",
                "Bytes the local outbox's segment files take (bounded by outbox.max_bytes).",
                &["env"],
            ),
            outbox_oldest_age_seconds: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "event_worker_outbox_oldest_age_seconds",
                        "Age of the oldest event queued in the local outbox (0 when empty).",
                    ),
                    &["env"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            outbox_appended_total: counter(
                &r,
                "event_worker_outbox_appended_total",
                "Publishes queued in the local outbox instead of Redis, by reason.",
                &["env", "reason"],
            ),
            outbox_drained_total: counter(
                &r,
                "event_worker_outbox_drained_total",
                "Queued events the drain published and Redis confirmed.",
                &["env"],
            ),
            outbox_torn_records_total: counter(
                &r,
                "event_worker_outbox_torn_records_total",
                "Torn last records of the local outbox (a crash mid-write, never acknowledged) discarded at open.",
                &["env"],
            ),
            outbox_fsyncs_total: counter(
                &r,
                "event_worker_outbox_fsyncs_total",
                "fsyncs of the local outbox's active segment.",
                &["env"],
            ),
            outbox_fsync_seconds_total: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "event_worker_outbox_fsync_seconds_total",
                        "Seconds the local outbox's fsyncs took in all.",
                    ),
                    &["env"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            outbox_refused_total: counter(
                &r,
                "event_worker_outbox_refused_total",
                "Publishes neither Redis nor the outbox took (answered 503), by reason.",
                &["env", "reason"],
            ),
            push_oldest_unacked_age_seconds: {
                let opts = Opts::new(
                    "event_worker_push_oldest_unacked_age_seconds",
                    "Age of the oldest message a sampled push device has not acknowledged.",
                );
                let g = prometheus::GaugeVec::new(opts, &["env"]).expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
