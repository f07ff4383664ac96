//! `migrations/sqlite` and `migrations/postgres` stay in step: after migrating, each
//! database's own catalogue shows the same tables, columns (with their nullability) and indexes.

mod common;

use common::TestDb;
use kiln_engine::store::{SchemaDescription, SqlStore};

async fn describe(db: &TestDb) -> SchemaDescription {
    let store = if db.url.starts_with("sqlite:") {
        SqlStore::connect_sqlite(&db.url).await.unwrap()
    } else {
        SqlStore::connect_postgres(&db.url).await.unwrap()
    };
    store.schema_describe().await.unwrap()
}

#[tokio::test]
async fn both_backends_migrate_to_the_same_tables_columns_and_indexes() {
    let Some(postgres) =
        TestDb::postgres("both_backends_migrate_to_the_same_tables_columns_and_indexes").await
    else {
        return;
    };
    let sqlite = TestDb::sqlite().await;
    let (on_sqlite, on_postgres) = (describe(&sqlite).await, describe(&postgres).await);

    // The catalogue queries must see the schema at all, or an empty pair would agree.
    for table in ["runs", "task_instances", "task_attempts", "mlflow_outbox"] {
        assert!(
            on_sqlite.tables.contains_key(table),
            "SQLite's catalogue shows no `{table}`: {:?}",
            on_sqlite.tables.keys()
        );
    }
    assert!(
        on_sqlite
            .tables
            .values()
            .any(|table| !table.indexes.is_empty()),
        "SQLite's catalogue shows no index"
    );

    let sqlite_tables: Vec<&String> = on_sqlite.tables.keys().collect();
    let postgres_tables: Vec<&String> = on_postgres.tables.keys().collect();
    assert_eq!(
        sqlite_tables, postgres_tables,
        "tables (SQLite, then PostgreSQL)"
    );
    for (name, table) in &on_sqlite.tables {
        let other = &on_postgres.tables[name];
        assert_eq!(
            table.columns, other.columns,
            "columns (name, nullable) of `{name}` (SQLite, then PostgreSQL)"
        );
        assert_eq!(
            table.indexes, other.indexes,
            "indexes of `{name}` (SQLite, then PostgreSQL)"
        );
    }
}
