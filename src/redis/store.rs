//! The connection to Redis: [`Store`] (built once per worker or CLI run), its two clients,
//! the loaded scripts, and the shared entry types. The commands live beside it by concern:
//! `streams` (stream and group commands), `keyspace` (plain keys, SCAN), `moves` (the Lua
//! moves), `admin` (operator reads); errors are `error::StoreError`.
//!
//! Two connections: `cmd` for everything else (fred pipelines concurrent commands on it) and
//! `reader` for the blocking XREADGROUP, which would otherwise stall `cmd`: on a single node a
//! connection of our own (`redis::direct_conn`), on a cluster a fred client with one
//! connection per master, carrying the consumer's non-blocking reads (`redis::cluster`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::config::Config;
use crate::model::secret::RedisUrl;
use crate::model::text::Text;
use crate::redis::direct_conn::DirectConnection;
pub(crate) use crate::redis::error::{RedisErrorKind, StoreError};
use crate::redis::refusals::Refusals;
pub(crate) use crate::redis::streams::{parse_entries, text};

/// One stream entry as read or claimed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream key it came from.
    pub stream: Text,
    /// Stream entry id.
    pub id: Text,
    /// Fields in stream order (invalid UTF-8 replaced with U+FFFD); the id and the fields
    /// share one buffer of the entry's own.
    pub fields: Vec<(Text, Text)>,
    /// Deliveries of this entry to the group so far, this one included.
    pub deliveries: u64,
}

/// One pending entry as XPENDING reports it.
#[derive(Debug, Clone)]
pub struct PendingEntry {
    /// Stream entry id.
    pub id: String,
    /// Deliveries so far.
    pub deliveries: u64,
}

/// The XREADGROUP connection (see the module doc).
#[derive(Clone)]
pub(super) enum Reader {
    /// A single node's: our own connection.
    Direct(Arc<DirectConnection>),
    /// A cluster's: a fred client (one connection per master).
    Cluster(Client),
}

/// Connections and scripts of one worker.
#[derive(Clone)]
pub struct Store {
    pub(crate) cmd: Client,
    pub(super) reader: Reader,
    /// A single node's acknowledging connection (`direct_conn`; opened when the worker starts
    /// consuming or at the first acknowledgement, so commands that never acknowledge never
    /// open it). `None` on a cluster, whose acknowledgements go through fred.
    pub(super) acks: Option<Arc<DirectConnection>>,
    url: RedisUrl,
    /// The last connection error fred reported, until it reconnects.
    last_error: Arc<Mutex<Option<StoreError>>>,
    /// Connection errors fred reported per node (`host:port`), for
    /// `event_worker_redis_node_errors_total`.
    node_errors: NodeErrors,
    /// Where refused writes (OOM, READONLY, ...) are recorded (see `redis::refusals`).
    refusals: Arc<Refusals>,
    pub(super) move_to_stream: Script,
    pub(super) move_to_retry: Script,
    pub(super) forward_due: Script,
    pub(super) publish_once: Script,
    pub(super) apply_migration_template: &'static str,
    /// Whether the URL names a Redis Cluster (`redis-cluster://`, `rediss-cluster://`): moves
    /// across slots then run destination first, source second (see `redis::cluster`).
    pub(crate) cluster: bool,
    /// `[redis] wait_replicas` > 0: the WAIT policy and its connections (`redis::replicas`).
    pub(crate) waiting: Option<crate::redis::replicas::Waiting>,
}

use crate::redis::dlq::MOVE_TO_STREAM;
const MOVE_TO_RETRY: &str = include_str!("scripts/move_to_retry.lua");
const FORWARD_DUE: &str = include_str!("scripts/forward_due.lua");
pub(super) const PUBLISH_ONCE: &str = include_str!("scripts/publish_once.lua");
const APPLY_MIGRATION: &str = include_str!("scripts/apply_migration.lua");

/// A command routed on a cluster to `key`'s slot (fred 10.1 routes custom commands by
/// `ClusterHash::Custom` only; any other hash reads the first string argument).
pub(super) fn keyed(name: &'static str, key: &str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Custom(super::cluster::slot(key)), false)
}

pub(super) fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Offset(1), false)
}

