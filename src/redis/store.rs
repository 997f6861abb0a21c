//! The only module that talks to Redis: connections, stream and sorted-set commands, and
//! the Lua scripts that make every move destination-first, source-second and atomic.
//!
//! Two connections: `cmd` for everything else (fred pipelines concurrent commands on it) and
//! `reader` for the blocking XREADGROUP, which would otherwise stall `cmd`.

use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::config::Config;
use crate::model::secret::RedisUrl;

/// A Redis failure, with the password scrubbed from the message.
#[derive(Debug, thiserror::Error)]
#[error("redis {op}: {message}")]
pub struct StoreError {
    /// The operation that failed, e.g. `XREADGROUP events:prod:a`.
    pub op: String,
    /// What Redis or the client said.
    pub message: String,
}

impl StoreError {
    /// Whether Redis said the consumer group (or its stream) does not exist.
    pub fn is_nogroup(&self) -> bool {
        self.message.contains("NOGROUP")
    }

    /// Whether Redis said a key holds another type (WRONGTYPE).
    pub fn is_wrong_type(&self) -> bool {
        self.message.contains("WRONGTYPE")
    }
}

/// One stream entry as read or claimed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream key it came from.
    pub stream: String,
    /// Stream entry id.
    pub id: String,
    /// Fields in stream order (invalid UTF-8 replaced with U+FFFD).
    pub fields: Vec<(String, String)>,
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

/// Connections and scripts of one worker.
#[derive(Clone)]
pub struct Store {
    pub(crate) cmd: Client,
    reader: Client,
    url: RedisUrl,
    move_to_stream: Script,
    move_to_retry: Script,
    forward_due: Script,
    apply_migration_template: &'static str,
}

const MOVE_TO_STREAM: &str = include_str!("scripts/move_to_stream.lua");
const MOVE_TO_RETRY: &str = include_str!("scripts/move_to_retry.lua");
const FORWARD_DUE: &str = include_str!("scripts/forward_due.lua");
const APPLY_MIGRATION: &str = include_str!("scripts/apply_migration.lua");

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Offset(1), false)
}

