//! The PostgreSQL admin helpers against the real server: a database they create takes a
//! migrated store, a name that needs quoting keeps its case and spaces, dropping ends the
//! sessions still open on it, and an unreachable server is a typed error without the password.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use kiln_engine::store::{
    AdminError, connect, postgres_database_create, postgres_database_drop, postgres_database_url,
    postgres_server_ping,
};

/// A database name no other test or run uses, under the `kiln_test_` prefix that `.ci/run`
/// sweeps when an interrupted run leaves one behind.
fn fresh_name(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "kiln_test_{label}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_database_takes_a_store_and_is_gone_once_dropped() {
    let Some(admin) = common::postgres_admin_url("admin::create_and_drop") else {
        return;
    };
    postgres_server_ping(&admin).await.unwrap();
    let name = fresh_name("admin");
    postgres_database_create(&admin, &name).await.unwrap();
    let url = postgres_database_url(&admin, &name).unwrap();

    let store = connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.dag_list().await.unwrap().is_empty());

    // The name is taken until the database is dropped.
    let again = postgres_database_create(&admin, &name).await;
    assert!(
        matches!(&again, Err(AdminError::DatabaseExists(taken)) if *taken == name),
        "{again:?}"
    );

    // The store's pool still holds sessions on it: dropping ends them rather than waiting.
    postgres_database_drop(&admin, &name).await.unwrap();
    drop(store);
    assert!(connect(&url).await.is_err(), "{name} is still there");
    // Dropping what is not there is not an error, so clean-up can always run.
    postgres_database_drop(&admin, &name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_needs_quoting_keeps_its_case_and_spaces() {
    let Some(admin) = common::postgres_admin_url("admin::quoted_name") else {
        return;
    };
    // Unquoted, PostgreSQL would fold the case and refuse the space and the hyphen.
    let name = fresh_name("Admin Quoted-Name");
    postgres_database_create(&admin, &name).await.unwrap();
    let url = postgres_database_url(&admin, &name).unwrap();
    assert!(url.contains("%20"), "{url}");

    let store = connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    drop(store);

    // The lower-case spelling is another name, so it is free.
    let folded = name.to_lowercase();
    postgres_database_create(&admin, &folded).await.unwrap();
    postgres_database_drop(&admin, &folded).await.unwrap();
    postgres_database_drop(&admin, &name).await.unwrap();
    assert!(connect(&url).await.is_err(), "{name} is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_typed_error_without_the_password() {
    // Port 1 on loopback refuses at once; no PostgreSQL is needed for this one.
    let url = "postgres://kiln:s3cret@127.0.0.1:1/postgres";
    let error = postgres_server_ping(url).await.unwrap_err();
    assert!(matches!(error, AdminError::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains("s3cret"), "{message}");
    assert!(message.contains("kiln:***@127.0.0.1:1"), "{message}");

    let error = postgres_database_create(url, "kiln_test_never")
        .await
        .unwrap_err();
    assert!(matches!(error, AdminError::Unreachable { .. }), "{error:?}");
    let error = postgres_database_drop("sqlite://kiln.db", "kiln_test_never")
        .await
        .unwrap_err();
    assert!(matches!(error, AdminError::NotPostgres(_)), "{error:?}");
    let error = postgres_database_create(url, "").await.unwrap_err();
    assert!(matches!(error, AdminError::InvalidName(_)), "{error:?}");
}
