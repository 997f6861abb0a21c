//! Embedding event-worker as a library: Rust handlers per type or glob.
//!
//! Run against a local Redis (the README's first command starts one):
//!
//! ```sh
//! cargo run --example embedded
//! # in another shell:
//! cargo run -- --config examples/local.toml publish invoice.paid '{"amount": 42}'
//! cargo run -- --config examples/local.toml publish invoice.failed '{"amount": -1}'
//! ```
//!
//! `invoice.paid` succeeds; `invoice.failed` is refused permanently and lands in the DLQ
//! (`redis-cli XRANGE events:development:dlq - +`).

use event_worker::{Config, Outcome, WorkerBuilder, handler_fn};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    // The same TOML contract as the daemon; routes can come from code instead.
    let config = Config::from_toml_and_env(
        r#"
        group = "billing-example"
        [api]
        listen = "127.0.0.1:9465"
        "#,
        |name| std::env::var(name).ok(),
    )?;
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    WorkerBuilder::new(config)
        .route(
            &["invoice.*"],
            handler_fn(|event| async move {
                let data = match event.data_json() {
                    Ok(d) => d,
                    Err(e) => return Outcome::permanent(format!("bad data: {e}")),
                };
                match data["amount"].as_f64() {
                    Some(a) if a >= 0.0 => {
                        println!("invoice {} (attempt {}): {a}", event.id, event.attempt);
                        Outcome::Success
                    }
                    Some(_) => Outcome::permanent("negative amount"),
                    // A dependency we could not reach would be `Outcome::retry(..)`.
                    None => {
                        Outcome::retry("amount missing; maybe a later version of the event has it")
                    }
                }
            }),
        )
        .run(stop)
        .await?;
    Ok(())
}
