//! Crash points for the integration tests: in a debug build, `EVENTS_TEST_CRASH_AT=<name>`
//! makes the process abort (as `kill -9` would) when it reaches the point `<name>`, so a test
//! can stop a worker between two writes that no timing could reliably separate. Release
//! builds compile every point to nothing.

/// Aborts the process here when `EVENTS_TEST_CRASH_AT` names `point` (debug builds only).
#[cfg(debug_assertions)]
pub(crate) fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("EVENTS_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("crash point {point} reached (EVENTS_TEST_CRASH_AT): aborting");
        std::process::abort();
    }
}

/// Release builds: nothing.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn crash_point(_point: &str) {}
