//! The schema as each database's own catalogue describes it (tables, columns, indexes), so a
//! test can show that `migrations/sqlite` and `migrations/postgres` build the same schema.

use std::collections::BTreeMap;

use super::db::{Pool, query_as};
use super::{SqlStore, StoreError};

/// A migrated schema: every table but sqlx's own bookkeeping, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaDescription {
    /// The tables, by name.
    pub tables: BTreeMap<String, TableDescription>,
}

/// One table of a [`SchemaDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableDescription {
    /// Its columns in declaration order: name, and whether it may hold NULL.
    pub columns: Vec<(String, bool)>,
    /// The indexes a migration created by name, sorted; those the database made on its own
    /// for a primary key or a `UNIQUE` constraint are left out, because the two databases
    /// name them differently.
    pub indexes: Vec<String>,
}

impl SqlStore {
    /// Reads the schema from the database's catalogue.
    pub async fn schema_describe(&self) -> Result<SchemaDescription, StoreError> {
        #[allow(clippy::type_complexity)] // (table, column, nullable) and (table, index) rows.
        let (columns, indexes): (Vec<(String, String, bool)>, Vec<(String, String)>) =
            match &self.pool {
                Pool::Postgres(_) => (
                    query_as(
                        "SELECT table_name::TEXT, column_name::TEXT, is_nullable = 'YES' \
                         FROM information_schema.columns \
                         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                         ORDER BY table_name, ordinal_position",
                    )
                    .fetch_all(&self.pool)
                    .await?,
                    // An index that backs a constraint (primary key, UNIQUE) is the
                    // constraint's, not the migration's.
                    query_as(
                        "SELECT t.relname::TEXT, i.relname::TEXT FROM pg_index x \
                         JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
                         JOIN pg_namespace n ON n.oid = t.relnamespace \
                         WHERE n.nspname = current_schema() AND t.relname <> '_sqlx_migrations' \
                         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) \
                         ORDER BY 1, 2",
                    )
                    .fetch_all(&self.pool)
                    .await?,
                ),
                Pool::Sqlite { .. } => (
                    // SQLite reports an INTEGER PRIMARY KEY as nullable, although it can never
                    // hold NULL (it is the rowid).
                    query_as(
                        "SELECT m.name, c.name, c.\"notnull\" = 0 AND c.pk = 0 \
                         FROM sqlite_master m JOIN pragma_table_info(m.name) c \
                         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                         AND m.name <> '_sqlx_migrations' ORDER BY m.name, c.cid",
                    )
                    .fetch_all(&self.pool)
                    .await?,
                    // Indexes SQLite made for a constraint have no SQL of their own.
                    query_as(
                        "SELECT tbl_name, name FROM sqlite_master \
                         WHERE type = 'index' AND sql IS NOT NULL ORDER BY 1, 2",
                    )
                    .fetch_all(&self.pool)
                    .await?,
                ),
            };
        let mut schema = SchemaDescription::default();
        for (table, column, nullable) in columns {
            schema
                .tables
                .entry(table)
                .or_default()
                .columns
                .push((column, nullable));
        }
        for (table, index) in indexes {
            schema.tables.entry(table).or_default().indexes.push(index);
        }
        Ok(schema)
    }
}
