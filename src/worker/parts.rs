//! The builder-local bundle of a starting worker ([`Parts`]): configuration, connection,
//! metrics, routes, writers and the handles several roles share. `worker::run` builds it,
//! then splits it into the narrow handles each role uses before the roles start: the
//! consume path gets a [`Reader`], a [`Reclaimer`], and through them one [`Dispatcher`] and
//! one [`Pipeline`] ([`Decider`] + [`Settler`]); the background roles and the HTTP view get
//! theirs in `worker::run`. No role receives `Parts` itself.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::consume::backoff::RetryPolicy;
use crate::consume::batch::Pipeline;
use crate::consume::decide::Decider;
use crate::consume::dispatch::Dispatcher;
use crate::consume::in_flight::InFlight;
use crate::consume::reader::Reader;
use crate::consume::streams::StreamSet;
use crate::consume::type_facts::TypeFactsCache;
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::ops::coordination::{self, Notices};
use crate::recover::discovery::Discovery;
use crate::recover::reclaim::Reclaimer;
use crate::redis::store::Store;
use crate::settle::Settler;
use crate::settle::acker::Acker;
use crate::settle::history::{HistorySink, HistoryWriter};
use crate::worker::health::Health;
use crate::worker::lifecycle::{Lifecycle, Stage};
use crate::worker::routes::Route;

/// What a starting worker holds before it is split into roles.
pub(crate) struct Parts {
    /// Validated configuration.
    pub cfg: Config,
    /// Key names of the env.
    pub keys: Keys,
    /// Redis.
    pub store: Store,
    /// Metric handles.
    pub metrics: Metrics,
    /// Routes in configuration order (code routes first).
    pub routes: Arc<[Route]>,
    /// Entries this consumer is handling now, with their start time (for idle refresh).
    pub in_flight: Arc<InFlight>,
    /// Type streams being consumed (discovery replaces the set; everyone else reads it).
    pub streams: StreamSet,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// Health facts.
    pub health: Arc<Health>,
    /// Lifecycle records for `events:<env>:history`.
    pub history: HistorySink,
    /// Coordination notices.
    pub notices: Notices,
    /// Batched acknowledgements.
    pub acker: Acker,
}

impl Parts {
    /// Starts the history writer and the notices publisher ([`Stage::Writers`]) and the
    /// acker ([`Stage::Acker`]), and gathers the parts.
    pub fn start(
        cfg: Config,
        store: Store,
        routes: Vec<Route>,
        metrics: Metrics,
        (notices, notice_rx): (Notices, tokio::sync::mpsc::Receiver<String>),
        health: &Arc<Health>,
        life: &Lifecycle,
    ) -> Parts {
        let keys = Keys::new(&cfg.env);
        let writer = HistoryWriter {
            store: store.clone(),
            key: keys.history(),
            config: cfg.history.clone(),
            metrics: metrics.clone(),
            env: cfg.env.clone(),
        };
        let (history, history_task) = writer.start(life.token(Stage::Writers));
        life.spawn(Stage::Writers, history_task);
        let notices_task = coordination::run(
            store.clone(),
            keys.coordination(),
            notice_rx,
            life.token(Stage::Writers),
        );
        life.spawn(Stage::Writers, notices_task);
        let (acker, acker_task) =
            Acker::start(store.clone(), cfg.group.clone(), life.token(Stage::Acker));
        life.spawn(Stage::Acker, acker_task);
        Parts {
            acker,
            history,
            notices,
            redeliver: keys.redeliver(&cfg.group),
            keys,
            store,
            metrics,
            routes: routes.into(),
            in_flight: Default::default(),
            streams: Default::default(),
            health: health.clone(),
            cfg,
        }
    }

    /// The env label.
    pub fn env(&self) -> &str {
        &self.cfg.env
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.cfg.group
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.cfg.consumer
    }

    /// `redis_errors_total{env,op}`.
    pub fn redis_errors(&self, op: &str) -> prometheus::IntCounter {
        self.metrics
            .redis_errors_total
            .with_label_values(&[self.env(), op])
    }

