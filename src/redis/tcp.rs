//! TCP settings of every connection to Redis (fred's and the worker's own): no Nagle delay
//! (a command is sent at once, not held until the previous one is acknowledged) and keepalive
//! probes on an idle connection, so a NAT or load balancer between the worker and a managed
//! Redis keeps the connection's state through quiet hours, and a peer that vanished without
//! closing is noticed (after [`KEEPALIVE_IDLE`] plus [`KEEPALIVE_RETRIES`] unanswered probes).

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Idle time before the first probe: below the idle timeouts of common NATs and load
/// balancers (AWS NLB 350 s, Azure 240 s, Linux conntrack's default 5 days).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the connection is dropped.
#[cfg(target_os = "linux")]
const KEEPALIVE_RETRIES: u32 = 3;

/// The keepalive every Redis connection uses.
fn keepalive() -> TcpKeepalive {
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive.with_retries(KEEPALIVE_RETRIES);
    keepalive
}

/// fred's TCP settings: no delay, keepalive.
pub(crate) fn fred_config() -> fred::types::config::TcpConfig {
    fred::types::config::TcpConfig {
        nodelay: Some(true),
        keepalive: Some(keepalive()),
        ..Default::default()
    }
}

/// Sets no delay and keepalive on a connection of the worker's own.
///
/// # Errors
/// The socket options could not be set.
pub(crate) fn tune(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    SockRef::from(tcp).set_tcp_keepalive(&keepalive())
}