impl Store {
    /// Builds the clients (reconnecting with backoff forever) and connects.
    ///
    /// # Errors
    /// When the URL, the TLS setup or the first connection fails (wrong password included).
    pub async fn connect(config: &Config, client_name: &str) -> Result<Store, StoreError> {
        let url = config.redis_url.clone();
        let err = |op: &str, e: &dyn std::fmt::Display| StoreError {
            op: op.to_string(),
            message: url.scrub(&e.to_string()),
        };
        let mut fred_config =
            fred::types::config::Config::from_url(url.expose()).map_err(|e| err("config", &e))?;
        if url.is_tls() {
            fred_config.tls = Some(tls_connector(config).map_err(|e| err("tls", &e))?.into());
        }
        fred_config.fail_fast = true;
        let unresponsive =
            (config.read_block + Duration::from_secs(5)).max(Duration::from_secs(10));
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = Duration::from_secs(5);
                c.max_command_attempts = 3;
                c.auto_client_setname = false;
                // A connection that stops answering is replaced before any command times out,
                // so a late reply can never be matched to the wrong command.
                c.unresponsive.max_timeout = Some(unresponsive);
                c.unresponsive.interval = Duration::from_secs(1);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = unresponsive + Duration::from_secs(5);
            });
        let cmd_client = builder.build().map_err(|e| err("client", &e))?;
        let reader = builder.build().map_err(|e| err("client", &e))?;
        for (client, role) in [(&cmd_client, "cmd"), (&reader, "reader")] {
            client
                .init()
                .await
                .map_err(|e| err(&format!("connect to {url}"), &e))?;
            // The client name is visible in CLIENT LIST: it carries no secret, only the role.
            // It is set again after every reconnect.
            let name = format!("event-worker:{client_name}:{role}");
            let _: Result<Value, _> = client
                .custom(cmd("CLIENT"), vec!["SETNAME".to_string(), name.clone()])
                .await;
            let again = client.clone();
            client.on_reconnect(move |_| {
                let (client, name) = (again.clone(), name.clone());
                async move {
                    let _: Result<Value, _> = client
                        .custom(cmd("CLIENT"), vec!["SETNAME".to_string(), name])
                        .await;
                    Ok(())
                }
            });
        }
        Ok(Store {
            cmd: cmd_client,
            reader,
            url,
            move_to_stream: Script::from_lua(MOVE_TO_STREAM),
            move_to_retry: Script::from_lua(MOVE_TO_RETRY),
            forward_due: Script::from_lua(FORWARD_DUE),
            apply_migration_template: APPLY_MIGRATION,
        })
    }

    pub(crate) fn error(&self, op: impl Into<String>, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            op: op.into(),
            message: self.url.scrub(&e.to_string()),
        }
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

    /// Closes both connections.
    pub async fn quit(&self) {
        let _ = self.reader.quit().await;
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

    /// Creates `group` on `stream` at `0` (MKSTREAM); an existing group is success.
    ///
    /// # Errors
    /// Any other Redis error.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![
            "CREATE".into(),
            stream.into(),
            group.into(),
            "0".into(),
            "MKSTREAM".into(),
        ];
        match self.cmd.custom::<Value, _>(cmd("XGROUP"), args).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.error(format!("XGROUP CREATE {stream}"), e)),
        }
    }

    /// XREADGROUP of new entries (`>`) from `streams`, at most `count` per stream, blocking
    /// up to `block` (not at all with `None`) on the dedicated reader connection.
    ///
    /// # Errors
    /// Redis errors, NOGROUP included (see [`StoreError::is_nogroup`]).
    pub async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut args: Vec<Value> = vec![
            "GROUP".into(),
            group.into(),
            consumer.into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        if let Some(b) = block {
            args.push("BLOCK".into());
            args.push((b.as_millis().max(1) as i64).into());
        }
        args.push("STREAMS".into());
        let first_key = args.len();
        args.extend(streams.iter().map(|s| Value::from(s.as_str())));
        args.extend(streams.iter().map(|_| Value::from(">")));
        // Sent once: replayed after a connection cut, a read would deliver new entries while
        // those of the lost reply sit pending on this consumer unseen; an error instead lets
        // the consumer take those back at once (`reclaim::claim_own_leftovers`).
        let options = Options {
            timeout: Some(block.unwrap_or_default() + Duration::from_secs(15)),
            max_attempts: Some(1),
            ..Default::default()
        };
        let command = CustomCommand::new_static(
            "XREADGROUP",
            ClusterHash::Offset(first_key),
            block.is_some(),
        );
        let reply: Value = self
            .reader
            .with_options(&options)
            .custom(command, args)
            .await
            .map_err(|e| self.error("XREADGROUP", e))?;
        Ok(parse_xread(reply))
    }

    /// XACK of handled entries of one stream, in one command (and XDEL of them when
    /// `delete`, for the redeliver stream).
    ///
    /// # Errors
    /// Redis errors; the entries then stay pending and are redelivered (at-least-once).
    pub async fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[&str],
        delete: bool,
    ) -> Result<(), StoreError> {
        let mut args: Vec<Value> = Vec::with_capacity(ids.len() + 2);
        args.push(stream.into());
        args.push(group.into());
        args.extend(ids.iter().map(|i| Value::from(*i)));
        self.call("XACK", args).await?;
        if delete {
            let mut args: Vec<Value> = Vec::with_capacity(ids.len() + 1);
            args.push(stream.into());
            args.extend(ids.iter().map(|i| Value::from(*i)));
            self.call("XDEL", args).await?;
        }
        Ok(())
    }

    /// Atomically appends `fields` to `dest` and acknowledges `entry` on `source`, only if
    /// the entry is still pending on `consumer`. Returns the new entry id, or `None` when
    /// the entry was no longer ours.
    ///
    /// # Errors
    /// Redis errors; nothing moved then.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_to_stream(
        &self,
        dest: &str,
        source: &str,
        group: &str,
        entry_id: &str,
        consumer: &str,
        delete_source: bool,
        fields: &[(String, String)],
    ) -> Result<Option<String>, StoreError> {
        let mut args: Vec<Value> = vec![
            group.into(),
            entry_id.into(),
            consumer.into(),
            if delete_source { "1" } else { "0" }.into(),
        ];
        for (k, v) in fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let reply: Value = self
            .move_to_stream
            .evalsha_with_reload(&self.cmd, vec![dest, source], args)
            .await
            .map_err(|e| self.error(format!("move {source} {entry_id} -> {dest}"), e))?;
        Ok(reply.as_str().map(|s| s.into_owned()))
    }

    /// Atomically adds `member` to the retry set `retry_key` at `due_ms` and acknowledges
    /// the entry, only if it is still pending on `consumer`. Returns whether it moved.
    ///
    /// # Errors
    /// Redis errors; nothing moved then.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_to_retry(
        &self,
        retry_key: &str,
        source: &str,
        group: &str,
        entry_id: &str,
        consumer: &str,
        delete_source: bool,
        due_ms: u64,
        member: &str,
    ) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![
            group.into(),
            entry_id.into(),
            consumer.into(),
            if delete_source { "1" } else { "0" }.into(),
            (due_ms as i64).into(),
            member.into(),
        ];
        let reply: Value = self
            .move_to_retry
            .evalsha_with_reload(&self.cmd, vec![retry_key, source], args)
            .await
            .map_err(|e| self.error(format!("retry {source} {entry_id}"), e))?;
        Ok(reply.as_i64() == Some(1))
    }

    /// Moves up to `limit` retries due at `now_ms` from `retry_key` to `redeliver_key`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn forward_due(
        &self,
        retry_key: &str,
        redeliver_key: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let reply: Value = self
            .forward_due
            .evalsha_with_reload(
                &self.cmd,
                vec![retry_key, redeliver_key],
                vec![(now_ms as i64), (limit as i64)],
            )
            .await
            .map_err(|e| self.error(format!("forward {retry_key}"), e))?;
        Ok(reply.as_u64().unwrap_or(0))
    }

    /// Consumers with pending entries on `stream`: `(consumer, count)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pending_consumers(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let reply = self
            .call("XPENDING", vec![stream.into(), group.into()])
            .await?;
        let mut out = Vec::new();
        if let Value::Array(parts) = reply
            && let Some(Value::Array(consumers)) = parts.into_iter().nth(3)
        {
            for c in consumers {
                if let Value::Array(pair) = c {
                    let name = pair.first().and_then(text).unwrap_or_default();
                    let count = pair.get(1).and_then(Value::as_u64).unwrap_or(0);
                    out.push((name, count));
                }
            }
        }
        Ok(out)
    }

    /// Pending entries of `stream` idle at least `min_idle`, optionally of one consumer.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pending_entries(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
        consumer: Option<&str>,
    ) -> Result<Vec<PendingEntry>, StoreError> {
        let mut args: Vec<Value> = vec![
            stream.into(),
            group.into(),
            "IDLE".into(),
            (min_idle.as_millis() as i64).into(),
            "-".into(),
            "+".into(),
            (count as i64).into(),
        ];
        if let Some(c) = consumer {
            args.push(c.into());
        }
        let reply = self.call("XPENDING", args).await?;
        Ok(reply
            .into_array()
            .into_iter()
            .filter_map(|row| {
                let row = row.into_array();
                Some(PendingEntry {
                    id: text(row.first()?)?,
                    deliveries: row.get(3)?.as_u64()?,
                })
            })
            .collect())
    }

    /// XCLAIM of `ids` to `consumer` if still idle at least `min_idle`. Returns the claimed
    /// entries (deliveries filled in by the caller); deleted entries are dropped by Redis.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[String],
    ) -> Result<Vec<Entry>, StoreError> {
        let mut args: Vec<Value> = vec![
            stream.into(),
            group.into(),
            consumer.into(),
            (min_idle.as_millis() as i64).into(),
        ];
        args.extend(ids.iter().map(|i| Value::from(i.as_str())));
        let reply = self.call("XCLAIM", args).await?;
        Ok(parse_entries(stream, reply))
    }

    /// Resets the idle time of entries this consumer is still working on (XCLAIM JUSTID to
    /// itself), so the visibility-timeout backstop never steals from a live, slow handler.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let mut args: Vec<Value> = vec![stream.into(), group.into(), consumer.into(), 0.into()];
        args.extend(ids.iter().map(|i| Value::from(i.as_str())));
        args.push("JUSTID".into());
        self.call("XCLAIM", args).await.map(|_| ())
    }

    /// Sets the heartbeat key with a TTL.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn set_heartbeat(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![
            key.into(),
            value.into(),
            "PX".into(),
            (ttl.as_millis() as i64).into(),
        ];
        self.call("SET", args).await.map(|_| ())
    }

    /// Deletes a key this worker owns (its heartbeat on a clean stop).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call("DEL", vec![key.into()]).await.map(|_| ())
    }

    /// The Redis type of `key` (`none` when absent).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn key_type(&self, key: &str) -> Result<String, StoreError> {
        Ok(text(&self.call("TYPE", vec![key.into()]).await?).unwrap_or_else(|| "none".into()))
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.call("EXISTS", vec![key.into()]).await?.as_u64() == Some(1))
    }

    /// Keys of type stream matching `pattern` (SCAN, never KEYS), at most `limit`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn scan_streams(
        &self,
        pattern: &str,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<String>, StoreError> {
        self.scan(pattern, Some("stream"), limit, keep).await
    }

    /// Keys matching `pattern` (and of type `kind`, if given) for which `keep` holds,
    /// sorted, at most `limit` (keys `keep` refuses do not count towards it).
    pub(crate) async fn scan(
        &self,
        pattern: &str,
        kind: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<String>, StoreError> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let mut args: Vec<Value> = vec![
                cursor.as_str().into(),
                "MATCH".into(),
                pattern.into(),
                "COUNT".into(),
                1000.into(),
            ];
            if let Some(k) = kind {
                args.push("TYPE".into());
                args.push(k.into());
            }
            let reply: Value = self
                .cmd
                .custom(
                    CustomCommand::new_static("SCAN", ClusterHash::Random, false),
                    args,
                )
                .await
                .map_err(|e| self.error("SCAN", e))?;
            let mut parts = reply.into_array().into_iter();
            cursor = parts
                .next()
                .as_ref()
                .and_then(text)
                .unwrap_or_else(|| "0".into());
            out.extend(
                parts
                    .next()
                    .map(Value::into_array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(text)
                    .filter(|k| keep(k)),
            );
            if cursor == "0" || out.len() >= limit {
                break;
            }
        }
        out.sort();
        out.dedup();
        out.truncate(limit);
        Ok(out)
    }

    /// XADD of `fields` to `stream`; returns the entry id.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn xadd(
        &self,
        stream: &str,
        fields: &[(String, String)],
    ) -> Result<String, StoreError> {
        let mut args: Vec<Value> = vec![stream.into(), "*".into()];
        for (k, v) in fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        // Sent once: replaying a non-idempotent XADD after a connection cut could append the
        // event twice; the caller gets an error instead and retries with the same id.
        let once = Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        let reply: Value = self
            .cmd
            .with_options(&once)
            .custom(cmd("XADD"), args)
            .await
            .map_err(|e| self.error(format!("XADD {stream}"), e))?;
        reply
            .as_str()
            .map(|s| s.into_owned())
            .ok_or_else(|| self.error("XADD", "no id in reply"))
    }

    /// The server's `maxmemory-policy`, or `None` when CONFIG is not allowed (managed Redis).
    pub async fn maxmemory_policy(&self) -> Option<String> {
        let reply = self
            .call("CONFIG", vec!["GET".into(), "maxmemory-policy".into()])
            .await
            .ok()?;
        reply.into_array().get(1).and_then(text)
    }

    /// Applies a migration body once (see `scripts/apply_migration.lua`). Returns whether it
    /// ran now (false: it had been applied before).
    ///
    /// # Errors
    /// Redis errors, including errors raised by the body.
    pub async fn apply_migration(
        &self,
        hash: &str,
        name: &str,
        body: &str,
        prefix: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let script = self.apply_migration_template.replace("--BODY--", body);
        let reply: Value = self
            .cmd
            .eval(script, vec![hash], vec![name, now, prefix])
            .await
            .map_err(|e| self.error(format!("migration {name}"), e))?;
        Ok(reply.as_i64() == Some(1))
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    v.as_str_lossy().map(|s| s.into_owned())
}

