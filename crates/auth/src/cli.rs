//! Administration commands of the `switchboard-auth` binary: `user add` (the
//! password comes from stdin, never from the command line where `ps` would show
//! it) and `user list`. Both use the server's configuration and migrate first.

use std::io::{BufRead, Write};

use crate::domain::{Email, InvalidInput, MAX_PASSWORD_BYTES, Name, Password};
use crate::hashing::{HashError, PasswordHasher};
use crate::settings::{InvalidSetting, Settings};
use crate::store::{Added, NewUser, StoreError, UserStore, UserView};

/// `switchboard-auth <command>`; without one, the binary serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin (one line).
    Add(AddUser),
    /// List users (never their password hashes).
    List,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AddUser {
    /// The user's e-mail address (login name).
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub first_name: String,
    #[arg(long)]
    pub last_name: String,
    /// Create the user inactive: it cannot log in.
    #[arg(long)]
    pub inactive: bool,
    /// Succeed without changes when a user with this e-mail exists.
    #[arg(long)]
    pub skip_existing: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    #[error(
        "no password on stdin: pipe one line, e.g. `printf '%s\\n' \"$PASSWORD\" | switchboard-auth user add ...`"
    )]
    NoPassword,
    #[error("the password on stdin is longer than {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error("the password on stdin is not UTF-8")]
    PasswordNotUtf8,
    #[error("cannot read the password from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("a user with email {0} already exists (pass --skip-existing to accept that)")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

/// Reads one line from `input`: the trailing newline (`\n` or `\r\n`) is
/// stripped, an empty line or one over 72 bytes is refused (bcrypt would
/// silently ignore the excess).
pub fn read_password(input: impl BufRead) -> Result<Password, CliError> {
    // One byte more than allowed plus a CRLF tells "too long" from "just right".
    let limit = (MAX_PASSWORD_BYTES + 3) as u64;
    let mut line = Vec::new();
    input
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(CliError::Stdin)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() as u64 == limit {
        return Err(CliError::PasswordTooLong);
    }
    let line = String::from_utf8(line).map_err(|_| CliError::PasswordNotUtf8)?;
    match Password::parse(line) {
        Ok(password) => Ok(password),
        Err(InvalidInput::EmptyPassword) => Err(CliError::NoPassword),
        Err(InvalidInput::LongPassword(_)) => Err(CliError::PasswordTooLong),
        Err(other) => Err(other.into()),
    }
}

/// Connects and migrates, failing fast: an administrator is waiting.
async fn open_store(settings: &Settings) -> Result<UserStore, CliError> {
    settings.validate()?;
    let store = UserStore::connect_lazy(&settings.database)?;
    store.check_connection().await?;
    store.migrate().await?;
    Ok(store)
}

/// `user add`: prints what it did to `out`.
pub async fn add_user(
    settings: &Settings,
    args: &AddUser,
    password: Password,
    mut out: impl Write,
) -> Result<(), CliError> {
    let email = Email::parse(&args.email)?;
    let first_name = Name::parse("first name", &args.first_name)?;
    let last_name = Name::parse("last name", &args.last_name)?;
    let store = open_store(settings).await?;
    // Checked before hashing so that re-running the seed step is cheap.
    let outcome = if store.find_by_email(&email).await?.is_some() {
        Added::AlreadyExists
    } else {
        let hasher = PasswordHasher::new(settings.security.bcrypt_cost).await?;
        let user = NewUser {
            email: email.clone(),
            first_name,
            last_name,
            password_hash: hasher.hash(&password).await?,
            active: !args.inactive,
        };
        store.add(&user).await?
    };
    store.close().await;
    match outcome {
        Added::Created(user) => writeln!(
            out,
            "added user {} <{}> ({})",
            user.id,
            user.email,
            if user.active == 1 {
                "active"
            } else {
                "inactive"
            }
        )
        .map_err(CliError::Output),
        Added::AlreadyExists if args.skip_existing => {
            writeln!(out, "user <{email}> already exists; left unchanged").map_err(CliError::Output)
        }
        Added::AlreadyExists => Err(CliError::Exists(email.to_string())),
    }
}

/// `user list`: a table on `out`.
pub async fn list_users(settings: &Settings, mut out: impl Write) -> Result<(), CliError> {
    let store = open_store(settings).await?;
    let users = store.list().await?;
    store.close().await;
    out.write_all(render_table(&users).as_bytes())
        .map_err(CliError::Output)
}

/// Columns padded to their widest cell; timestamps in RFC 3339.
pub fn render_table(users: &[UserView]) -> String {
    let header = [
        "id",
        "email",
        "first_name",
        "last_name",
        "active",
        "created_at",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = users
        .iter()
        .map(|user| {
            [
                user.id.to_string(),
                user.email.clone(),
                user.first_name.clone(),
                user.last_name.clone(),
                user.active.to_string(),
                user.created_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| user.created_at.to_string()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_line_is_stripped_of_its_newline() {
        let password = read_password(&b"verysecret\n"[..]).expect("valid");
        assert_eq!(password.expose(), "verysecret");
        let password = read_password(&b"verysecret\r\nignored\n"[..]).expect("valid");
        assert_eq!(password.expose(), "verysecret");
        let password = read_password(&b"no newline"[..]).expect("valid");
        assert_eq!(password.expose(), "no newline");
        // Inner and leading spaces are part of the password.
        let password = read_password(&b" a b \n"[..]).expect("valid");
        assert_eq!(password.expose(), " a b ");
    }

    #[test]
    fn empty_or_too_long_passwords_are_refused() {
        assert!(matches!(read_password(&b""[..]), Err(CliError::NoPassword)));
        assert!(matches!(
            read_password(&b"\n"[..]),
            Err(CliError::NoPassword)
        ));
        let exact = format!("{}\n", "x".repeat(72));
        assert!(read_password(exact.as_bytes()).is_ok());
        let long = format!("{}\n", "x".repeat(73));
        assert!(matches!(
            read_password(long.as_bytes()),
            Err(CliError::PasswordTooLong)
        ));
        let very_long = "x".repeat(10_000);
        assert!(matches!(
            read_password(very_long.as_bytes()),
            Err(CliError::PasswordTooLong)
        ));
    }

    #[test]
    fn table_aligns_columns_and_has_no_hash_column() {
        let created = time::macros::datetime!(2025-01-02 03:04:05 UTC);
        let users = [
            UserView {
                id: 1,
                email: "admin@example.com".into(),
                first_name: "Admin".into(),
                last_name: "User".into(),
                active: 1,
                created_at: created,
                updated_at: created,
            },
            UserView {
                id: 12,
                email: "b@example.com".into(),
                first_name: "B".into(),
                last_name: "".into(),
                active: 0,
                created_at: created,
                updated_at: created,
            },
        ];
        let table = render_table(&users);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "id  email              first_name  last_name  active  created_at"
        );
        assert_eq!(
            lines[1],
            "1   admin@example.com  Admin       User       1       2025-01-02T03:04:05Z"
        );
        assert_eq!(
            lines[2],
            "12  b@example.com      B                      0       2025-01-02T03:04:05Z"
        );
    }
}
