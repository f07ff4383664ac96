//! How the store runs a statement on either backend, written once: a pool, a connection (in a
//! transaction or not), a statement with its bind values, and rows decoded with
//! `sqlx::FromRow`.
//!
//! The store's queries are the same text on PostgreSQL and SQLite (SQLite reads `$1`, `$2` …
//! as positional parameters), so every table module writes each query once, against these
//! types, and only statements that truly differ (claims, locks, lists bound as arrays) look at
//! [`Conn::backend`]. Values are kept as [`Value`]s until the statement meets its connection,
//! which decides how they are encoded: no generic bounds over `sqlx::Database`, and no macro.

use std::borrow::Cow;
use std::marker::PhantomData;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Arguments as _, AssertSqlSafe, PgConnection, PgPool, Postgres, SqlSafeStr as _, SqlStr, Sqlite,
    SqliteConnection, SqlitePool,
};

use super::Backend;

/// A type a column decodes into on both backends.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + Send
    + Unpin
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + Send
        + Unpin
{
}

/// A type a row maps to on both backends: a `#[derive(sqlx::FromRow)]` struct or a tuple.
pub(crate) trait FromRows:
    for<'r> sqlx::FromRow<'r, PgRow> + for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl<T> FromRows for T where
    T: for<'r> sqlx::FromRow<'r, PgRow> + for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// The connections of one database.
#[derive(Debug)]
pub(crate) enum Pool {
    /// PostgreSQL: transactions run side by side, kept apart by row locks.
    Postgres(PgPool),
    /// SQLite: one writer at a time.
    Sqlite {
        /// The connections.
        pool: SqlitePool,
        /// Write transactions of this process take turns here before `BEGIN IMMEDIATE`.
        /// SQLite's own busy handler makes a waiting writer sleep for 1 to 100 ms between
        /// tries; queueing in-process hands the lock over the moment it is free.
        writer_turn: tokio::sync::Mutex<()>,
    },
}

impl Pool {
    /// Which database this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front: a
    /// deferred transaction that later upgrades to a writer can fail with `SQLITE_BUSY` without
    /// waiting, while `BEGIN IMMEDIATE` waits its turn (other processes on the same file still
    /// meet SQLite's busy timeout).
    pub(crate) async fn begin_write(&self) -> Result<Conn<'_>, sqlx::Error> {
        match self {
            Pool::Postgres(pool) => Ok(Conn::PostgresTransaction(pool.begin().await?)),
            Pool::Sqlite { pool, writer_turn } => {
                let turn = writer_turn.lock().await;
                let transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Conn::SqliteTransaction {
                    transaction,
                    _turn: turn,
                })
            }
        }
    }

    /// A connection outside any transaction, for several reads in a row.
    pub(crate) async fn acquire(&self) -> Result<Conn<'_>, sqlx::Error> {
        match self {
            Pool::Postgres(pool) => Ok(Conn::Postgres(pool.acquire().await?)),
            Pool::Sqlite { pool, .. } => Ok(Conn::Sqlite(pool.acquire().await?)),
        }
    }
}

/// One connection of a [`Pool`], in a transaction or not.
#[derive(Debug)]
pub(crate) enum Conn<'p> {
    /// A PostgreSQL transaction.
    PostgresTransaction(sqlx::Transaction<'static, Postgres>),
    /// A SQLite write transaction, holding this process's writer turn until it ends.
    SqliteTransaction {
        // Declared first so the transaction ends (rolls back, if not committed) before the
        // turn is handed on.
        transaction: sqlx::Transaction<'static, Sqlite>,
        _turn: tokio::sync::MutexGuard<'p, ()>,
    },
    /// A PostgreSQL connection outside a transaction.
    Postgres(sqlx::pool::PoolConnection<Postgres>),
    /// A SQLite connection outside a transaction.
    Sqlite(sqlx::pool::PoolConnection<Sqlite>),
}

impl Conn<'_> {
    /// Which database this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Conn::PostgresTransaction(_) | Conn::Postgres(_) => Backend::Postgres,
            Conn::SqliteTransaction { .. } | Conn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Commits the transaction; a connection outside one has nothing to commit.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Conn::PostgresTransaction(transaction) => transaction.commit().await,
            Conn::SqliteTransaction { transaction, _turn } => transaction.commit().await,
            Conn::Postgres(_) | Conn::Sqlite(_) => Ok(()),
        }
    }
}

