//! The blackhole handler: acknowledges every event at once (draining, benchmarks).

use super::handler::{BoxFuture, Handler, Outcome};
use crate::model::envelope::Event;

/// Acknowledges every event at once (draining, benchmarks).
pub struct BlackholeHandler;

impl Handler for BlackholeHandler {
    fn handle<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::Success })
    }
}
