//! The real `switchboard-auth` binary: socket activation with `READY=1`, the
//! `user add` / `user list` commands with the password on stdin, and the
//! configuration layering (file < environment).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::Postgres;
use switchboard_testkit::activation::{
    KillOnDrop, NotifySocket, SocketActivation, http_get, sigterm, wait_for_exit,
};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-auth");

/// `switchboard-auth ARGS` with `env`, the password (or anything) on stdin.
fn auth(args: &[&str], env: &[(&str, String)], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("SWITCHBOARD_AUTH__RUNTIME__LOG_TARGET", "stderr")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard-auth");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fresh_database() -> (String, String) {
    let postgres = Postgres::shared().expect("postgres");
    let url = postgres.create_database().expect("database");
    let name = url.rsplit('/').next().expect("name").to_owned();
    (url, name)
}

fn http_post(port: u16, path: &str, body: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn user_add_and_list_use_stdin_and_never_show_the_hash() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let (url, database) = fresh_database();
    let env = [
        ("SWITCHBOARD_AUTH__DATABASE__URL", url),
        ("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "4".to_owned()),
    ];
    let add = [
        "user",
        "add",
        "--email",
        "Admin@Example.com",
        "--first-name",
        "Admin",
        "--last-name",
        "User",
    ];
    let added = auth(&add, &env, "verysecret\n");
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stdout).contains("added user 1 <admin@example.com> (active)"),
        "{}",
        text(&added.stdout)
    );

    // Again: an error that says so, unless --skip-existing.
    let again = auth(&add, &env, "other\n");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let mut skip = add.to_vec();
    skip.push("--skip-existing");
    let skipped = auth(&skip, &env, "other\n");
    assert!(skipped.status.success(), "{}", text(&skipped.stderr));
    assert!(text(&skipped.stdout).contains("already exists; left unchanged"));

    let inactive = auth(
        &[
            "user",
            "add",
            "--email",
            "sleepy@example.com",
            "--first-name",
            "Sleepy",
            "--last-name",
            "User",
            "--inactive",
        ],
        &env,
        "verysecret\r\n",
    );
    assert!(inactive.status.success(), "{}", text(&inactive.stderr));

    // Refused passwords: empty, too long, missing.
    for (stdin, expected) in [
        ("\n", "no password on stdin"),
        ("", "no password on stdin"),
        (&*format!("{}\n", "x".repeat(73)), "longer than 72 bytes"),
    ] {
        let mut args = add.to_vec();
        args[3] = "refused@example.com";
        let refused = auth(&args, &env, stdin);
        assert!(!refused.status.success(), "accepted {stdin:?}");
        assert!(
            text(&refused.stderr).contains(expected),
            "{}",
            text(&refused.stderr)
        );
    }

    let listed = auth(&["user", "list"], &env, "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("id  email"), "{table}");
    assert!(
        lines[1].contains("admin@example.com") && lines[1].contains("Admin"),
        "{table}"
    );
    assert!(lines[2].contains("sleepy@example.com"), "{table}");
    let active_column: Vec<&str> = lines[1..]
        .iter()
        .map(|line| line.split_whitespace().nth(4).expect("active column"))
        .collect();
    assert_eq!(active_column, ["1", "0"], "{table}");
    assert!(!table.contains("$2"), "hash shown: {table}");

    // The password was stored as a bcrypt hash of exactly the line without its newline.
    let hash = Postgres::shared()
        .expect("postgres")
        .psql(
            &database,
            "SELECT password FROM users WHERE email = 'admin@example.com'",
        )
        .expect("psql");
    assert!(bcrypt::verify("verysecret", &hash).expect("bcrypt"));
    let sleepy = Postgres::shared()
        .expect("postgres")
        .psql(
            &database,
            "SELECT password FROM users WHERE email = 'sleepy@example.com'",
        )
        .expect("psql");
    assert!(
        bcrypt::verify("verysecret", &sleepy).expect("bcrypt"),
        "CRLF not stripped"
    );
}

