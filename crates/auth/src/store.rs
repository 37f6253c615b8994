//! The users table in PostgreSQL: the connection pool (DSN from configuration,
//! password from a file or a systemd credential), the embedded migrations, and
//! the few queries the service and its CLI need. Queries are checked at run time
//! (`query_as` + `FromRow`), so building needs no database.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use time::OffsetDateTime;

use crate::domain::{Email, Name};
use crate::settings;

/// The migrations in `crates/auth/migrations`, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The systemd credential holding the database password.
pub const PASSWORD_CREDENTIAL: &str = "db-password";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database.url is not a valid PostgreSQL DSN: {0}")]
    BadUrl(#[source] sqlx::Error),
    #[error("database.url must start with postgres:// or postgresql:// (got {0:?})")]
    NotPostgres(String),
    #[error("cannot read the database password from {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database did not answer within the acquire timeout")]
    Timeout,
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut => Self::Timeout,
            other => Self::Database(other),
        }
    }
}

/// A row of `users`, hash included: only the login check sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: i32,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password: String,
    pub user_active: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl UserRecord {
    pub fn is_active(&self) -> bool {
        self.user_active == 1
    }

    /// What clients may see: everything but the hash.
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            active: self.user_active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A user as the wire contract shows it (`active` is the original's integer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UserView {
    pub id: i32,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub active: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A user to add; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub first_name: Name,
    pub last_name: Name,
    pub password_hash: String,
    pub active: bool,
}

/// What adding a user did.
#[derive(Debug, Clone)]
pub enum Added {
    Created(UserView),
    AlreadyExists,
}

/// The users table behind a connection pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UserStore {
    pool: PgPool,
    /// For [`UserStore::check_connection`], which bypasses the pool.
    options: PgConnectOptions,
    acquire_timeout: std::time::Duration,
}

impl UserStore {
    /// A pool for `settings`; connections are opened on first use, so this
    /// succeeds while the database is still down.
    pub fn connect_lazy(settings: &settings::Database) -> Result<Self, StoreError> {
        let options = connect_options(settings, credentials_directory().as_deref())?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout())
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            options,
            acquire_timeout: settings.acquire_timeout(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One round trip: the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Opens one connection outside the pool. A pool that cannot connect only
    /// says it timed out; this says why (refused, authentication, no such
    /// database), which is what an operator needs at start-up.
    pub async fn check_connection(&self) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        let connect = sqlx::PgConnection::connect_with(&self.options);
        let mut connection = tokio::time::timeout(self.acquire_timeout, connect)
            .await
            .map_err(|_| StoreError::Timeout)??;
        connection.ping().await?;
        connection.close().await?;
        Ok(())
    }

    /// Applies pending migrations. Safe to run concurrently and repeatedly:
    /// sqlx takes an advisory lock and records what it applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn find_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let user = sqlx::query_as::<_, UserRecord>(
            "SELECT id, email, first_name, last_name, password, user_active, created_at, updated_at \
             FROM users WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(user)
    }

    /// Adds a user unless one with that e-mail exists.
    pub async fn add(&self, user: &NewUser) -> Result<Added, StoreError> {
        let created = sqlx::query_as::<_, UserRecord>(
            "INSERT INTO users (email, first_name, last_name, password, user_active) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (email) DO NOTHING \
             RETURNING id, email, first_name, last_name, password, user_active, created_at, updated_at",
        )
        .bind(user.email.as_str())
        .bind(user.first_name.as_str())
        .bind(user.last_name.as_str())
        .bind(&user.password_hash)
        .bind(i32::from(user.active))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match created {
            Some(record) => Added::Created(record.view()),
            None => Added::AlreadyExists,
        })
    }

    /// Every user, oldest first, without hashes.
    pub async fn list(&self) -> Result<Vec<UserView>, StoreError> {
        let users = sqlx::query_as::<_, UserRecord>(
            "SELECT id, email, first_name, last_name, password, user_active, created_at, updated_at \
             FROM users ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(users.iter().map(UserRecord::view).collect())
    }

    /// Closes the pool's connections (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `$CREDENTIALS_DIRECTORY`, set by systemd for units with `LoadCredential=`.
fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

/// Connection options from the DSN, with the password from
/// `database.password_file`, else from the credential `db-password` when the
/// credentials directory holds one. A password in the DSN is kept when neither
/// is there.
pub fn connect_options(
    settings: &settings::Database,
    credentials: Option<&Path>,
) -> Result<PgConnectOptions, StoreError> {
    let url = settings.url.trim();
    if !["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        // sqlx would read anything as a host name and fail only on connect.
        // Only the scheme is quoted: the rest may hold a password.
        let scheme = url.split("://").next().unwrap_or(url);
        return Err(StoreError::NotPostgres(format!("{scheme}://…")));
    }
    let options: PgConnectOptions = url.parse().map_err(StoreError::BadUrl)?;
    let password_path = settings.password_file.clone().or_else(|| {
        credentials
            .map(|dir| dir.join(PASSWORD_CREDENTIAL))
            .filter(|path| path.is_file())
    });
    let Some(path) = password_path else {
        return Ok(options);
    };
    let contents = std::fs::read_to_string(&path).map_err(|source| StoreError::PasswordFile {
        path: path.clone(),
        source,
    })?;
    let password = contents.trim_end_matches(['\n', '\r']);
    Ok(options.password(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(url: &str) -> settings::Database {
        settings::Database {
            url: url.to_owned(),
            ..settings::Database::default()
        }
    }

    #[test]
    fn unix_socket_dsn_selects_the_socket_directory() {
        let options = connect_options(&database("postgres:///users?host=/run/postgresql"), None)
            .expect("valid DSN");
        assert_eq!(
            options.get_socket().map(|p| p.display().to_string()),
            Some("/run/postgresql".to_owned())
        );
        assert_eq!(options.get_database(), Some("users"));
    }

    #[test]
    fn garbage_dsn_is_refused() {
        let err = connect_options(&database("mysql://nope"), None).expect_err("not postgres");
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    #[test]
    fn missing_password_file_is_named() {
        let mut settings = database("postgres://u@127.0.0.1/users");
        settings.password_file = Some("/nonexistent/db-password".into());
        let err = connect_options(&settings, None).expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/db-password"),
            "{err}"
        );
    }

    #[test]
    fn password_comes_from_the_file_else_the_credential() {
        let url = "postgres://u@127.0.0.1/users";
        let credentials = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            credentials.path().join(PASSWORD_CREDENTIAL),
            "from-credential\n",
        )
        .expect("write");
        // PgConnectOptions has no password getter; its Debug output shows it.
        let options = connect_options(&database(url), Some(credentials.path())).expect("options");
        assert!(format!("{options:?}").contains("\"from-credential\""));

        let file = credentials.path().join("configured");
        std::fs::write(&file, "from-file\r\n").expect("write");
        let mut settings = database(url);
        settings.password_file = Some(file);
        let options = connect_options(&settings, Some(credentials.path())).expect("options");
        assert!(format!("{options:?}").contains("\"from-file\""));

        let empty = tempfile::tempdir().expect("tempdir");
        let options = connect_options(&database(url), Some(empty.path())).expect("options");
        assert!(!format!("{options:?}").contains("from-"));
    }
}
