//! The scenario builder: one value that owns what a fault scenario needs (a
//! redis-server, optionally a TCP proxy in front of it, the HTTP sink, the worker
//! process(es), the publish ledger) and the closing conservation check.
//!
//! A new fault row is about fifteen lines:
//!
//! ```ignore
//! let mut s = Scenario::new("T99")
//!     .types(&["a.thing"])
//!     .sink(Action::delayed(200, Duration::from_millis(10)))
//!     .config(|c| c.concurrency = 8)
//!     .start();
//! let load = s.publisher("p", 500, Duration::from_millis(20));
//! s.wait_load(20);
//! /* the fault: s.redis, s.proxy(), s.w() ... */
//! load.join().unwrap();
//! s.conserved(Close { dup_bound: 8, ..Close::default() });
//! ```
//!
//! Every field is public, so a test can still reach the parts directly
//! (`s.workers[1].kill9()` while reading `s.redis`).

use super::api::Api;
use super::checker::{self, CheckOpts, Ledger, Report};
use super::faults::Proxy;
use super::{
    Action, HttpSink, RedisServer, Route, Sample, WorkerConfig, WorkerProcess, parse_metrics,
    wait_until,
};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long [`ScenarioBuilder::start`] waits for each worker's `/readyz`.
pub const READY: Duration = Duration::from_secs(15);

type RedisHook = Box<dyn FnOnce(&RedisServer)>;
type UrlFn = Box<dyn FnOnce(&RedisServer, Option<&Proxy>) -> String>;
type ConfigHook = Box<dyn FnOnce(&mut WorkerConfig)>;
type RoutesFn = Box<dyn FnOnce(&[String], &str) -> Vec<Route>>;

/// Builds a [`Scenario`]; see the module doc.
pub struct ScenarioBuilder {
    row: String,
    env: String,
    types: Vec<String>,
    workers: usize,
    wait_ready: bool,
    sink_default: Option<Action>,
    proxy: Option<Option<u16>>,
    redis: Option<RedisServer>,
    setup: Vec<RedisHook>,
    url: Option<UrlFn>,
    routes: Option<RoutesFn>,
    config: Vec<ConfigHook>,
}

/// A running scenario. Dropping it kills the workers, the sink, the proxy and
/// redis (in that order); when the test panics it first prints the env's keys.
pub struct Scenario {
    /// The matrix row (`T22a`), used in check messages.
    pub row: String,
    /// The `env` of the keys (`events:<env>:*`).
    pub env: String,
    /// The routed types; the first one is the default of [`Scenario::publish`].
    pub types: Vec<String>,
    /// The config the workers were started with (consumer `w1`; later workers
    /// `w2`, `w3`, ... with the same config otherwise).
    pub cfg: WorkerConfig,
    /// The running workers, `w1` first.
    pub workers: Vec<WorkerProcess>,
    /// The publish ledger of every `publish*` call.
    pub ledger: Ledger,
    /// The HTTP sink every http route points at.
    pub sink: HttpSink,
    /// The proxy between the workers and redis, when asked for.
    pub proxy: Option<Proxy>,
    /// The redis-server.
    pub redis: RedisServer,
}

/// The closing step: wait for conservation and the drain, settle, check the three
/// ledgers, assert them and (by default) the outcome metrics of every worker.
#[derive(Debug, Clone)]
pub struct Close {
    /// Bound on the wait for conservation and the drain (default 30 s).
    pub timeout: Duration,
    /// Pause after the drain, for late metric updates (default 300 ms).
    pub settle: Duration,
    /// Check options (expected dead ids, handler timeout, allowed losses).
    pub opts: CheckOpts,
    /// Duplicate bound of [`Report::assert_ok`] (default 0).
    pub dup_bound: usize,
    /// Extra text printed when the check fails.
    pub extra: String,
    /// Print the sink's request ledger (as of the check) when the check fails.
    pub sink_dump: bool,
    /// Assert the `events_total` metrics of every worker in [`Scenario::workers`]
    /// (default true; only for processes that were never killed).
    pub metrics: bool,
    /// The expected `events_total{outcome=retried}` (default `Some(0)`).
    pub retried: Option<usize>,
}

impl Default for Close {
    fn default() -> Close {
        Close {
            timeout: Duration::from_secs(30),
            settle: Duration::from_millis(300),
            opts: CheckOpts::default(),
            dup_bound: 0,
            extra: String::new(),
            sink_dump: false,
            metrics: true,
            retried: Some(0),
        }
    }
}

impl Scenario {
    /// A builder for row `row`; the env defaults to the row in lower case.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(row: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            row: row.to_string(),
            env: row.to_lowercase(),
            types: Vec::new(),
            workers: 1,
            wait_ready: true,
            sink_default: None,
            proxy: None,
            redis: None,
            setup: Vec::new(),
            url: None,
            routes: None,
            config: Vec::new(),
        }
    }
}

