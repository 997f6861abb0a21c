//! The projector: a built-in [`Handler`] that appends each consumed event to the channels
//! its rules name. It runs in an internal consumer group of its own (`push.group`, default
//! `push`) hosted by the daemon beside the worker (see `worker::run`), so an event is
//! projected when that group reads it, independently of the apps' handlers: projection
//! neither waits for them nor repeats when a second app group consumes the same type. The
//! worker machinery gives it retries (a Redis error is retried), the DLQ, reclaim and
//! heartbeats; the append script's dedup makes every redelivery append nothing. A failed
//! append is retried in place for up to [`INLINE_RETRY`] before the event goes to the retry
//! set, so a short Redis error does not let a later event overtake it on its channel.

use crate::config::Config;
use crate::deliver::handler::{BoxFuture, Handler, Outcome};
use crate::metrics::Metrics;
use crate::model::envelope::{Event, field};
use crate::model::keys::Keys;
use crate::push::rules::Rules;
use crate::push::store::PushStore;
use crate::redis::store::{Store, StoreError};

/// The projecting handler.
pub struct Projector {
    /// Compiled rules.
    pub rules: Rules,
    /// Redis, connected at the first event.
    pub store: tokio::sync::OnceCell<PushStore>,
    /// The projector's configuration (to connect).
    pub config: Config,
    /// Metric handles.
    pub metrics: Metrics,
    /// The env label.
    pub env: String,
}

impl Handler for Projector {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(self.project(event))
    }
}

impl Projector {
    async fn project(&self, event: &Event) -> Outcome {
        let connect = || async {
            let store = Store::connect(&self.config, &self.config.consumer).await?;
            let keys = Keys::new(&self.config.env);
            Ok::<_, StoreError>(PushStore::new(store, keys, &self.config.push))
        };
        let store = match self.store.get_or_try_init(connect).await {
            Ok(s) => s,
            Err(e) => return Outcome::retry(format!("push: {e}")),
        };
        let (channels, skipped) = self.rules.channels(event);
        if skipped > 0 {
            self.metrics
                .push_rules_skipped_total
                .with_label_values(&[&self.env])
                .inc_by(skipped);
        }
        let message = message(event);
        for channel in &channels {
            match append_retrying(store, channel, &event.id, &message).await {
                Ok(a) if a.appended => self
                    .metrics
                    .push_appended_total
                    .with_label_values(&[&self.env, "appended"])
                    .inc(),
                Ok(_) => self
                    .metrics
                    .push_appended_total
                    .with_label_values(&[&self.env, "duplicate"])
                    .inc(),
                Err(e) => return Outcome::retry(format!("push: {e}")),
            }
        }
        Outcome::Success
    }
}

/// How long a failed append is retried in place (the event holds up the ones after it, so
/// its channel keeps stream order); past it, the worker's retry takes over.
pub const INLINE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Appends, retrying Redis errors in place (100 ms doubling to 2 s) for [`INLINE_RETRY`].
async fn append_retrying(
    store: &PushStore,
    channel: &str,
    id: &str,
    message: &str,
) -> Result<crate::push::store::Appended, StoreError> {
    let give_up = tokio::time::Instant::now() + INLINE_RETRY;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match store.append(channel, id, message).await {
            Err(e) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(channel, error = %e, "push: appending to a channel failed; retrying in place");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// The JSON apps receive for `event`: id, type, source, time, subject (when set) and data
/// (JSON as is; other text as a string).
pub fn message(event: &Event) -> String {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), event.id.clone().into());
    m.insert("type".into(), event.event_type.clone().into());
    for name in [field::SOURCE, field::TIME, field::SUBJECT] {
        if let Some(v) = event.field(name) {
            m.insert(name.into(), v.into());
        }
    }
    let data = serde_json::from_str::<serde_json::Value>(&event.data)
        .unwrap_or_else(|_| event.data.clone().into());
    m.insert("data".into(), data);
    serde_json::Value::Object(m).to_string()
}
