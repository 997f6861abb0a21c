//! `event-worker`: the daemon and its operator commands (see [`event_worker::cli`]).

fn main() -> std::process::ExitCode {
    event_worker::cli::main()
}
