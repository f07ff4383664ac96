//! PostgreSQL administration for tools that need databases of their own, such as `kiln bench`,
//! which gives every repetition a fresh database: checking that a server answers, creating and
//! dropping a database, and the URL of one database on a server.
//!
//! These statements run on a single connection to the server's administrative URL (any database
//! the role may connect to, usually `postgres`), never through a store's pool: `CREATE DATABASE`
//! and `DROP DATABASE` cannot run inside a transaction, and the database being dropped must not
//! be the one the connection is on.

use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// The longest database name PostgreSQL keeps (`NAMEDATALEN - 1` bytes). A longer one would be
/// cut short silently, and the URL built from the full name would name another database.
const MAX_NAME_BYTES: usize = 63;

/// PostgreSQL's code for `duplicate_database`.
const DUPLICATE_DATABASE: &str = "42P04";

/// Why an administrative step on a PostgreSQL server failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The URL is not a `postgres://` or `postgresql://` URL.
    #[error("not a PostgreSQL URL: `{0}`")]
    NotPostgres(String),
    /// The name cannot be a PostgreSQL database's: empty, longer than 63 bytes, or holding a NUL.
    #[error("`{0}` cannot name a PostgreSQL database (1 to 63 bytes, no NUL)")]
    InvalidName(String),
    /// No connection to the server could be opened.
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    Unreachable {
        /// The server's URL, its password masked.
        url: String,
        /// Why the connection failed.
        source: sqlx::Error,
    },
    /// A database of that name already exists.
    #[error("PostgreSQL database `{0}` already exists")]
    DatabaseExists(String),
    /// The server refused or failed a statement.
    #[error("PostgreSQL failed to {action}: {source}")]
    Statement {
        /// What was being done, such as "create database `kiln_bench_1`".
        action: String,
        /// The server's answer.
        source: sqlx::Error,
    },
}

/// Checks that the PostgreSQL server at `admin_url` accepts a connection and answers a query.
///
/// ```no_run
/// # async fn demo() {
/// use kiln_engine::store::postgres_server_ping;
/// if let Err(error) = postgres_server_ping("postgres://postgres@127.0.0.1:5432/postgres").await {
///     eprintln!("PostgreSQL benchmarks skipped: {error}");
/// }
/// # }
/// ```
pub async fn postgres_server_ping(admin_url: &str) -> Result<(), AdminError> {
    let mut conn = admin_connect(admin_url).await?;
    let answered = sqlx::raw_sql("SELECT 1")
        .execute(&mut conn)
        .await
        .map(drop)
        .map_err(|source| AdminError::Statement {
            action: "answer `SELECT 1`".to_owned(),
            source,
        });
    // A failed goodbye loses nothing: the server ends the session when the socket closes.
    let _ = conn.close().await;
    answered
}

/// Creates the database `name` on the server at `admin_url`, owned by the URL's role. Fails
/// with [`AdminError::DatabaseExists`] when the name is taken. Any name of 1 to 63 bytes without
/// a NUL is allowed: it is quoted, so its case and characters are kept as given.
pub async fn postgres_database_create(admin_url: &str, name: &str) -> Result<(), AdminError> {
    let quoted = quote_identifier(name)?;
    let mut conn = admin_connect(admin_url).await?;
    let created = sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .execute(&mut conn)
        .await
        .map(drop)
        .map_err(|source| {
            let code = source
                .as_database_error()
                .and_then(|error| error.code().map(|code| code.into_owned()));
            if code.as_deref() == Some(DUPLICATE_DATABASE) {
                AdminError::DatabaseExists(name.to_owned())
            } else {
                AdminError::Statement {
                    action: format!("create database `{name}`"),
                    source,
                }
            }
        });
    let _ = conn.close().await;
    created
}

/// Drops the database `name` from the server at `admin_url`, ending its sessions first
/// (`WITH (FORCE)`, PostgreSQL 13 and later): a benchmark's server killed a moment ago may still
/// hold connections. A database that does not exist is not an error.
pub async fn postgres_database_drop(admin_url: &str, name: &str) -> Result<(), AdminError> {
    let quoted = quote_identifier(name)?;
    let mut conn = admin_connect(admin_url).await?;
    let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .map(drop)
    .map_err(|source| AdminError::Statement {
        action: format!("drop database `{name}`"),
        source,
    });
    let _ = conn.close().await;
    dropped
}

