//! Appending one event to its type stream, with the fields of the wire format. Used by
//! `event-worker publish`, the HTTP publish endpoint, and embedding apps through [`Publisher`].

use rand::Rng;

use crate::config::Config;
use crate::model::envelope::field;
use crate::model::keys::{self, Keys};
use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::{Store, StoreError};

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The type is not valid or is reserved.
    #[error(
        "type `{0}` is not a valid event type ([a-z0-9_-] parts separated by dots; not a reserved word)"
    )]
    BadType(String),
    /// `data` is not JSON.
    #[error("data is not valid JSON: {0}")]
    BadData(String),
    /// The id is empty or longer than 256 characters.
    #[error("id must be 1 to 256 characters")]
    BadId,
    /// Redis refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One event to publish.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Event type.
    pub event_type: String,
    /// JSON text.
    pub data: String,
    /// Producer id; a random UUID v4 when `None`.
    pub id: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// `source` attribute; `event-worker` when `None`.
    pub source: Option<String>,
}

/// A published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Stream entry id.
    pub entry_id: String,
    /// Event id.
    pub id: String,
    /// Stream key.
    pub stream: String,
}

/// The library's publisher: appends events to `events:<env>:<type>` of the configured env,
/// with the wire format's fields, on its own Redis connection.
///
/// ```no_run
/// # async fn demo(config: event_worker::Config) -> Result<(), event_worker::PublishError> {
/// use event_worker::{NewEvent, Publisher};
/// let publisher = Publisher::connect(&config).await?;
/// let published = publisher
///     .publish(NewEvent {
///         event_type: "invoice.paid".into(),
///         data: r#"{"invoiceId":"i-1"}"#.into(),
///         ..Default::default()
///     })
///     .await?;
/// println!("{} is entry {}", published.id, published.entry_id);
/// publisher.close().await;
/// # Ok(()) }
/// ```
pub struct Publisher {
    store: Store,
    keys: Keys,
}

impl Publisher {
    /// Connects to the configured Redis.
    ///
    /// # Errors
    /// Redis unreachable or refusing the connection.
    pub async fn connect(config: &Config) -> Result<Self, PublishError> {
        Ok(Publisher {
            store: Store::connect(config, "publisher").await?,
            keys: Keys::new(&config.env),
        })
    }

    /// Validates `event` and appends it to its type stream.
    ///
    /// # Errors
    /// Invalid type, id or data (before any Redis call), or a Redis failure.
    pub async fn publish(&self, event: NewEvent) -> Result<Published, PublishError> {
        publish(&self.store, &self.keys, event).await
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.store.quit().await;
    }
}

/// Validates `event` and XADDs it to `events:<env>:<type>`.
///
/// # Errors
/// Invalid type, id or data (before any Redis call), or a Redis failure.
pub async fn publish(
    store: &Store,
    keys: &Keys,
    event: NewEvent,
) -> Result<Published, PublishError> {
    if !keys::is_valid_type(&event.event_type) {
        return Err(PublishError::BadType(crate::model::envelope::truncate(
            &event.event_type,
            100,
        )));
    }
    serde_json::from_str::<&serde_json::value::RawValue>(&event.data)
        .map_err(|e| PublishError::BadData(e.to_string()))?;
    let id = event.id.unwrap_or_else(random_uuid);
    if id.is_empty() || id.len() > 256 {
        return Err(PublishError::BadId);
    }
    let mut fields = vec![
        (field::ID.to_string(), id.clone()),
        (field::TYPE.to_string(), event.event_type.clone()),
        (field::DATA.to_string(), event.data),
        (
            field::SOURCE.to_string(),
            event.source.unwrap_or_else(|| "event-worker".into()),
        ),
        (field::TIME.to_string(), rfc3339(now_ms())),
        (field::SPECVERSION.to_string(), "1.0".into()),
    ];
    if let Some(c) = event.correlation_id {
        fields.push((field::CORRELATIONID.to_string(), c));
    }
    let stream = keys.stream(&event.event_type);
    let entry_id = store.xadd(&stream, &fields).await?;
    crate::ops::coordination::announce_type(store, keys, &event.event_type).await;
    Ok(Published {
        entry_id,
        id,
        stream,
    })
}

/// A random UUID v4 as text.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().r#gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_look_like_v4() {
        let u = super::random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, super::random_uuid());
    }
}