impl Store {
    /// Builds the clients (reconnecting with backoff forever) and connects.
    ///
    /// # Errors
    /// When the URL, the TLS setup or the first connection fails (wrong password included).
    pub async fn connect(config: &Config, client_name: &str) -> Result<Store, StoreError> {
        let url = config.redis_url.clone();
        let err = |op: &str, e: &fred::error::Error| StoreError::from_fred(&url, op, e);
        let mut fred_config =
            fred::types::config::Config::from_url(url.expose()).map_err(|e| err("config", &e))?;
        if url.is_tls() {
            let tls = super::tls::tls_connector(config)
                .map_err(|e| StoreError::tls_setup(&url, e.to_string()))?;
            fred_config.tls = Some(tls.into());
        }
        fred_config.fail_fast = true;
        let unresponsive =
            (config.read_block + Duration::from_secs(5)).max(Duration::from_secs(10));
        // fred reconnects a cluster client as a whole (every node's commands wait): while a dead
        // master awaits its replica's promotion, a short cap lets the client pick up the new
        // master within a second of the promotion instead of up to 5 s later.
        let max_delay = if url.is_cluster() { 1_000 } else { 5_000 };
        let direct =
            DirectConnection::new(&fred_config, format!("event-worker:{client_name}:reader"));
        let acks = DirectConnection::new(&fred_config, format!("event-worker:{client_name}:ack"));
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, max_delay, 2))
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = Duration::from_secs(5);
                c.max_command_attempts = 3;
                c.auto_client_setname = false;
                c.tcp = super::tcp::fred_config();
                // A connection that stops answering is replaced before any command times out,
                // so a late reply can never be matched to the wrong command.
                c.unresponsive.max_timeout = Some(unresponsive);
                c.unresponsive.interval = Duration::from_secs(1);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = unresponsive + Duration::from_secs(5);
            });
        let cmd_client = builder.build().map_err(|e| err("client", &e))?;
        let reader = match direct {
            Some(direct) => Reader::Direct(Arc::new(direct)),
            None => Reader::Cluster(builder.build().map_err(|e| err("client", &e))?),
        };
        let last_error = Arc::new(Mutex::new(None));
        // Connected concurrently: on a remote Redis each connection's handshake is a few
        // round trips.
        let connect = |client: &Client, role: &str| {
            let (client, name, url) = (
                client.clone(),
                format!("event-worker:{client_name}:{role}"),
                url.clone(),
            );
            async move {
                init(&client, &url).await?;
                name_client(&client, &name, &url);
                Ok::<_, StoreError>(())
            }
        };
        let connect_reader = async {
            match &reader {
                Reader::Direct(direct) => direct
                    .connect()
                    .await
                    .map_err(|e| StoreError::from_fred(&url, format!("connect to {url}"), &e)),
                Reader::Cluster(client) => connect(client, "reader").await,
            }
        };
        futures::future::try_join(connect(&cmd_client, "cmd"), connect_reader).await?;
        keep_last_error(&cmd_client, &url, &last_error);
        preload_on_reconnect(&cmd_client, &url);
        let mut waiters = Vec::new();
        if config.redis.wait_replicas > 0 {
            for _ in 0..crate::redis::replicas::WAITERS {
                waiters.push(builder.build().map_err(|e| err("client", &e))?);
            }
            futures::future::try_join_all(waiters.iter().map(|c| connect(c, "wait"))).await?;
            for client in &waiters {
                preload_on_reconnect(client, &url);
            }
        }
        let node_errors = NodeErrors::default();
        if let Reader::Cluster(reader) = &reader {
            for client in [&cmd_client, reader] {
                count_node_errors(client, &node_errors);
            }
        }
        let store = Store {
            cmd: cmd_client,
            reader,
            acks: acks.map(Arc::new),
            url: url.clone(),
            last_error,
            node_errors,
            refusals: Arc::default(),
            move_to_stream: Script::from_lua(MOVE_TO_STREAM),
            move_to_retry: Script::from_lua(MOVE_TO_RETRY),
            forward_due: Script::from_lua(FORWARD_DUE),
            publish_once: Script::from_lua(PUBLISH_ONCE),
            apply_migration_template: APPLY_MIGRATION,
            cluster: url.is_cluster(),
            waiting: crate::redis::replicas::Waiting::new(&config.redis, waiters),
        };
        store.preload_scripts().await;
        Ok(store)
    }

    /// The error of the last failed (re)connection attempt, in plain words, while the client
    /// has not reconnected since (e.g. `connection refused` while Redis is down).
    pub fn connection_error(&self) -> Option<StoreError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// On a cluster, errors so far per node (`host:port`) and kind: `connection` (fred's
    /// connection errors, both connections together) and `read` (failed XREADGROUPs, by the
    /// node fred routed them to); the nodes connected now count 0 of each (so their series
    /// start at 0). Empty on a single node (its errors are in `redis_errors_total` and
    /// `redis_up`).
    pub fn node_errors(&self) -> Vec<(String, &'static str, u64)> {
        if !self.cluster {
            return Vec::new();
        }
        let mut counts = self
            .node_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut nodes: std::collections::BTreeSet<String> =
            counts.keys().map(|(n, _)| n.clone()).collect();
        for server in self.cmd.active_connections() {
            let node = server.to_string();
            if !nodes.contains(&node) && nodes.len() >= MAX_NODES {
                break;
            }
            for kind in NODE_ERROR_KINDS {
                counts.entry((node.clone(), kind)).or_insert(0);
            }
            nodes.insert(node);
        }
        counts.into_iter().map(|((n, k), c)| (n, k, c)).collect()
    }

    /// Counts a failed read of `slot` against the node fred routes that slot to (a cluster
    /// only; see [`Store::node_errors`]).
    pub(crate) fn count_read_error(&self, slot: u16) {
        let Reader::Cluster(reader) = &self.reader else {
            return;
        };
        let node = reader
            .cached_cluster_state()
            .and_then(|s| s.get_server(slot).map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".to_string());
        count_node_error(&self.node_errors, node, "read");
    }

    /// This store recording its refused writes into `refusals` (a worker's `Health` holds it).
    pub fn recording_refusals(mut self, refusals: Arc<Refusals>) -> Store {
        self.refusals = refusals;
        self
    }

    /// The refused writes of this store.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// A fred error of `op` as a [`StoreError`]: classified, password scrubbed; a refused
    /// write is recorded in [`Store::refusals`].
    pub(crate) fn error(&self, op: impl Into<String>, e: fred::error::Error) -> StoreError {
        let error = StoreError::from_fred(&self.url, op, &e);
        self.refusals.record(error.kind);
        error
    }

    pub(crate) async fn call(
        &self,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<Value, StoreError> {
        let op = match args.first().and_then(|a| a.as_str()) {
            Some(k) => format!("{name} {k}"),
            None => name.to_string(),
        };
        self.cmd
            .custom(cmd(name), args)
            .await
            .map_err(|e| self.error(op, e))
    }

    /// Opens the acknowledging connection of a single node now, so the first acknowledgement
    /// does not wait for its handshake (it is otherwise opened at the first one, so commands
    /// that never acknowledge never open it). A failure is left to the first acknowledgement,
    /// which connects again and reports it.
    pub async fn open_ack_connection(&self) {
        if let Some(acks) = &self.acks
            && let Err(e) = acks.connect().await
        {
            let error = StoreError::from_fred(&self.url, "open the acknowledging connection", &e);
            tracing::debug!(error = %error, "the acknowledging connection did not open; the first acknowledgement tries again");
        }
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        for client in self.waiting.iter().flat_map(|w| w.clients.iter()) {
            let _ = client.quit().await;
        }
        match &self.reader {
            Reader::Direct(direct) => direct.close(),
            Reader::Cluster(client) => drop(client.quit().await),
        }
        if let Some(acks) = &self.acks {
            acks.close();
        }
        let _ = self.cmd.quit().await;
    }

    /// Round-trip time of a PING, bounded by `timeout`.
    ///
    /// # Errors
    /// When Redis does not answer in time.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let options = Options {
            timeout: Some(timeout),
            max_attempts: Some(1),
            ..Default::default()
        };
        let r: Result<Value, _> = self.cmd.with_options(&options).ping(None).await;
        r.map_err(|e| self.error("PING", e))?;
        Ok(start.elapsed())
    }
}