impl ScenarioBuilder {
    /// The env of the keys (default: the row in lower case).
    pub fn env(mut self, env: &str) -> Self {
        self.env = env.to_string();
        self
    }
    /// The routed types (one http route to the sink for all of them by default).
    pub fn types(mut self, types: &[&str]) -> Self {
        self.types = types.iter().map(|t| t.to_string()).collect();
        self
    }
    /// How many workers to start (`w1`..`wN`; default 1; 0 starts none).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Do not wait for `/readyz` after starting the workers.
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }
    /// The sink's default answer.
    pub fn sink(mut self, action: Action) -> Self {
        self.sink_default = Some(action);
        self
    }
    /// Puts a [`Proxy`] between the workers and redis (`redis_url` points at it).
    pub fn via_proxy(mut self) -> Self {
        self.proxy = Some(None);
        self
    }
    /// Puts a [`Proxy`] in front of another redis port (e.g. the TLS port); the
    /// URL then comes from [`ScenarioBuilder::url`].
    pub fn proxy_to(mut self, upstream_port: u16) -> Self {
        self.proxy = Some(Some(upstream_port));
        self
    }
    /// Uses this redis-server instead of a fresh plain one.
    pub fn redis(mut self, redis: RedisServer) -> Self {
        self.redis = Some(redis);
        self
    }
    /// Runs `f` on redis before anything else starts (ACL users, seeded keys).
    pub fn setup(mut self, f: impl FnOnce(&RedisServer) + 'static) -> Self {
        self.setup.push(Box::new(f));
        self
    }
    /// The workers' `redis_url` (default: the redis or proxy URL).
    pub fn url(mut self, f: impl FnOnce(&RedisServer, Option<&Proxy>) -> String + 'static) -> Self {
        self.url = Some(Box::new(f));
        self
    }
    /// The routes, from the types and the sink URL (default: one http route).
    pub fn routes(mut self, f: impl FnOnce(&[String], &str) -> Vec<Route> + 'static) -> Self {
        self.routes = Some(Box::new(f));
        self
    }
    /// Sets the `timeout` of every http route (default 2 s).
    pub fn route_timeout(self, timeout: &'static str) -> Self {
        self.config(move |c| {
            for r in c.routes.iter_mut().filter(|r| r.handler == "http") {
                r.timeout = Some(timeout.into());
            }
        })
    }
    /// Changes the worker config (applied in order, after the routes).
    pub fn config(mut self, f: impl FnOnce(&mut WorkerConfig) + 'static) -> Self {
        self.config.push(Box::new(f));
        self
    }
    /// Sets `EVENTS_API_TOKEN`.
    pub fn token(self, token: &'static str) -> Self {
        self.config(move |c| *c = c.clone().api_token(token))
    }

    /// Starts redis (and the proxy), the sink and the workers; waits until ready.
    pub fn start(self) -> Scenario {
        let redis = self.redis.unwrap_or_else(RedisServer::start);
        for f in self.setup {
            f(&redis);
        }
        let proxy = self.proxy.map(|up| Proxy::start(up.unwrap_or(redis.port)));
        let sink = HttpSink::start();
        if let Some(a) = self.sink_default {
            sink.set_default(a);
        }
        let url = match (self.url, &proxy) {
            (Some(f), p) => f(&redis, p.as_ref()),
            (None, Some(p)) => format!("redis://127.0.0.1:{}", p.port()),
            (None, None) => redis.url(),
        };
        let mut cfg = WorkerConfig::new(&self.env, &url);
        cfg.routes = match self.routes {
            Some(f) => f(&self.types, &sink.url()),
            None => {
                let tys: Vec<&str> = self.types.iter().map(String::as_str).collect();
                vec![Route::http(&tys, &sink.url())]
            }
        };
        for f in self.config {
            f(&mut cfg);
        }
        let mut s = Scenario {
            row: self.row,
            env: self.env,
            types: self.types,
            cfg,
            workers: Vec::new(),
            ledger: checker::ledger(),
            sink,
            proxy,
            redis,
        };
        for _ in 0..self.workers {
            s.add_worker();
        }
        if self.wait_ready {
            for w in &mut s.workers {
                w.wait_ready(READY);
            }
        }
        s
    }
}

impl Scenario {
    /// Starts one more worker `w<N>` with the scenario's config (consumer `w<N>`,
    /// its own api port) and returns its index; does not wait for ready.
    pub fn add_worker(&mut self) -> usize {
        let n = self.workers.len() + 1;
        let mut cfg = self.cfg.clone();
        if n > 1 {
            cfg.consumer = Some(format!("w{n}"));
            cfg.api_port = super::free_port();
        }
        self.workers
            .push(WorkerProcess::start(&format!("w{n}"), cfg));
        n - 1
    }

    /// Starts a worker of consumer group `group` (consumer `consumer`, process name
    /// `group`) whose http routes point at `sink_url` (`None`: the scenario's sink),
    /// with the scenario's config otherwise (its own api port); waits until ready
    /// and returns its index.
    pub fn group_worker(&mut self, group: &str, consumer: &str, sink_url: Option<String>) -> usize {
        let url = sink_url.unwrap_or_else(|| self.sink.url());
        let mut cfg = self.cfg.clone();
        cfg.group = group.to_string();
        cfg.consumer = Some(consumer.to_string());
        cfg.api_port = super::free_port();
        for r in cfg.routes.iter_mut().filter(|r| r.url.is_some()) {
            r.url = Some(url.clone());
        }
        let mut w = WorkerProcess::start(group, cfg);
        w.wait_ready(READY);
        self.workers.push(w);
        self.workers.len() - 1
    }

