//! Subscribing to a pub/sub channel on a connection of its own (a subscribed connection
//! cannot send other commands): [`Store::subscribe`] and the [`Subscription`] it returns.

use fred::prelude::*;
use fred::types::Value;

use crate::redis::store::{Store, StoreError, text};

/// A subscription to one channel; re-subscribed after every reconnect.
pub struct Subscription {
    client: Client,
    rx: tokio::sync::broadcast::Receiver<fred::types::Message>,
}

impl Store {
    /// Connects a new client (same server, credentials and TLS) and subscribes it to
    /// `channel`.
    ///
    /// # Errors
    /// When the connection or the SUBSCRIBE fails.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let client = self.cmd.clone_new();
        let rx = client.message_rx();
        client
            .init()
            .await
            .map_err(|e| self.error("connect (subscriber)", e))?;
        let again = client.clone();
        let name = channel.to_string();
        client.on_reconnect(move |_| {
            let (client, channel) = (again.clone(), name.clone());
            async move {
                let _ = client.subscribe(channel).await;
                Ok(())
            }
        });
        client
            .subscribe(channel)
            .await
            .map_err(|e| self.error(format!("SUBSCRIBE {channel}"), e))?;
        Ok(Subscription { client, rx })
    }
}

impl Subscription {
    /// The next message's text; `None` once the client is gone. Messages missed because the
    /// reader fell behind are skipped.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            match self.rx.recv().await {
                Ok(m) => {
                    if let Some(t) = text(&m.value) {
                        return Some(t);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _: Result<Value, _> = self.client.quit().await.map(|()| Value::Null);
    }
}