/// How long a `rediss://` connection may go without a TLS answer before the server is probed
/// for plain Redis protocol (a plaintext server never answers the TLS handshake).
const PLAINTEXT_PROBE_AFTER: Duration = Duration::from_millis(500);

/// Names `client`'s connections `name` now and again after every reconnect. The name is
/// visible in CLIENT LIST: it carries no secret, only the process and the role. On a cluster
/// every master's connection carries it (see `name_connections`). The first naming is not
/// waited for: it goes out beside the caller's next commands (one round trip less before a
/// worker's first read), so the first command or two may run before the name is set.
fn name_client(client: &Client, name: &str, url: &RedisUrl) {
    let cluster = url.is_cluster();
    let (first, first_name) = (client.clone(), name.to_string());
    tokio::spawn(async move {
        super::cluster::name_connections(&first, &first_name, None, cluster).await;
    });
    let (again, name) = (client.clone(), name.to_string());
    client.on_reconnect(move |server| {
        let (client, name) = (again.clone(), name.clone());
        async move {
            super::cluster::name_connections(&client, &name, Some(server), cluster).await;
            Ok(())
        }
    });
}

/// Loads every script on each node `client` reconnects to (a restarted node has none; see
/// `cluster::preload_scripts_on`).
fn preload_on_reconnect(client: &Client, url: &RedisUrl) {
    let (again, cluster) = (client.clone(), url.is_cluster());
    client.on_reconnect(move |server| {
        let client = again.clone();
        async move {
            super::cluster::preload_scripts_on(&client, server, cluster).await;
            Ok(())
        }
    });
}

