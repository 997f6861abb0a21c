//! The daemon's outbox (README "Outbox"): opened once at start when `outbox.enabled` (a
//! second process on the same directory refuses to start), shared with the publish
//! endpoints through the worker view, drained by [`crate::outbox::pump::run`] once Redis is
//! connected, and reported in metrics (gauges every second) and history (`queued`,
//! `drained`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::model::time::now_ms;
use crate::outbox::fallback::{Notice, REASONS};
use crate::outbox::pump::{self, Pump};
use crate::outbox::{Outbox, OutboxError};
use crate::settle::history::{Record, kind};
use crate::worker::parts::Parts;

/// Opens the outbox of `cfg` when it is enabled (on the blocking pool).
///
/// # Errors
/// Another process holds the directory, or it cannot be opened.
pub(crate) async fn open(cfg: &Config) -> Result<Option<Arc<Outbox>>, OutboxError> {
    if !cfg.outbox.enabled {
        return Ok(None);
    }
    let o = &cfg.outbox;
    let (dir, options, after, keys) = (
        o.dir.clone(),
        o.options(),
        o.fallback_after,
        Keys::new(&cfg.env),
    );
    let outbox = tokio::task::spawn_blocking(move || Outbox::shared(&dir, options, after, keys))
        .await
        .expect("outbox open task")?;
    let s = outbox.status();
    info!(dir = %outbox.dir().display(), queued = s.records, torn = s.torn_at_open, "outbox open");
    if let Some(w) = crate::outbox::durability_warning(outbox.dir()) {
        warn!("{w}");
    }
    Ok(Some(outbox))
}

/// Counts queued, drained and refused events and writes their history records.
fn listen(outbox: &Outbox, parts: &Parts) {
    let (metrics, history, env) = (
        parts.metrics.clone(),
        parts.history.clone(),
        parts.env().to_string(),
    );
    for r in REASONS {
        let labels = [env.as_str(), r.label()];
        metrics
            .outbox_appended_total
            .with_label_values(&labels)
            .inc_by(0);
    }
    for r in ["full", "disk_full", "not_writable", "error"] {
        let labels = [env.as_str(), r];
        metrics
            .outbox_refused_total
            .with_label_values(&labels)
            .inc_by(0);
    }
    metrics
        .outbox_drained_total
        .with_label_values(&[&env])
        .inc_by(0);
    outbox.set_listener(Arc::new(move |notice: &Notice| match notice {
        Notice::Queued(q) => {
            let labels = [env.as_str(), q.reason.label()];
            metrics
                .outbox_appended_total
                .with_label_values(&labels)
                .inc();
            let detail = format!("queued in the outbox ({})", q.reason.label());
            history.record(Record::new(
                kind::QUEUED,
                &q.id,
                &q.event_type,
                "",
                q.correlation_id.as_deref(),
                0,
                &detail,
            ));
        }
        Notice::Drained(p, correlation) => {
            metrics
                .outbox_drained_total
                .with_label_values(&[&env])
                .inc();
            let t = p.stream.rsplit(':').next().unwrap_or_default();
            let detail = match p.duplicate {
                true => "drained from the outbox (already in the stream)",
                false => "drained from the outbox",
            };
            history.record(Record::new(
                kind::DRAINED,
                &p.id,
                t,
                "",
                correlation.as_deref(),
                0,
                detail,
            ));
        }
        Notice::Refused(reason) => {
            let labels = [env.as_str(), *reason];
            metrics
                .outbox_refused_total
                .with_label_values(&labels)
                .inc();
        }
    }));
}

/// Sets the outbox gauges from its status, and adds the fsyncs since the last call
/// (`synced`: the fsync count and microseconds counted so far).
fn gauges(outbox: &Outbox, metrics: &Metrics, env: &str, synced: &mut (u64, u64)) {
    let s = outbox.status();
    let labels = [env];
    metrics
        .outbox_fsyncs_total
        .with_label_values(&labels)
        .inc_by(s.fsyncs.saturating_sub(synced.0));
    metrics
        .outbox_fsync_seconds_total
        .with_label_values(&labels)
        .inc_by(s.fsync_micros.saturating_sub(synced.1) as f64 / 1e6);
    *synced = (s.fsyncs.max(synced.0), s.fsync_micros.max(synced.1));
    metrics
        .outbox_depth
        .with_label_values(&labels)
        .set(s.records as i64);
    metrics
        .outbox_bytes
        .with_label_values(&labels)
        .set(s.bytes as i64);
    let age = s.oldest_time_ms.map_or(0, |t| now_ms().saturating_sub(t));
    metrics
        .outbox_oldest_age_seconds
        .with_label_values(&labels)
        .set(age as f64 / 1000.0);
}

/// Starts the drain and the gauges of `outbox` until `stop`.
pub(crate) fn start(outbox: Arc<Outbox>, parts: &Parts, stop: CancellationToken) {
    listen(&outbox, parts);
    let pump = Pump {
        store: parts.store.clone(),
        guard: parts.cfg.publish.clone(),
        keys: parts.keys.clone(),
        rate: parts.cfg.outbox.drain_rate,
        options: parts.cfg.outbox.options(),
    };
    tokio::spawn(pump::run(outbox.clone(), pump, stop.clone()));
    let (metrics, env) = (parts.metrics.clone(), parts.env().to_string());
    let opened = outbox.status();
    metrics
        .outbox_torn_records_total
        .with_label_values(&[&env])
        .inc_by(opened.torn_at_open);
    let mut synced = (0, 0);
    gauges(&outbox, &metrics, &env, &mut synced);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    gauges(&outbox, &metrics, &env, &mut synced);
                }
            }
        }
    });
}