/// The URL of the database `name` on the server of `admin_url`: the same scheme, role, host,
/// port and options, with the path replaced by `name` (percent-encoded) and any `dbname` option
/// left out, since it would override the path.
///
/// ```
/// use kiln_engine::store::postgres_database_url;
/// assert_eq!(
///     postgres_database_url("postgres://kiln@db:5432/postgres?sslmode=disable", "kiln_bench_1")
///         .unwrap(),
///     "postgres://kiln@db:5432/kiln_bench_1?sslmode=disable",
/// );
/// ```
pub fn postgres_database_url(admin_url: &str, name: &str) -> Result<String, AdminError> {
    check_name(name)?;
    let not_postgres = || AdminError::NotPostgres(redact(admin_url));
    let (scheme, rest) = admin_url.split_once("://").ok_or_else(not_postgres)?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(not_postgres());
    }
    let (before_query, query) = rest
        .split_once('?')
        .map_or((rest, None), |(before, query)| (before, Some(query)));
    // The authority (role, password, host, port) ends at the first `/`; a URL may have no path.
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(authority, _)| authority);
    let mut url = format!("{scheme}://{authority}/{}", percent_encode(name));
    let options: Vec<&str> = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("dbname"))
        .collect();
    if !options.is_empty() {
        url.push('?');
        url.push_str(&options.join("&"));
    }
    Ok(url)
}

async fn admin_connect(admin_url: &str) -> Result<PgConnection, AdminError> {
    if !(admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://")) {
        return Err(AdminError::NotPostgres(redact(admin_url)));
    }
    PgConnection::connect(admin_url)
        .await
        .map_err(|source| AdminError::Unreachable {
            url: redact(admin_url),
            source,
        })
}

fn check_name(name: &str) -> Result<(), AdminError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
        return Err(AdminError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// `name` as a quoted SQL identifier: inside double quotes, each double quote doubled. Nothing
/// else needs escaping there, so no name can end the identifier and add SQL of its own.
fn quote_identifier(name: &str) -> Result<String, AdminError> {
    check_name(name)?;
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Every byte outside RFC 3986's unreserved characters as `%XX`, as a URL path segment needs.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The URL with its password, if any, replaced by `***`, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            match url[scheme_end + 3..at].split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_their_quotes_doubled() {
        assert_eq!(
            quote_identifier("kiln_bench_1").unwrap(),
            "\"kiln_bench_1\""
        );
        assert_eq!(
            quote_identifier("a\"; DROP DATABASE x; --").unwrap(),
            "\"a\"\"; DROP DATABASE x; --\""
        );
        assert_eq!(quote_identifier("Mixed Case").unwrap(), "\"Mixed Case\"");
    }

    #[test]
    fn names_postgres_cannot_keep_are_refused() {
        for name in ["", "a\0b", &"x".repeat(64)] {
            assert!(
                matches!(quote_identifier(name), Err(AdminError::InvalidName(_))),
                "{name:?}"
            );
        }
        assert!(quote_identifier(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn database_urls_keep_everything_but_the_path() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "kiln_b",
                "postgres://postgres@127.0.0.1:5432/kiln_b",
            ),
            (
                "postgresql://u:p@h/db?sslmode=require",
                "kiln_b",
                "postgresql://u:p@h/kiln_b?sslmode=require",
            ),
            ("postgres://h:5432", "kiln_b", "postgres://h:5432/kiln_b"),
            ("postgres://h/", "kiln_b", "postgres://h/kiln_b"),
            (
                "postgres://h/db?dbname=other&application_name=x",
                "kiln_b",
                "postgres://h/kiln_b?application_name=x",
            ),
            (
                "postgres://h/db?dbname=other",
                "a b/\"c",
                "postgres://h/a%20b%2F%22c",
            ),
        ];
        for (admin, name, expected) in cases {
            assert_eq!(
                postgres_database_url(admin, name).unwrap(),
                expected,
                "{admin}"
            );
        }
    }

    #[test]
    fn database_urls_need_a_postgres_url_and_a_good_name() {
        assert!(matches!(
            postgres_database_url("sqlite://kiln.db", "x"),
            Err(AdminError::NotPostgres(_))
        ));
        assert!(matches!(
            postgres_database_url("mysql://u:secret@h/db", "x"),
            Err(AdminError::NotPostgres(url)) if url == "mysql://u:***@h/db"
        ));
        assert!(matches!(
            postgres_database_url("postgres://h/db", ""),
            Err(AdminError::InvalidName(_))
        ));
    }
}