/// Connects `client`. For a `rediss://` URL whose handshake has not finished after
/// [`PLAINTEXT_PROBE_AFTER`], a second connection sends a plain `PING`: a RESP answer means the
/// server speaks plain Redis, and the error says to use `redis://` at once instead of after the
/// 5 s connection timeout.
async fn init(client: &Client, url: &RedisUrl) -> Result<(), StoreError> {
    let op = format!("connect to {url}");
    let c = client.clone();
    let mut connect = Box::pin(async move { c.init().await.map(drop) });
    if !url.is_tls() {
        return connect
            .await
            .map_err(|e| StoreError::from_fred(url, op, &e));
    }
    let server = StoreError::plaintext_server(url).server;
    let probe = async {
        tokio::time::sleep(PLAINTEXT_PROBE_AFTER).await;
        if super::tls::speaks_plain_redis(&server, Duration::from_secs(1)).await {
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        r = &mut connect => r.map_err(|e| StoreError::from_fred(url, op, &e)),
        () = probe => {
            // Let the attempt end by itself (fred then stops its connection task).
            tokio::spawn(connect);
            Err(StoreError::plaintext_server(url))
        }
    }
}

/// Errors per node and kind (see [`Store::node_errors`]).
type NodeErrors = Arc<Mutex<std::collections::BTreeMap<(String, &'static str), u64>>>;

/// Adds one error of `kind` on `node` to `counts` (past [`MAX_NODES`] nodes, under `other`).
fn count_node_error(counts: &NodeErrors, node: String, kind: &'static str) {
    let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
    let known = map.keys().any(|(n, _)| *n == node);
    let nodes = map
        .keys()
        .map(|(n, _)| n)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let node = if known || nodes < MAX_NODES {
        node
    } else {
        "other".to_string()
    };
    *map.entry((node, kind)).or_insert(0) += 1;
}

/// The most nodes counted by name; errors of further nodes count as `other` (the label set
/// of `event_worker_redis_node_errors_total` stays bounded across many failovers).
const MAX_NODES: usize = 64;

/// The `kind` label values of `event_worker_redis_node_errors_total`.
const NODE_ERROR_KINDS: [&str; 2] = ["connection", "read"];

/// Counts the connection errors fred reports on `client` per node in `counts`.
fn count_node_errors(client: &Client, counts: &NodeErrors) {
    let counts = counts.clone();
    client.on_error(move |(_, server)| {
        let node = server.map_or_else(|| "unknown".to_string(), |s| s.to_string());
        count_node_error(&counts, node, "connection");
        async { Ok(()) }
    });
}

/// Keeps the last connection error fred reports on `client` in `slot` (cleared on reconnect),
/// so health and the pinger can say why Redis is unreachable.
fn keep_last_error(client: &Client, url: &RedisUrl, slot: &Arc<Mutex<Option<StoreError>>>) {
    let (set, op) = (slot.clone(), format!("connect to {url}"));
    let url = url.clone();
    client.on_error(move |(e, _server)| {
        let error = StoreError::from_fred(&url, op.clone(), &e);
        *set.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        async { Ok(()) }
    });
    let clear = slot.clone();
    client.on_reconnect(move |_| {
        *clear.lock().unwrap_or_else(|p| p.into_inner()) = None;
        async { Ok(()) }
    });
}