/// Where a statement runs: a pool (any free connection) or one connection.
#[derive(Debug)]
pub(crate) enum Target<'e> {
    PostgresPool(&'e PgPool),
    SqlitePool(&'e SqlitePool),
    Postgres(&'e mut PgConnection),
    Sqlite(&'e mut SqliteConnection),
}

impl<'e> From<&'e Pool> for Target<'e> {
    fn from(pool: &'e Pool) -> Target<'e> {
        match pool {
            Pool::Postgres(pool) => Target::PostgresPool(pool),
            Pool::Sqlite { pool, .. } => Target::SqlitePool(pool),
        }
    }
}

impl<'e, 'p> From<&'e mut Conn<'p>> for Target<'e> {
    fn from(conn: &'e mut Conn<'p>) -> Target<'e> {
        match conn {
            Conn::PostgresTransaction(transaction) => Target::Postgres(transaction),
            Conn::SqliteTransaction { transaction, .. } => Target::Sqlite(transaction),
            Conn::Postgres(conn) => Target::Postgres(conn),
            Conn::Sqlite(conn) => Target::Sqlite(conn),
        }
    }
}

/// A bind value, encoded for its backend when the statement runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'q> {
    Int(Option<i64>),
    Text(Option<Cow<'q, str>>),
    Bool(Option<bool>),
    Float(Option<f64>),
    /// A list, for `= ANY($n)` on PostgreSQL (an array) and `IN (SELECT value FROM
    /// json_each($n))` on SQLite (a JSON array).
    IntList(Cow<'q, [i64]>),
    /// A list of texts, bound as [`Value::IntList`] is.
    TextList(Cow<'q, [String]>),
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Int(Some(value))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(value: Option<i64>) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Bool(Some(value))
    }
}

impl From<f64> for Value<'_> {
    fn from(value: f64) -> Self {
        Value::Float(Some(value))
    }
}

impl From<Option<f64>> for Value<'_> {
    fn from(value: Option<f64>) -> Self {
        Value::Float(value)
    }
}

impl<'q> From<&'q str> for Value<'q> {
    fn from(value: &'q str) -> Self {
        Value::Text(Some(Cow::Borrowed(value)))
    }
}

impl<'q> From<&'q String> for Value<'q> {
    fn from(value: &'q String) -> Self {
        Value::Text(Some(Cow::Borrowed(value)))
    }
}

impl From<String> for Value<'_> {
    fn from(value: String) -> Self {
        Value::Text(Some(Cow::Owned(value)))
    }
}

impl<'q> From<Option<&'q str>> for Value<'q> {
    fn from(value: Option<&'q str>) -> Self {
        Value::Text(value.map(Cow::Borrowed))
    }
}

impl<'q> From<&'q Option<String>> for Value<'q> {
    fn from(value: &'q Option<String>) -> Self {
        Value::Text(value.as_deref().map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(value: Option<String>) -> Self {
        Value::Text(value.map(Cow::Owned))
    }
}

impl<'q> From<&'q [i64]> for Value<'q> {
    fn from(value: &'q [i64]) -> Self {
        Value::IntList(Cow::Borrowed(value))
    }
}

impl From<Vec<i64>> for Value<'_> {
    fn from(value: Vec<i64>) -> Self {
        Value::IntList(Cow::Owned(value))
    }
}

impl<'q> From<&'q [String]> for Value<'q> {
    fn from(value: &'q [String]) -> Self {
        Value::TextList(Cow::Borrowed(value))
    }
}

impl<'q> From<&'q Vec<String>> for Value<'q> {
    fn from(value: &'q Vec<String>) -> Self {
        Value::TextList(Cow::Borrowed(value))
    }
}

type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

