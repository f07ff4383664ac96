//! PostgreSQL's pool never hands out a connection inside a transaction: one given back with a
//! transaction sqlx does not know about (its `BEGIN` was on the wire when the caller was
//! dropped) is closed, and what the next user writes outside a transaction is committed.

mod common;

use kiln_engine::store::postgres_pool_options;
use sqlx::Connection;

use common::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_given_back_inside_a_transaction_is_closed_not_reused() {
    let Some(db) = TestDb::postgres("a_connection_given_back_inside_a_transaction").await else {
        return;
    };
    // One connection, so that a reused one would be the very one given back.
    let pool = postgres_pool_options()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE written (id INTEGER)")
        .execute(&pool)
        .await
        .unwrap();

    // A connection given back outside a transaction is kept and used again.
    let mut conn = pool.acquire().await.unwrap();
    let kept_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut conn = pool.acquire().await.unwrap();
    let first_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        kept_pid, first_pid,
        "a connection outside a transaction was closed"
    );
    // A `BEGIN` that sqlx's transaction manager never saw, as a caller dropped between sending
    // it and reading its answer leaves behind.
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    drop(conn);

    // The next user writes without a transaction of its own: a reused connection would put
    // the row inside the stray transaction, where nothing commits it.
    let mut conn = pool.acquire().await.unwrap();
    let second_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_ne!(
        first_pid, second_pid,
        "the connection left in a transaction was reused"
    );
    sqlx::query("INSERT INTO written (id) VALUES (1)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    // Seen from a connection of its own: the row is committed.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM written")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    other.close().await.unwrap();

    // A connection given back in a failed transaction is closed too.
    let mut conn = pool.acquire().await.unwrap();
    let failed_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    assert!(
        sqlx::raw_sql("SELECT 1/0")
            .execute(&mut *conn)
            .await
            .is_err()
    );
    drop(conn);
    let mut conn = pool.acquire().await.unwrap();
    let next_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_ne!(failed_pid, next_pid);
    drop(conn);

    pool.close().await;
    db.cleanup().await;
}
