//! `event-worker`: the daemon and its operator commands (see [`event_worker::cli`]).

/// mimalloc: per-event allocations cost about a sixth fewer instructions than with glibc's
/// allocator (BENCHMARKS "Allocator"). Built with `no_thp`, so it does not ask for transparent
/// huge pages (with them the resident memory doubled). The library sets no allocator: an app
/// embedding it chooses its own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    event_worker::cli::main()
}