fn postgres_arguments(values: &[Value<'_>]) -> Result<PgArguments, sqlx::Error> {
    postgres_arguments_or_error(values).map_err(sqlx::Error::Encode)
}

fn postgres_arguments_or_error(values: &[Value<'_>]) -> Result<PgArguments, BoxDynError> {
    let mut arguments = PgArguments::default();
    for value in values {
        match value {
            Value::Int(value) => arguments.add(*value)?,
            Value::Text(value) => arguments.add(value.as_deref())?,
            Value::Bool(value) => arguments.add(*value)?,
            Value::Float(value) => arguments.add(*value)?,
            Value::IntList(list) => arguments.add(list.as_ref())?,
            Value::TextList(list) => arguments.add(list.as_ref())?,
        }
    }
    Ok(arguments)
}

fn sqlite_arguments(values: &[Value<'_>]) -> Result<SqliteArguments, sqlx::Error> {
    sqlite_arguments_or_error(values).map_err(sqlx::Error::Encode)
}

fn sqlite_arguments_or_error(values: &[Value<'_>]) -> Result<SqliteArguments, BoxDynError> {
    let mut arguments = SqliteArguments::default();
    for value in values {
        match value {
            Value::Int(value) => arguments.add(*value)?,
            Value::Text(value) => arguments.add(value.as_deref().map(str::to_owned))?,
            Value::Bool(value) => arguments.add(*value)?,
            Value::Float(value) => arguments.add(*value)?,
            Value::IntList(list) => arguments.add(serde_json::to_string(list.as_ref())?)?,
            Value::TextList(list) => arguments.add(serde_json::to_string(list.as_ref())?)?,
        }
    }
    Ok(arguments)
}

/// A row read without a type of its own; prefer [`query_as`] with a `FromRow` type.
#[derive(Debug)]
pub(crate) enum Row {
    Postgres(PgRow),
    Sqlite(SqliteRow),
}

impl Row {
    /// The value of a column, by name.
    pub(crate) fn try_get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        match self {
            Row::Postgres(row) => sqlx::Row::try_get(row, column),
            Row::Sqlite(row) => sqlx::Row::try_get(row, column),
        }
    }
}

/// A statement and its bind values.
#[derive(Debug)]
pub(crate) struct Query<'q> {
    sql: SqlStr,
    values: Vec<Value<'q>>,
}

/// A statement whose rows map to `T`.
#[derive(Debug)]
pub(crate) struct QueryAs<'q, T> {
    query: Query<'q>,
    row: PhantomData<fn() -> T>,
}

/// A statement whose rows are one column of type `T`.
#[derive(Debug)]
pub(crate) struct QueryScalar<'q, T> {
    query: Query<'q>,
    column: PhantomData<fn() -> T>,
}

/// A statement whose rows are read as [`Row`]s (or not at all: [`Query::execute`]).
pub(crate) fn query<'q>(sql: &'static str) -> Query<'q> {
    Query {
        sql: sql.into_sql_str(),
        values: Vec::new(),
    }
}

/// A statement whose rows map to `T`.
pub(crate) fn query_as<'q, T: FromRows>(sql: &'static str) -> QueryAs<'q, T> {
    QueryAs {
        query: query(sql),
        row: PhantomData,
    }
}

/// A statement whose rows are one column of type `T`.
pub(crate) fn query_scalar<'q, T: Column>(sql: &'static str) -> QueryScalar<'q, T> {
    QueryScalar {
        query: query(sql),
        column: PhantomData,
    }
}