#[test]
fn environment_overrides_the_file_which_overrides_defaults() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let (url, database) = fresh_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("auth.toml");
    // The file's database is unreachable and its cost is 5.
    std::fs::write(
        &config,
        "[database]\nurl = \"postgres://postgres@127.0.0.1:1/nowhere\"\n\n[security]\nbcrypt_cost = 5\n",
    )
    .expect("write config");
    let config_arg = config.to_str().expect("utf-8 path");
    let add = |email: &str, env: &[(&str, String)]| {
        auth(
            &[
                "--config",
                config_arg,
                "user",
                "add",
                "--email",
                email,
                "--first-name",
                "F",
                "--last-name",
                "L",
            ],
            env,
            "verysecret\n",
        )
    };

    // File only: its database is used (and is unreachable).
    let failed = add("file@example.com", &[]);
    assert!(
        !failed.status.success(),
        "the file's database.url was ignored"
    );

    // Environment overrides the file's URL; the file's cost beats the default 12.
    let env_url = [("SWITCHBOARD_AUTH__DATABASE__URL", url.clone())];
    let added = add("file@example.com", &env_url);
    assert!(added.status.success(), "{}", text(&added.stderr));

    // Environment overrides the file's cost too.
    let env_both = [
        ("SWITCHBOARD_AUTH__DATABASE__URL", url.clone()),
        ("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "6".to_owned()),
    ];
    let added = add("env@example.com", &env_both);
    assert!(added.status.success(), "{}", text(&added.stderr));

    // SWITCHBOARD_AUTH_CONFIG names the file when --config does not.
    let by_variable = Command::new(BINARY)
        .args(["user", "list"])
        .env("SWITCHBOARD_AUTH_CONFIG", &config)
        .env("SWITCHBOARD_AUTH__DATABASE__URL", &url)
        .output()
        .expect("run");
    assert!(
        by_variable.status.success(),
        "{}",
        text(&by_variable.stderr)
    );

    let hashes = Postgres::shared()
        .expect("postgres")
        .psql(
            &database,
            "SELECT email || ' ' || substr(password, 1, 7) FROM users ORDER BY id",
        )
        .expect("psql");
    assert_eq!(
        hashes.lines().collect::<Vec<_>>(),
        ["file@example.com $2b$05$", "env@example.com $2b$06$"]
    );

    // A misspelled key stops the binary with an error naming it.
    let typo = Command::new(BINARY)
        .args(["user", "list"])
        .env("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COTS", "6")
        .output()
        .expect("run");
    assert!(!typo.status.success());
    assert!(
        text(&typo.stderr).contains("bcrypt_cots"),
        "{}",
        text(&typo.stderr)
    );
}