/// Parses an XREADGROUP reply: `[[stream, [[id, [f, v, ...]], ...]], ...]` or nil.
fn parse_xread(reply: Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for stream_reply in reply.into_array() {
        let mut parts = stream_reply.into_array().into_iter();
        let (Some(key), Some(entries)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(key) = text(&key) else { continue };
        let mut entries = parse_entries(&key, entries);
        for e in &mut entries {
            e.deliveries = 1;
        }
        out.extend(entries);
    }
    out
}

/// Parses `[[id, [f, v, ...]], ...]`; entries whose fields are nil (deleted) are skipped.
pub(crate) fn parse_entries(stream: &str, reply: Value) -> Vec<Entry> {
    reply
        .into_array()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = text(&parts.next()?)?;
            let raw = parts.next()?;
            if raw.is_null() {
                return None;
            }
            let flat = raw.into_array();
            let fields = flat
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| {
                    (
                        text(&c[0]).unwrap_or_default(),
                        text(&c[1]).unwrap_or_default(),
                    )
                })
                .collect();
            Some(Entry {
                stream: stream.to_string(),
                id,
                fields,
                deliveries: 0,
            })
        })
        .collect()
}

fn tls_connector(config: &Config) -> Result<fred::types::config::TlsConnector, String> {
    let ca_file = config.tls_ca_file.as_deref();
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    let mut roots = fred::rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls_ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates (system store empty and no tls_ca_file)".to_string(),
        );
    }
    let builder = fred::rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            use fred::rustls::pki_types::PrivateKeyDer;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("tls_cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls_key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls_cert_file: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(fred::types::config::TlsConnector::from(tls))
}