impl<'q> Query<'q> {
    /// Adds a bind value: `$1` is the first.
    pub(crate) fn bind(mut self, value: impl Into<Value<'q>>) -> Query<'q> {
        self.values.push(value.into());
        self
    }

    /// Runs the statement; answers how many rows it changed.
    pub(crate) async fn execute<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<u64, sqlx::Error> {
        let Query { sql, values } = self;
        Ok(match target.into() {
            Target::PostgresPool(pool) => sqlx::query_with(sql, postgres_arguments(&values)?)
                .execute(pool)
                .await?
                .rows_affected(),
            Target::Postgres(conn) => sqlx::query_with(sql, postgres_arguments(&values)?)
                .execute(conn)
                .await?
                .rows_affected(),
            Target::SqlitePool(pool) => sqlx::query_with(sql, sqlite_arguments(&values)?)
                .execute(pool)
                .await?
                .rows_affected(),
            Target::Sqlite(conn) => sqlx::query_with(sql, sqlite_arguments(&values)?)
                .execute(conn)
                .await?
                .rows_affected(),
        })
    }

    /// Every row.
    pub(crate) async fn fetch_all<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<Vec<Row>, sqlx::Error> {
        let Query { sql, values } = self;
        Ok(match target.into() {
            Target::PostgresPool(pool) => {
                let rows = sqlx::query_with(sql, postgres_arguments(&values)?)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter().map(Row::Postgres).collect()
            }
            Target::Postgres(conn) => {
                let rows = sqlx::query_with(sql, postgres_arguments(&values)?)
                    .fetch_all(conn)
                    .await?;
                rows.into_iter().map(Row::Postgres).collect()
            }
            Target::SqlitePool(pool) => {
                let rows = sqlx::query_with(sql, sqlite_arguments(&values)?)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter().map(Row::Sqlite).collect()
            }
            Target::Sqlite(conn) => {
                let rows = sqlx::query_with(sql, sqlite_arguments(&values)?)
                    .fetch_all(conn)
                    .await?;
                rows.into_iter().map(Row::Sqlite).collect()
            }
        })
    }

    /// The first row, if any.
    pub(crate) async fn fetch_optional<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<Option<Row>, sqlx::Error> {
        let Query { sql, values } = self;
        Ok(match target.into() {
            Target::PostgresPool(pool) => sqlx::query_with(sql, postgres_arguments(&values)?)
                .fetch_optional(pool)
                .await?
                .map(Row::Postgres),
            Target::Postgres(conn) => sqlx::query_with(sql, postgres_arguments(&values)?)
                .fetch_optional(conn)
                .await?
                .map(Row::Postgres),
            Target::SqlitePool(pool) => sqlx::query_with(sql, sqlite_arguments(&values)?)
                .fetch_optional(pool)
                .await?
                .map(Row::Sqlite),
            Target::Sqlite(conn) => sqlx::query_with(sql, sqlite_arguments(&values)?)
                .fetch_optional(conn)
                .await?
                .map(Row::Sqlite),
        })
    }
}

impl<'q, T: FromRows> QueryAs<'q, T> {
    /// Adds a bind value: `$1` is the first.
    pub(crate) fn bind(mut self, value: impl Into<Value<'q>>) -> QueryAs<'q, T> {
        self.query = self.query.bind(value);
        self
    }

    /// Every row.
    pub(crate) async fn fetch_all<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let Query { sql, values } = self.query;
        match target.into() {
            Target::PostgresPool(pool) => {
                sqlx::query_as_with(sql, postgres_arguments(&values)?)
                    .fetch_all(pool)
                    .await
            }
            Target::Postgres(conn) => {
                sqlx::query_as_with(sql, postgres_arguments(&values)?)
                    .fetch_all(conn)
                    .await
            }
            Target::SqlitePool(pool) => {
                sqlx::query_as_with(sql, sqlite_arguments(&values)?)
                    .fetch_all(pool)
                    .await
            }
            Target::Sqlite(conn) => {
                sqlx::query_as_with(sql, sqlite_arguments(&values)?)
                    .fetch_all(conn)
                    .await
            }
        }
    }

    /// The first row, if any.
    pub(crate) async fn fetch_optional<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<Option<T>, sqlx::Error> {
        let Query { sql, values } = self.query;
        match target.into() {
            Target::PostgresPool(pool) => {
                sqlx::query_as_with(sql, postgres_arguments(&values)?)
                    .fetch_optional(pool)
                    .await
            }
            Target::Postgres(conn) => {
                sqlx::query_as_with(sql, postgres_arguments(&values)?)
                    .fetch_optional(conn)
                    .await
            }
            Target::SqlitePool(pool) => {
                sqlx::query_as_with(sql, sqlite_arguments(&values)?)
                    .fetch_optional(pool)
                    .await
            }
            Target::Sqlite(conn) => {
                sqlx::query_as_with(sql, sqlite_arguments(&values)?)
                    .fetch_optional(conn)
                    .await
            }
        }
    }

