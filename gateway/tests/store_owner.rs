//! Whose file a store is: Archipel marks its stores and refuses another application's
//! database, a store from a newer Archipel, a damaged file, and a second gateway on a store
//! one already holds; each refusal names the file and leaves it as it was.

mod common;

use archipel_gateway::store::{Store, StoreConfig, StoreError};
use common::*;
use sqlx::SqliteConnection;

/// A connection of the test's own, making the file when there is none (another
/// application's database).
async fn raw(dir: &TempDir) -> SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.file())
        .create_if_missing(true);
    SqliteConnection::connect_with(&options).await.unwrap()
}

async fn try_open(dir: &TempDir) -> Result<Store, StoreError> {
    Store::open(StoreConfig::new(dir.file(), 100)).await
}

#[tokio::test]
async fn a_store_is_marked_as_archipels() {
    let dir = TempDir::new("owner-mark");
    open(&dir, 100).await.close().await;
    let id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut raw(&dir).await)
        .await
        .unwrap();
    assert_eq!(id, 0x4172_6368, "\"Arch\"");
}

#[tokio::test]
async fn another_applications_database_is_refused_and_left_untouched() {
    let dir = TempDir::new("owner-foreign");
    let mut conn = raw(&dir).await;
    sqlx::query("CREATE TABLE contacts (name TEXT, phone TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = try_open(&dir).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Foreign { .. }), "{text}");
    assert!(text.contains(&dir.file().display().to_string()), "{text}");
    assert!(
        text.contains("contacts") && text.contains("[store] path"),
        "{text}"
    );
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, ["contacts"], "nothing migrated into it");

    // Another application's own id is refused too, even on an empty file.
    let dir = TempDir::new("owner-foreign-id");
    let mut conn = raw(&dir).await;
    sqlx::query("PRAGMA application_id = 1234")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = try_open(&dir).await.unwrap_err();
    assert!(err.to_string().contains("0x4d2"), "{err}");
}

#[tokio::test]
async fn a_store_from_a_newer_archipel_gets_a_plain_sentence() {
    let dir = TempDir::new("owner-newer");
    open(&dir, 100).await.close().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut raw(&dir).await)
    .await
    .unwrap();
    let err = try_open(&dir).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Newer { found: 99, .. }), "{text}");
    assert!(
        text.contains("newer Archipel") && text.contains("99"),
        "{text}"
    );
}

#[tokio::test]
async fn a_damaged_file_is_refused_and_never_started_over() {
    let dir = TempDir::new("owner-damaged");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(dir.file(), &garbage).unwrap();
    let err = try_open(&dir).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Damaged { .. }), "{text}");
    assert!(text.contains("move it aside"), "{text}");
    assert_eq!(
        std::fs::read(dir.file()).unwrap(),
        garbage,
        "left as it was"
    );
}

#[tokio::test]
async fn a_second_store_on_one_file_is_refused_naming_the_first() {
    let dir = TempDir::new("owner-lock");
    let first = open(&dir, 100).await;
    let err = try_open(&dir).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Locked { .. }), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    // Once the first is closed, the store opens again.
    first.close().await;
    try_open(&dir).await.unwrap().close().await;
}