    /// The consume path: the reader and the reclaimer, sharing one dispatcher (permits,
    /// in-flight registry, batch pipeline). The reader drops non-stream keys through
    /// `discovery`.
    pub fn consume_path(&self, discovery: Arc<Discovery>) -> (Reader, Arc<Reclaimer>) {
        // Reads fill up to `prefetch` held entries; `concurrency` of them run at once.
        let prefetch = self.cfg.prefetch;
        let dispatcher = Arc::new(Dispatcher {
            permits: Arc::new(Semaphore::new(prefetch)),
            in_flight: self.in_flight.clone(),
            pipeline: Arc::new(self.pipeline()),
            // The push projector's handler needs its calls in stream order, batch after batch.
            ordered: (self.consumer() == crate::worker::projector::PROJECTOR_CONSUMER)
                .then(|| Arc::new(Semaphore::new(1))),
        });
        let reclaimer = Arc::new(Reclaimer {
            store: self.store.clone(),
            keys: self.keys.clone(),
            streams: self.streams.clone(),
            redeliver: self.redeliver.clone(),
            dispatcher: dispatcher.clone(),
            env: self.env().to_string(),
            group: self.group().to_string(),
            consumer: self.consumer().to_string(),
            interval: self.cfg.reclaim_interval,
            heartbeat_ttl: self.cfg.heartbeat_ttl,
            visibility_timeout: self.cfg.visibility_timeout,
            reclaimed: self.metrics.reclaimed_total.clone(),
            errors: self.redis_errors("reclaim"),
        });
        let reader = Reader {
            store: self.store.clone(),
            streams: self.streams.clone(),
            breakers: self.routes.iter().map(|r| r.breaker.clone()).collect(),
            redeliver: self.redeliver.clone(),
            dispatcher,
            reclaimer: reclaimer.clone(),
            discovery,
            health: self.health.clone(),
            group: self.group().to_string(),
            consumer: self.consumer().to_string(),
            concurrency: prefetch,
            read_block: self.cfg.read_block,
            errors: self.redis_errors("read"),
            groups_recreated: self
                .metrics
                .groups_recreated_total
                .with_label_values(&[self.env(), self.group()]),
        };
        (reader, reclaimer)
    }

    /// What each batch task runs: decide, then settle.
    fn pipeline(&self) -> Pipeline {
        Pipeline {
            decider: self.decider(),
            settler: self.settler(),
            runs: Arc::new(Semaphore::new(self.cfg.concurrency)),
            unacked: Arc::new(Semaphore::new(self.cfg.concurrency)),
            gauge: self
                .metrics
                .in_flight
                .with_label_values(&[self.env(), self.group()]),
        }
    }

    fn decider(&self) -> Decider {
        Decider {
            keys: self.keys.clone(),
            redeliver: self.redeliver.clone(),
            routes: self.routes.clone(),
            retry: RetryPolicy::new(self.cfg.retry.clone()),
            max_deliveries: self.cfg.max_deliveries,
            type_facts: TypeFactsCache::new(
                self.streams.clone(),
                &self.metrics,
                self.env(),
                self.group(),
            ),
            breaker_rejected: self.metrics.breaker_rejected_total.clone(),
            fields_dropped: self.metrics.fields_dropped_total.clone(),
            env: self.env().to_string(),
            group: self.group().into(),
            no_route_grace: self.cfg.no_route_grace,
            handed_on: self
                .metrics
                .handed_on_total
                .with_label_values(&[self.env(), self.group()]),
        }
    }

    fn settler(&self) -> Settler {
        Settler {
            store: self.store.clone(),
            acker: self.acker.clone(),
            history: self.history.clone(),
            in_flight: self.in_flight.clone(),
            redeliver: self.redeliver.clone(),
            retry_key: self.keys.retry(self.group()),
            dlq_key: self.keys.dlq(),
            redis_url: self.cfg.redis_url.clone(),
            group: self.group().to_string(),
            consumer: self.consumer().to_string(),
            env: self.env().to_string(),
            events_total: self.metrics.events_total.clone(),
            dead_lettered_total: self.metrics.dead_lettered_total.clone(),
            errors: self.redis_errors("settle"),
        }
    }
}
