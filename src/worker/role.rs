//! The one loop shape of the background roles (forwarder, heartbeat, discovery, retention,
//! pings): wait for the next tick or cancellation, whichever comes first, then do one pass.
//! A pass in progress is finished, not abandoned; the lifecycle bounds how long it waits.

use std::future::Future;

use tokio::time::Interval;
use tokio_util::sync::CancellationToken;

/// A background role: a schedule and one pass of work.
pub trait Role: Send + 'static {
    /// The ticks of this role (built once, when the role starts).
    fn schedule(&self) -> Interval;

    /// One pass; errors are the role's to count and log.
    fn tick(&mut self) -> impl Future<Output = ()> + Send;
}

/// Runs `role` until `stop`: every wait for the next tick selects on cancellation.
pub async fn run<R: Role>(mut role: R, stop: CancellationToken) {
    let mut ticks = role.schedule();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        role.tick().await;
    }
}

/// An interval of `period` whose first tick is now and which, when a pass overruns, waits a
/// full period after it rather than bursting.
pub fn delayed(period: std::time::Duration) -> Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