    /// The first row; [`sqlx::Error::RowNotFound`] if there is none.
    pub(crate) async fn fetch_one<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<T, sqlx::Error> {
        self.fetch_optional(target)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

impl<'q, T: Column> QueryScalar<'q, T> {
    /// Adds a bind value: `$1` is the first.
    pub(crate) fn bind(mut self, value: impl Into<Value<'q>>) -> QueryScalar<'q, T> {
        self.query = self.query.bind(value);
        self
    }

    /// The first column of every row.
    pub(crate) async fn fetch_all<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let rows: Vec<(T,)> = QueryAs {
            query: self.query,
            row: PhantomData,
        }
        .fetch_all(target)
        .await?;
        Ok(rows.into_iter().map(|(value,)| value).collect())
    }

    /// The first column of the first row, if any.
    pub(crate) async fn fetch_optional<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<Option<T>, sqlx::Error> {
        let row: Option<(T,)> = QueryAs {
            query: self.query,
            row: PhantomData,
        }
        .fetch_optional(target)
        .await?;
        Ok(row.map(|(value,)| value))
    }

    /// The first column of the first row; [`sqlx::Error::RowNotFound`] if there is none.
    pub(crate) async fn fetch_one<'e>(
        self,
        target: impl Into<Target<'e>>,
    ) -> Result<T, sqlx::Error> {
        self.fetch_optional(target)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// A statement built piece by piece, for lists and multi-row inserts whose length the input
/// decides. Placeholders are numbered (`$1`, `$2` …), which both backends read.
#[derive(Debug)]
pub(crate) struct QueryBuilder<'q> {
    sql: String,
    values: Vec<Value<'q>>,
}

impl<'q> QueryBuilder<'q> {
    /// Starts with this SQL.
    pub(crate) fn new(sql: impl Into<String>) -> QueryBuilder<'q> {
        QueryBuilder {
            sql: sql.into(),
            values: Vec::new(),
        }
    }

    /// Appends SQL.
    pub(crate) fn push(&mut self, sql: impl std::fmt::Display) -> &mut QueryBuilder<'q> {
        use std::fmt::Write as _;
        // Writing to a `String` cannot fail.
        let _ = write!(self.sql, "{sql}");
        self
    }

    /// Appends a placeholder for a bind value.
    pub(crate) fn push_bind(&mut self, value: impl Into<Value<'q>>) -> &mut QueryBuilder<'q> {
        self.values.push(value.into());
        let number = self.values.len();
        self.push(format_args!("${number}"))
    }

    /// Appends items separated by `separator`.
    pub(crate) fn separated<'b>(&'b mut self, separator: &'static str) -> Separated<'b, 'q> {
        Separated {
            builder: self,
            separator,
            first: true,
        }
    }

    /// Appends `VALUES (…), (…)`: one parenthesised row per item, filled in by `row`.
    pub(crate) fn push_values<I, F>(&mut self, items: I, mut row: F) -> &mut QueryBuilder<'q>
    where
        I: IntoIterator,
        F: FnMut(Separated<'_, 'q>, I::Item),
    {
        self.push("VALUES ");
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.push("(");
            row(self.separated(", "), item);
            self.push(")");
        }
        self
    }

    /// The statement, ready to run.
    pub(crate) fn build(self) -> Query<'q> {
        Query {
            sql: AssertSqlSafe(self.sql).into_sql_str(),
            values: self.values,
        }
    }
}

/// Items of a [`QueryBuilder`] with a separator between them.
#[derive(Debug)]
pub(crate) struct Separated<'b, 'q> {
    builder: &'b mut QueryBuilder<'q>,
    separator: &'static str,
    first: bool,
}

impl<'q> Separated<'_, 'q> {
    /// Appends a placeholder for a bind value, after a separator unless it is the first item.
    pub(crate) fn push_bind(&mut self, value: impl Into<Value<'q>>) -> &mut Self {
        if !self.first {
            self.builder.push(self.separator);
        }
        self.first = false;
        self.builder.push_bind(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_numbers_placeholders_in_order() {
        let mut builder = QueryBuilder::new("INSERT INTO t (a, b) ");
        builder.push_values([(1_i64, "x"), (2, "y")], |mut row, (a, b)| {
            row.push_bind(a).push_bind(b);
        });
        builder.push(" WHERE c IN (");
        let mut list = builder.separated(", ");
        list.push_bind(7_i64);
        list.push_bind(8_i64);
        builder.push(")");
        let query = builder.build();
        assert_eq!(
            query.sql.as_str(),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) WHERE c IN ($5, $6)"
        );
        assert_eq!(query.values.len(), 6);
    }
}
