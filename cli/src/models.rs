//! `kiln models`: the model registry, straight from the database. A server serving the model
//! notices an alias move within a second.

use anyhow::Context;
use kiln_engine::dag::ModelAlias;
use kiln_engine::scheduler::to_datetime;
use kiln_engine::store::now_micros;

use crate::ops::DatabaseConfig;
use crate::table::{Align, Table};

/// What `kiln models` can do.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelsCommand {
    /// List the models with their newest, production and staging versions.
    List,
    /// Show a model's versions, their metrics and where its aliases have pointed.
    Show {
        /// The model's name.
        name: String,
    },
    /// Point an alias (production by default) at a version.
    Promote {
        /// The model's name.
        name: String,
        /// The version.
        #[arg(value_name = "VERSION")]
        model_version: i64,
        /// `production` or `staging`.
        #[arg(long, default_value = "production", value_parser = parse_alias)]
        alias: ModelAlias,
    },
    /// Move production back to the previous version it served.
    Rollback {
        /// The model's name.
        name: String,
        /// `production` or `staging`.
        #[arg(long, default_value = "production", value_parser = parse_alias)]
        alias: ModelAlias,
    },
}

fn parse_alias(text: &str) -> Result<ModelAlias, String> {
    text.parse()
}

fn when(micros: i64) -> String {
    to_datetime(micros)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn or_dash(version: Option<i64>) -> String {
    version.map_or_else(|| "-".to_owned(), |version| version.to_string())
}

pub(crate) async fn run(command: ModelsCommand, database: &DatabaseConfig) -> anyhow::Result<()> {
    let store = database.open().await?;
    match command {
        ModelsCommand::List => {
            let models = store
                .model_list()
                .await
                .context("failed to list the models")?;
            if models.is_empty() {
                println!("no models yet: a `deploy` task publishes one");
                return Ok(());
            }
            let mut table = Table::new(&[
                ("MODEL", Align::Left),
                ("LATEST", Align::Right),
                ("PRODUCTION", Align::Right),
                ("STAGING", Align::Right),
                ("UPDATED", Align::Left),
            ]);
            for model in models {
                table.row(vec![
                    model.name,
                    model.latest_version.to_string(),
                    or_dash(model.production),
                    or_dash(model.staging),
                    when(model.updated_at),
                ]);
            }
            print!("{}", table.render());
        }
        ModelsCommand::Show { name } => {
            let model = store
                .model_list()
                .await
                .context("failed to read the registry")?
                .into_iter()
                .find(|model| model.name == name)
                .with_context(|| format!("no model `{name}` in the registry"))?;
            println!(
                "model {name}: production {}, staging {}",
                or_dash(model.production),
                or_dash(model.staging)
            );
            let mut table = Table::new(&[
                ("VERSION", Align::Right),
                ("ALIAS", Align::Left),
                ("METRICS", Align::Left),
                ("CREATED", Align::Left),
            ]);
            for version in store.artifact_version_list(&name, 50).await? {
                let alias = if model.production == Some(version.version) {
                    "production"
                } else if model.staging == Some(version.version) {
                    "staging"
                } else {
                    ""
                };
                let metrics = version
                    .metadata
                    .as_ref()
                    .and_then(|metadata| metadata.get("metrics"))
                    .and_then(serde_json::Value::as_object)
                    .map(|metrics| {
                        ["accuracy", "f1_macro", "roc_auc", "r2", "rmse"]
                            .iter()
                            .filter_map(|key| {
                                metrics
                                    .get(*key)
                                    .and_then(serde_json::Value::as_f64)
                                    .map(|value| format!("{key} {value:.4}"))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                table.row(vec![
                    version.version.to_string(),
                    alias.to_owned(),
                    metrics,
                    when(version.created_at),
                ]);
            }
            print!("\n{}", table.render());
            let events = store.model_alias_event_list(&name).await?;
            if !events.is_empty() {
                println!("\nHISTORY");
                for event in events {
                    println!(
                        "{}  {} {} -> {}: {}",
                        when(event.created_at),
                        event.alias.as_str(),
                        or_dash(event.previous),
                        event.version,
                        event.reason
                    );
                }
            }
        }
        ModelsCommand::Promote {
            name,
            model_version: version,
            alias,
        } => {
            let previous = store
                .model_alias_set(
                    &name,
                    alias,
                    version,
                    "promoted with `kiln models promote`",
                    now_micros(),
                )
                .await
                .with_context(|| format!("failed to promote {name} version {version}"))?;
            println!(
                "{name}: {} is version {version} (was {})",
                alias.as_str(),
                or_dash(previous)
            );
        }
        ModelsCommand::Rollback { name, alias } => {
            let (from, to) = store
                .model_alias_rollback(&name, alias, now_micros())
                .await
                .with_context(|| format!("failed to roll back {name}"))?;
            println!(
                "{name}: {} rolled back from version {from} to {to}",
                alias.as_str()
            );
        }
    }
    Ok(())
}
