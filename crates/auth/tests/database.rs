//! The users table on a real PostgreSQL: migrations (idempotent, concurrent),
//! the unix-socket DSN form, and what clients see when the database goes away.

mod common;

use std::time::Duration;

use common::{TestService, credentials, seed_user};
use switchboard_auth::settings;
use switchboard_auth::store::UserStore;
use switchboard_testkit::Postgres;

fn database_settings(url: String) -> settings::Database {
    settings::Database {
        url,
        acquire_timeout_ms: 3_000,
        ..settings::Database::default()
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let postgres = Postgres::shared().expect("postgres");
    let url = postgres.create_database().expect("database");
    let database = url.rsplit('/').next().expect("name").to_owned();
    let store = UserStore::connect_lazy(&database_settings(url.clone())).expect("store");
    store.migrate().await.expect("first run");
    seed_user(&store, "ada@example.com", "verysecret", true).await;
    store.migrate().await.expect("second run");

    // Two processes starting at once (e.g. two instances after an upgrade).
    let other = UserStore::connect_lazy(&database_settings(url)).expect("store");
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    a.expect("concurrent run a");
    b.expect("concurrent run b");

    let users = store.list().await.expect("list");
    assert_eq!(users.len(), 1, "data survives re-running migrations");
    let applied = postgres
        .psql(
            &database,
            "SELECT count(*) FROM _sqlx_migrations WHERE success",
        )
        .expect("psql");
    // users, login_failures.
    assert_eq!(applied, "2");
    let columns = postgres
        .psql(
            &database,
            "SELECT column_name || ':' || data_type FROM information_schema.columns \
             WHERE table_name = 'users' ORDER BY ordinal_position",
        )
        .expect("psql");
    assert_eq!(
        columns.lines().collect::<Vec<_>>(),
        [
            "id:integer",
            "email:text",
            "first_name:text",
            "last_name:text",
            "password:text",
            "user_active:integer",
            "created_at:timestamp with time zone",
            "updated_at:timestamp with time zone",
        ]
    );
    // E-mails are unique.
    let duplicate = postgres.psql(
        &database,
        "INSERT INTO users (email, password) VALUES ('ada@example.com', 'x')",
    );
    assert!(duplicate.is_err(), "duplicate e-mail was accepted");
}

#[tokio::test]
async fn unix_socket_dsn_reaches_the_server() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let postgres = Postgres::shared().expect("postgres");
    let url = postgres.create_database().expect("database");
    let database = url.rsplit('/').next().expect("name");
    // The documented form, postgres:///users?host=/run/postgresql, pointed at
    // the test server's socket folder (its port and superuser are not the defaults).
    let socket_url = format!(
        "postgres:///{database}?host={}&port={}&user=postgres",
        postgres.socket_dir().display(),
        postgres.port()
    );
    let store = UserStore::connect_lazy(&database_settings(socket_url)).expect("store");
    store.ping().await.expect("ping over the unix socket");
    store.migrate().await.expect("migrate over the unix socket");
    let over_socket: String =
        sqlx::query_scalar("SELECT coalesce(inet_server_addr()::text, 'unix')")
            .fetch_one(store.pool())
            .await
            .expect("query");
    assert_eq!(over_socket, "unix", "connection did not use the socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_makes_logins_fail_cleanly_and_readiness_name_it() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    // Our own server: this test stops it.
    let mut postgres = Postgres::start().expect("postgres");
    let mut settings = common::settings(None);
    settings.database.url = postgres.create_database().expect("database");
    settings.database.acquire_timeout_ms = 1_000;
    let service = TestService::start(settings).await;
    seed_user(&service.store(), "ada@example.com", "verysecret", true).await;

    tokio::task::block_in_place(|| postgres.stop());
    let (status, reply) = service
        .login(&credentials("ada@example.com", "verysecret"))
        .await;
    assert!(status == 502 || status == 504, "{status}: {reply}");
    assert_eq!(reply["error"], true);
    let response = reqwest::get(format!("{}/readyz", service.base))
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("postgres"), "{message}");
    assert!(message.contains("amqp: "), "{message}");

    tokio::task::block_in_place(|| postgres.start_again()).expect("start again");
    let mut recovered = false;
    for _ in 0..100 {
        let (status, _) = service
            .login(&credentials("ada@example.com", "verysecret"))
            .await;
        if status == 202 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "logins did not recover after PostgreSQL came back"
    );
    service.stop().await;
}