    /// The two-group setup of the replay rows: a `billing` worker on the scenario's
    /// sink and a `mail` worker on a sink of its own (returned); workers 0 and 1.
    pub fn billing_and_mail(&mut self) -> HttpSink {
        let mail_sink = HttpSink::start();
        self.group_worker("billing", "billing-1", None);
        self.group_worker("mail", "mail-1", Some(mail_sink.url()));
        mail_sink
    }

    /// The first worker.
    pub fn w(&mut self) -> &mut WorkerProcess {
        &mut self.workers[0]
    }

    /// The first routed type.
    pub fn ty(&self) -> &str {
        &self.types[0]
    }

    /// The proxy (panics if the scenario has none).
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("scenario built without via_proxy()")
    }

    /// An API client for the first worker's listener, with or without the token.
    pub fn api(&self, token: Option<&str>) -> Api {
        Api::new(&self.cfg.api_addr(), token)
    }

    /// Publishes `id` on the first type (direct XADD, in the ledger).
    pub fn publish(&self, id: &str) -> bool {
        self.publish_to(&self.types[0], id)
    }

    /// Publishes `id` on `ty` (direct XADD, in the ledger).
    pub fn publish_to(&self, ty: &str, id: &str) -> bool {
        checker::publish_logged(&self.redis, &self.env, ty, id, &self.ledger)
    }

    /// A background publisher of `n` events `<prefix>-<i:05>` on the first type,
    /// `gap` apart (see [`checker::spawn_publisher`]).
    pub fn publisher(&self, prefix: &str, n: usize, gap: Duration) -> JoinHandle<()> {
        let ty = &self.types[0];
        checker::spawn_publisher(&self.redis, &self.env, ty, prefix, n, gap, &self.ledger)
    }

    /// Waits (10 s) until the sink saw `n` distinct ids succeed: the load runs.
    pub fn wait_load(&self, n: usize) {
        wait_until("load running", Duration::from_secs(10), || {
            self.sink.success_counts().len() >= n
        });
    }

    /// The type names as `&str`.
    pub fn type_refs(&self) -> Vec<&str> {
        self.types.iter().map(String::as_str).collect()
    }

    /// [`checker::wait_conserved`] for this scenario (group `group`, all types).
    pub fn wait_conserved(&self, timeout: Duration) -> bool {
        let (ledger, sink, redis) = (&self.ledger, &self.sink, &self.redis);
        let (env, tys) = (&self.env, self.type_refs());
        checker::wait_conserved(ledger, sink, redis, env, "group", &tys, timeout)
    }

    /// [`checker::must_conserve`] for this scenario (group `group`, all types).
    pub fn conserve(&self, timeout: Duration) {
        self.conserve_on(&self.type_refs(), timeout);
    }

    /// [`checker::must_conserve`] with the drain checked on `types` only (e.g. none,
    /// when a test holds an entry pending on purpose).
    pub fn conserve_on(&self, types: &[&str], timeout: Duration) {
        let (ledger, sink, redis) = (&self.ledger, &self.sink, &self.redis);
        checker::must_conserve(
            &self.row, ledger, sink, redis, &self.env, "group", types, timeout,
        );
    }

    /// [`checker::check`] over the scenario's ledgers.
    pub fn check(&self, opts: &CheckOpts) -> Report {
        checker::check(
            &self.ledger.lock().unwrap(),
            &self.sink,
            &self.redis,
            &self.env,
            opts,
        )
    }

    /// [`Scenario::conserve`], a pause of `settle`, then [`Scenario::check`].
    pub fn report(&self, timeout: Duration, settle: Duration, opts: &CheckOpts) -> Report {
        self.conserve(timeout);
        std::thread::sleep(settle);
        self.check(opts)
    }

    /// The `/metrics` samples of every worker.
    pub fn scrapes(&self) -> Vec<Vec<Sample>> {
        self.workers
            .iter()
            .map(|w| parse_metrics(&w.metrics()))
            .collect()
    }

    /// [`Report::assert_metrics`] over every worker's scrape.
    pub fn assert_metrics(&self, rep: &Report, retried: Option<usize>) {
        rep.assert_metrics(&self.row, &self.scrapes(), &self.env, retried);
    }

    /// The closing step (see [`Close`]); returns the report for row-specific checks.
    pub fn conserved(&self, close: Close) -> Report {
        let rep = self.report(close.timeout, close.settle, &close.opts);
        let extra = match close.sink_dump {
            true => format!("{}{}", close.extra, self.sink.ledger_dump()),
            false => close.extra,
        };
        rep.assert_ok(&self.row, close.dup_bound, &extra);
        if close.metrics {
            self.assert_metrics(&rep, close.retried);
        }
        rep
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.redis.dump_if_panicking(&self.env);
    }
}