#[test]
fn serves_on_the_activated_socket_and_notifies_readiness() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let postgres = Postgres::shared().expect("postgres");
    let (url, _) = fresh_database();
    let database = url.rsplit('/').next().expect("name");
    // Peer-style DSN over the unix socket, as production uses it.
    let socket_url = format!(
        "postgres:///{database}?host={}&port={}&user=postgres",
        postgres.socket_dir().display(),
        postgres.port()
    );
    let seeded = auth(
        &[
            "user",
            "add",
            "--email",
            "admin@example.com",
            "--first-name",
            "Admin",
            "--last-name",
            "User",
            "--skip-existing",
        ],
        &[
            ("SWITCHBOARD_AUTH__DATABASE__URL", socket_url.clone()),
            ("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "4".to_owned()),
        ],
        "verysecret\n",
    );
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let mut notify = NotifySocket::bind().expect("notify socket");
    let port = switchboard_testkit::free_port();
    // The configured address must not be what is served: the socket wins.
    let unused_port = switchboard_testkit::free_port();
    let log = dir.path().join("auth.log");
    let env = [
        ("NOTIFY_SOCKET", notify.path().display().to_string()),
        ("SWITCHBOARD_AUTH__DATABASE__URL", socket_url),
        ("SWITCHBOARD_AUTH__EVENTS__AMQP_URL", common::fresh_vhost()),
        ("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "4".to_owned()),
        (
            "SWITCHBOARD_AUTH__LISTEN__HTTP",
            format!("127.0.0.1:{unused_port}"),
        ),
        ("SWITCHBOARD_AUTH__RUNTIME__LOG_TARGET", "stderr".to_owned()),
    ];
    let mut command = SocketActivation::new()
        .listen(format!("127.0.0.1:{port}"), "http")
        .envs(env)
        .command(BINARY)
        .expect("systemd-socket-activate");
    command.stderr(std::fs::File::create(&log).expect("log file"));
    let _child = KillOnDrop(command.spawn().expect("spawn activator"));

    // The first connection starts the service; it waits in the backlog.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        match http_post(
            port,
            "/authenticate",
            r#"{"email":"admin@example.com","password":"verysecret"}"#,
        ) {
            Ok(reply) if !reply.is_empty() => break reply,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!(
                "no answer on the activated socket: {other:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    assert!(
        reply.contains(r#""message":"Logged in user admin@example.com""#),
        "{reply}"
    );
    assert!(
        notify.wait_for(
            "READY=1",
            deadline.saturating_duration_since(Instant::now())
        ),
        "no READY=1 on the notify socket; got {:?}",
        notify.seen()
    );
    let datagrams = notify.seen();
    assert!(
        datagrams.iter().any(|d| d.contains("STATUS=")),
        "status lines expected before READY: {datagrams:?}"
    );
    let ready = http_get(port, "/readyz").expect("readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", unused_port)).is_err(),
        "the configured address was bound although a socket was passed"
    );
    assert_log_mentions(&log, "using socket passed by the service manager");
}

fn assert_log_mentions(log: &Path, needle: &str) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(text.contains(needle), "{needle:?} not in log:\n{text}");
}

#[test]
fn sigterm_without_rabbitmq_exits_cleanly_and_names_unpublished_events() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let (url, _) = fresh_database();
    let seeded = auth(
        &[
            "user",
            "add",
            "--email",
            "ada@example.com",
            "--first-name",
            "Ada",
            "--last-name",
            "L",
        ],
        &[
            ("SWITCHBOARD_AUTH__DATABASE__URL", url.clone()),
            ("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "4".to_owned()),
        ],
        "verysecret\n",
    );
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    let port = switchboard_testkit::free_port();
    let nowhere = switchboard_testkit::free_port();
    let mut server = KillOnDrop(
        Command::new(BINARY)
            .env("SWITCHBOARD_AUTH__DATABASE__URL", &url)
            .env(
                "SWITCHBOARD_AUTH__EVENTS__AMQP_URL",
                format!("amqp://guest:guest@127.0.0.1:{nowhere}/%2f"),
            )
            .env("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "4")
            .env(
                "SWITCHBOARD_AUTH__LISTEN__HTTP",
                format!("127.0.0.1:{port}"),
            )
            .env("SWITCHBOARD_AUTH__RUNTIME__LOG_TARGET", "stderr")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match http_post(
            port,
            "/authenticate",
            r#"{"email":"ada@example.com","password":"verysecret"}"#,
        ) {
            Ok(reply) if !reply.is_empty() => break reply,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("no answer: {other:?}"),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");

    sigterm(&server).expect("SIGTERM");
    let exit = wait_for_exit(
        &mut server,
        deadline.saturating_duration_since(Instant::now()),
    )
    .unwrap_or_else(|| panic!("no exit after SIGTERM"));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "{exit}\n{logged}");
    assert!(!logged.contains("panicked"), "{logged}");
    assert!(
        logged
            .lines()
            .any(|line| line.contains("not published before shutdown")
                && line.contains("ada@example.com logged in")),
        "{logged}"
    );
}
