//! `kiln mlflow`: the MLflow mirror's outbox, straight from the database. A running server's
//! sender picks retried events up on its next pass.

use anyhow::Context;
use kiln_engine::scheduler::to_datetime;
use kiln_engine::store::{OutboxEntry, now_micros};

use crate::ops::DatabaseConfig;

/// What `kiln mlflow` can do.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MlflowCommand {
    /// List what waits to reach MLflow: pending events and parked ones, with their last error.
    Status {
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put every parked event back in line (after fixing what MLflow refused).
    Retry,
}

fn when(micros: i64) -> String {
    to_datetime(micros)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn print_event(event: &OutboxEntry) {
    let state = if event.parked {
        "parked".to_owned()
    } else if event.attempts > 0 {
        format!("retry at {}", when(event.next_attempt_at))
    } else {
        "pending".to_owned()
    };
    println!(
        "{:>6}  {:<24} {:>5}  {:<28} {}",
        event.id,
        state,
        event.attempts,
        when(event.created_at),
        event.call.describe()
    );
    if let Some(error) = &event.last_error {
        println!("        last error: {error}");
    }
}

pub(crate) async fn run(command: MlflowCommand, database: &DatabaseConfig) -> anyhow::Result<()> {
    let store = database.open().await?;
    match command {
        MlflowCommand::Status { limit } => {
            let events = store
                .outbox_list(limit)
                .await
                .context("failed to read the MLflow outbox")?;
            if events.is_empty() {
                println!("the MLflow outbox is empty: everything has reached MLflow");
                return Ok(());
            }
            let parked = events.iter().filter(|event| event.parked).count();
            println!(
                "{} event(s) waiting, {parked} parked{}",
                events.len(),
                if parked > 0 {
                    " (`kiln mlflow retry` puts them back in line)"
                } else {
                    ""
                }
            );
            println!(
                "\n{:>6}  {:<24} {:>5}  {:<28} EVENT",
                "ID", "STATE", "FAILS", "WRITTEN"
            );
            for event in &events {
                print_event(event);
            }
        }
        MlflowCommand::Retry => {
            let count = store
                .outbox_unpark(now_micros())
                .await
                .context("failed to retry the parked MLflow events")?;
            println!("{count} parked event(s) put back in line");
        }
    }
    Ok(())
}
