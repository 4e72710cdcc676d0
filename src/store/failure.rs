//! Which store failures are the database's state rather than this
//! service's fault: unreachable, restarting, out of resources, busy or
//! locked, read-only, without its catalogue, or its reply broken off
//! mid-message (sqlx then reads bytes that are not the protocol). A client
//! is told to retry (UNAVAILABLE, see `crate::error`), maybe on another
//! replica; anything else (a statement the database refuses, a corrupt
//! row) is a defect.

use sqlx::{error::DatabaseError, postgres::PgDatabaseError, sqlite::SqliteError};

/// Whether `error` is the database's passing state: a retry, later or on
/// another replica, may succeed.
pub(super) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => is_transient_database_error(error.as_ref()),
        _ => false,
    }
}

fn is_transient_database_error(error: &dyn DatabaseError) -> bool {
    if let Some(postgres) = error.try_downcast_ref::<PgDatabaseError>() {
        return is_transient_sqlstate(postgres.code());
    }
    if let Some(sqlite) = error.try_downcast_ref::<SqliteError>() {
        let code = sqlite
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .unwrap_or_default();
        return is_transient_sqlite(code, sqlite.message());
    }
    false
}

/// PostgreSQL's SQLSTATEs of a database that cannot answer now: class 08
/// (connection exception), 53 (insufficient resources), 58 (system error:
/// I/O), 57P01–57P03 (the server shutting down, crashed or starting),
/// 57014 (`statement_timeout` cut the statement short: the database is
/// slow or locked), 40001 and 40P01 (serialization failure, deadlock),
/// 25006 (a read-only standby); and 42P01, 3F000 (no `products` table, no
/// schema: the catalogue is missing).
fn is_transient_sqlstate(code: &str) -> bool {
    ["08", "53", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || [
            "57P01", "57P02", "57P03", "57014", "40001", "40P01", "25006", "42P01", "3F000",
        ]
        .contains(&code)
}

/// SQLite's primary result codes (the low byte of an extended code) of a
/// database file that cannot be used now: BUSY, LOCKED, NOMEM, READONLY,
/// IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB; and a missing table
/// (the file replaced by another database).
fn is_transient_sqlite(extended_code: i32, message: &str) -> bool {
    const TRANSIENT: [i32; 10] = [5, 6, 7, 8, 10, 11, 13, 14, 15, 26];
    TRANSIENT.contains(&(extended_code & 0xff)) || message.starts_with("no such table")
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::{
        Connection, SqliteConnection,
        sqlite::{SqliteConnectOptions, SqliteJournalMode},
    };

    use super::*;

    async fn connect(options: &SqliteConnectOptions) -> SqliteConnection {
        SqliteConnection::connect_with(options).await.unwrap()
    }

    #[tokio::test]
    async fn busy_locked_read_only_missing_and_unopenable_sqlite_files_are_transient() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("catalogue.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Delete)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = connect(&options).await;
        sqlx::query("CREATE TABLE products (id TEXT)")
            .execute(&mut holder)
            .await
            .unwrap();

        // Another connection holds the file's exclusive lock: BUSY.
        let mut reader = connect(&options).await;
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        let busy = sqlx::query("SELECT * FROM products")
            .fetch_all(&mut reader)
            .await
            .unwrap_err();
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

        // A connection opened read-only asked to write: READONLY.
        let mut read_only = connect(&options.clone().read_only(true)).await;
        let readonly = sqlx::query("INSERT INTO products VALUES ('x')")
            .execute(&mut read_only)
            .await
            .unwrap_err();

        // No such table: the file is another database.
        let missing = sqlx::query("SELECT * FROM nothing_here")
            .fetch_all(&mut reader)
            .await
            .unwrap_err();

        // No file, and no right to create one: CANTOPEN.
        let gone = SqliteConnectOptions::from_str("sqlite:///nonexistent/dir/x.db").unwrap();
        let cantopen = SqliteConnection::connect_with(&gone).await.unwrap_err();

        for error in [busy, readonly, missing, cantopen] {
            assert!(is_transient(&error), "{error:?}");
        }
        let syntax = sqlx::query("SELEC 1")
            .execute(&mut reader)
            .await
            .unwrap_err();
        assert!(!is_transient(&syntax), "a defect, not the database's state");
    }

    /// A connection cut mid-reply leaves sqlx reading bytes that are not
    /// PostgreSQL's protocol ("unknown message type"): the connection's
    /// state, as an I/O error is; a value that does not decode is not.
    #[test]
    fn a_reply_broken_off_mid_message_is_transient_a_bad_value_is_not() {
        let broken = sqlx::Error::Protocol("unknown message type: '\\0'".into());
        assert!(is_transient(&broken));
        let bad_value = sqlx::Error::Decode("not a number".into());
        assert!(!is_transient(&bad_value));
    }

    #[test]
    fn connection_and_server_sqlstates_are_transient_others_are_not() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "57014", "42P01",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["22021", "42601", "23505", "42703"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}
