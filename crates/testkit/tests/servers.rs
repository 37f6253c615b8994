//! The testkit against the real servers: each one starts, answers a real client,
//! keeps (or, for MailHog, drops) its data across stop/start_again, runs beside
//! a second instance, and leaves no process or folder behind, whether dropped
//! or orphaned by a test process that was killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::{
    Error, FERRETDB_DATABASE, FerretBackend, MailHog, MongoDb, MongoKind, Postgres, Prometheus,
    RabbitMq, ServerOptions, find_binary, free_port, process_alive, servers_disabled, skip,
    unique_name,
};

fn port_closed(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_err()
}

/// Polls until `condition` holds or `timeout` passes; returns whether it held.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The psql client on PATH (Debian: /usr/bin/psql), over TCP, as a real client would.
fn psql_over_tcp(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {url} -c {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

mod postgres {
    use super::*;

    #[test]
    fn answers_queries_over_tcp_and_the_unix_socket() {
        if servers_disabled() {
            return;
        }
        let postgres = Postgres::start().expect("postgres starts");
        let url = postgres.create_database().expect("database created");
        assert!(
            url.starts_with(&format!(
                "postgres://postgres@127.0.0.1:{}/db_",
                postgres.port()
            )),
            "{url}"
        );
        assert_eq!(psql_over_tcp(&url, "SELECT 40 + 2"), "42");

        let database = url.rsplit('/').next().expect("database name");
        assert_eq!(
            postgres
                .psql(database, "SELECT current_database()")
                .expect("psql over socket"),
            database
        );
        assert!(
            postgres
                .socket_dir()
                .join(format!(".s.PGSQL.{}", postgres.port()))
                .exists()
        );
        assert_eq!(
            postgres.psql("postgres", "SHOW fsync").expect("show"),
            "off",
            "temporary clusters trade durability for speed"
        );
        let error = postgres
            .psql("postgres", "SELECT * FROM no_such_table")
            .expect_err("bad SQL fails");
        assert!(error.to_string().contains("no_such_table"), "{error}");
    }

    #[test]
    fn stop_and_start_again_keep_port_and_data() {
        if servers_disabled() {
            return;
        }
        let mut postgres = Postgres::start().expect("postgres starts");
        let url = postgres.create_database().expect("database created");
        psql_over_tcp(
            &url,
            "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the outage')",
        );
        let port = postgres.port();

        postgres.stop();
        assert!(!postgres.is_running());
        assert!(port_closed(port), "stopped server still listens on {port}");
        assert!(matches!(
            postgres.psql("postgres", "SELECT 1"),
            Err(Error::Stopped { .. })
        ));

        postgres.start_again().expect("postgres starts again");
        assert_eq!(postgres.port(), port);
        assert_eq!(
            psql_over_tcp(&url, "SELECT v FROM kept"),
            "before the outage"
        );
    }

    #[test]
    fn two_instances_run_side_by_side() {
        if servers_disabled() {
            return;
        }
        let first = Postgres::start().expect("first starts");
        let second = Postgres::start().expect("second starts");
        assert_ne!(first.port(), second.port());
        assert_ne!(first.dir(), second.dir());
        psql_over_tcp(
            &first.url("postgres"),
            "CREATE TABLE only_in_first (id int)",
        );
        let tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_first'";
        assert_eq!(psql_over_tcp(&first.url("postgres"), tables), "1");
        assert_eq!(psql_over_tcp(&second.url("postgres"), tables), "0");
    }

    #[test]
    fn dropping_stops_the_server_and_removes_its_folder() {
        if servers_disabled() {
            return;
        }
        let postgres = Postgres::start().expect("postgres starts");
        let pid = postgres.pid().expect("running");
        let dir = postgres.dir().to_path_buf();
        let port = postgres.port();
        assert!(process_alive(pid));
        drop(postgres);
        assert!(!process_alive(pid), "postmaster {pid} outlived its handle");
        assert!(!dir.exists(), "{} was not removed", dir.display());
        assert!(port_closed(port));
    }

    #[test]
    fn shared_instance_is_one_server_with_isolated_databases() {
        if servers_disabled() {
            return;
        }
        let first = Postgres::shared().expect("shared starts");
        let second = Postgres::shared().expect("shared again");
        assert!(std::ptr::eq(first, second));
        let a = first.create_database().expect("database a");
        let b = first.create_database().expect("database b");
        assert_ne!(a, b);
        psql_over_tcp(&a, "CREATE TABLE private (id int)");
        assert_eq!(
            psql_over_tcp(
                &b,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'private'"
            ),
            "0"
        );
    }

    #[test]
    fn persistent_folder_and_fixed_port_are_reused() {
        if servers_disabled() {
            return;
        }
        let base = tempfile::tempdir_in("/tmp").expect("temp dir");
        let dir = base.path().join("postgres");
        let port = free_port();
        {
            let postgres =
                Postgres::start_with(&ServerOptions::persistent(&dir, port)).expect("starts");
            assert_eq!(postgres.port(), port);
            assert_eq!(
                postgres.psql("postgres", "SHOW fsync").expect("show"),
                "on",
                "persistent means durable"
            );
            psql_over_tcp(
                &postgres.url("postgres"),
                "CREATE TABLE remembered (v int); INSERT INTO remembered VALUES (7)",
            );
        }
        assert!(
            dir.join("data").join("PG_VERSION").is_file(),
            "a persistent cluster survives its handle"
        );
        let again = Postgres::builder()
            .dir(&dir)
            .port(port)
            .start()
            .expect("starts on the old data");
        assert_eq!(
            psql_over_tcp(&again.url("postgres"), "SELECT v FROM remembered"),
            "7"
        );

        // A fixed port that is taken is reported, not retried.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = taken.local_addr().expect("address").port();
        let other = base.path().join("other");
        let error = Postgres::builder()
            .dir(&other)
            .port(taken_port)
            .start()
            .expect_err("port is taken");
        assert!(
            matches!(error, Error::PortInUse { port, .. } if port == taken_port),
            "{error}"
        );
    }
}

mod startup_failures {
    use super::*;

    /// A server that dies during start-up is reported with the end of its log.
    #[test]
    fn an_exiting_server_is_reported_with_its_log_tail() {
        if servers_disabled() {
            return;
        }
        let base = tempfile::tempdir_in("/tmp").expect("temp dir");
        let dir = base.path().join("postgres");
        std::fs::create_dir_all(dir.join("data")).expect("mkdir");
        // A broken cluster: initdb is skipped (PG_VERSION present), and the
        // postmaster exits at once, saying why in its log.
        std::fs::write(dir.join("data").join("PG_VERSION"), "7\n").expect("write");
        let error = Postgres::builder()
            .dir(&dir)
            .start()
            .expect_err("start fails");
        let message = error.to_string();
        assert!(matches!(error, Error::Exited { .. }), "{message}");
        assert!(message.contains("postgres.log"), "{message}");
        assert!(
            message.contains("could not access the server configuration file"),
            "the log's last lines are quoted: {message}"
        );
    }
}

mod rabbitmq {
    use super::*;
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    /// Publishes `body` to a new durable queue on `url` (persistent delivery)
    /// and returns the queue name.
    async fn publish(url: &str, body: &[u8]) -> String {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("AMQP connect");
        let channel = connection.create_channel().await.expect("channel");
        let queue = unique_name("q");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue declared");
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        connection.close(200, "done".into()).await.expect("closed");
        queue
    }

    async fn try_get(url: &str, queue: &str) -> lapin::Result<Option<Vec<u8>>> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("AMQP connect");
        let channel = connection.create_channel().await.expect("channel");
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await;
        let _ = connection.close(200, "done".into()).await;
        Ok(message?.map(|m| m.delivery.data))
    }

    async fn get(url: &str, queue: &str) -> Option<Vec<u8>> {
        try_get(url, queue).await.expect("basic.get")
    }

    /// Two private nodes side by side: each answers AMQP clients in its own
    /// vhosts and `rabbitmqctl`; dropping them leaves no process and no folder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_private_nodes_answer_amqp_and_rabbitmqctl_then_vanish_on_drop() {
        if servers_disabled() {
            return;
        }
        let (first, second) = tokio::task::spawn_blocking(|| {
            let second = std::thread::spawn(RabbitMq::start);
            let first = RabbitMq::start();
            (first, second.join().expect("thread"))
        })
        .await
        .expect("joined");
        let (first, second) = (
            first.expect("first node starts"),
            second.expect("second node starts"),
        );
        assert_ne!(first.amqp_port(), second.amqp_port());
        assert_ne!(first.node_name(), second.node_name());
        for node in [&first, &second] {
            for port in [node.amqp_port(), node.dist_port(), node.epmd_port()] {
                assert!(!switchboard_testkit::RABBITMQ_CLI_PORTS.contains(&port));
            }
        }

        let status = first.rabbitmqctl(&["status"]).expect("rabbitmqctl status");
        assert!(
            status.contains(first.node_name()) || status.contains("RabbitMQ"),
            "{status}"
        );

        let started = Instant::now();
        let vhost_url = first.create_vhost().expect("vhost created");
        println!("create_vhost took {:?}", started.elapsed());
        let vhost = vhost_url.rsplit('/').next().expect("vhost").to_owned();
        assert!(
            first
                .rabbitmqctl(&["list_vhosts"])
                .expect("list")
                .lines()
                .any(|l| l.trim() == vhost)
        );
        assert!(
            !second
                .rabbitmqctl(&["list_vhosts"])
                .expect("list")
                .contains(&vhost)
        );

        let queue = publish(&vhost_url, b"hello from the testkit").await;
        assert_eq!(
            get(&vhost_url, &queue).await.as_deref(),
            Some(&b"hello from the testkit"[..])
        );
        // Another vhost of the same node, and the other node, do not know the queue.
        let error = try_get(&first.amqp_url(), &queue)
            .await
            .expect_err("queue is vhost-private");
        assert!(error.to_string().contains("NOT_FOUND"), "{error}");
        let default_queue = publish(&first.amqp_url(), b"default vhost").await;
        let error = try_get(&second.amqp_url(), &default_queue)
            .await
            .expect_err("nodes share nothing");
        assert!(error.to_string().contains("NOT_FOUND"), "{error}");
        assert_eq!(
            get(&first.amqp_url(), &default_queue).await.as_deref(),
            Some(&b"default vhost"[..])
        );

        let beam_pid: u32 = std::fs::read_to_string(first.dir().join("rabbit.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let pids = [
            first.pid().expect("wrapper"),
            first.epmd_pid().expect("epmd"),
            beam_pid,
        ];
        let dir = first.dir().to_path_buf();
        assert!(pids.iter().all(|pid| process_alive(*pid)));
        drop(first);
        for pid in pids {
            assert!(
                !process_alive(pid),
                "process {pid} outlived the node's handle"
            );
        }
        assert!(!dir.exists(), "{} was not removed", dir.display());
        // Its ports are not checked: with every process proven gone they are
        // free, and a test running in parallel may already have taken one.
        assert!(
            second.rabbitmqctl(&["status"]).is_ok(),
            "the other node is untouched"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_and_start_again_keep_ports_vhosts_and_durable_messages() {
        if servers_disabled() {
            return;
        }
        let mut node = tokio::task::spawn_blocking(RabbitMq::start)
            .await
            .expect("joined")
            .expect("node starts");
        let url = node.create_vhost().expect("vhost");
        let queue = publish(&url, b"survives a restart").await;
        let (amqp_port, node_name) = (node.amqp_port(), node.node_name().to_owned());

        let mut node = tokio::task::spawn_blocking(move || {
            node.stop();
            assert!(port_closed(amqp_port));
            assert!(matches!(
                node.rabbitmqctl(&["status"]),
                Err(Error::Stopped { .. })
            ));
            node.start_again().expect("node starts again");
            node
        })
        .await
        .expect("joined");
        assert_eq!(node.amqp_port(), amqp_port);
        assert_eq!(node.node_name(), node_name);
        assert_eq!(
            get(&url, &queue).await.as_deref(),
            Some(&b"survives a restart"[..])
        );
        tokio::task::spawn_blocking(move || node.stop())
            .await
            .expect("joined");
    }

    fn management_get(port: u16, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // guest:guest in base64.
        let request =
            format!("GET {path} HTTP/1.0\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "{response:.300}"
        );
        response
    }

    /// The dev stack's node: a persistent folder, fixed ports, the management
    /// plugin; its vhosts survive the handle, and it is stopped gracefully.
    #[test]
    fn persistent_node_with_management_keeps_its_data_across_handles() {
        if servers_disabled() {
            return;
        }
        let base = tempfile::tempdir_in("/tmp").expect("temp dir");
        let dir = base.path().join("rabbitmq");
        let (amqp, management) = (free_port(), free_port());
        let start = || {
            RabbitMq::builder()
                .dir(&dir)
                .amqp_port(amqp)
                .management_port(management)
                .start()
        };

        let node = start().expect("node with management starts");
        assert_eq!(node.node_name(), "switchboard@localhost");
        assert_eq!(
            (node.amqp_port(), node.management_port()),
            (amqp, Some(management))
        );
        assert_eq!(
            node.management_url(),
            Some(format!("http://127.0.0.1:{management}"))
        );
        assert!(management_get(management, "/api/overview").contains(node.node_name()));
        let vhost_url = node.create_vhost().expect("vhost");
        let vhost = vhost_url.rsplit('/').next().expect("vhost").to_owned();
        drop(node);
        assert!(port_closed(amqp) && port_closed(management));
        assert!(
            dir.join("mnesia").is_dir(),
            "a persistent node's data survives its handle"
        );

        let again = start().expect("node starts on its old data");
        assert!(
            again
                .rabbitmqctl(&["list_vhosts"])
                .expect("list")
                .lines()
                .any(|l| l.trim() == vhost)
        );
        assert!(management_get(management, "/api/vhosts").contains(&vhost));
    }
}

mod mongodb {
    use super::*;
    use ::mongodb::Client;
    use ::mongodb::bson::{Document, doc};

    async fn client(url: &str) -> Client {
        Client::with_uri_str(format!("{url}&serverSelectionTimeoutMS=5000"))
            .await
            .expect("client")
    }

    #[tokio::test]
    async fn answers_ping_insert_and_find_from_the_driver() {
        if servers_disabled() {
            return;
        }
        let server = MongoDb::start().expect("mongodb starts");
        assert!(["ferretdb", "mongod"].contains(&server.kind()));
        assert_eq!(
            server.url(),
            format!(
                "mongodb://127.0.0.1:{}/?directConnection=true",
                server.port()
            )
        );
        let client = client(&server.url()).await;
        let database = client.database(&unique_name("logs"));
        let pong = database
            .run_command(doc! { "ping": 1 })
            .await
            .expect("ping");
        assert_eq!(
            pong.get_f64("ok")
                .ok()
                .or(pong.get_i32("ok").ok().map(f64::from)),
            Some(1.0)
        );

        let collection = database.collection::<Document>("logs");
        collection
            .insert_one(doc! { "name": "event", "data": "stored" })
            .await
            .expect("insert");
        let found = collection
            .find_one(doc! { "name": "event" })
            .await
            .expect("find")
            .expect("one document");
        assert_eq!(found.get_str("data").expect("data"), "stored");
        assert_eq!(collection.count_documents(doc! {}).await.expect("count"), 1);
    }

    #[tokio::test]
    async fn stop_and_start_again_keep_port_and_data_and_drop_cleans_up() {
        if servers_disabled() {
            return;
        }
        let mut server = MongoDb::start().expect("mongodb starts");
        let name = unique_name("kept");
        {
            let client = client(&server.url()).await;
            let collection = client.database(&name).collection::<Document>("c");
            collection
                .insert_one(doc! { "v": 1 })
                .await
                .expect("insert");
            client.shutdown().await;
        }
        let port = server.port();
        server.stop();
        assert!(port_closed(port));
        server.start_again().expect("starts again");
        assert_eq!(server.port(), port);
        let client = client(&server.url()).await;
        let count = client
            .database(&name)
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .expect("count");
        assert_eq!(count, 1);
        client.shutdown().await;

        let (pid, dir) = (server.pid().expect("running"), server.dir().to_path_buf());
        drop(server);
        assert!(!process_alive(pid));
        assert!(!dir.exists());
    }

    /// Each FerretDB backend keeps documents across a restart, and the
    /// PostgreSQL one keeps them in PostgreSQL: its private server, or the
    /// database it is given.
    #[tokio::test]
    async fn every_ferretdb_backend_keeps_documents_where_it_says() {
        if servers_disabled()
            || MongoKind::detect().map(|(kind, _)| kind).ok() != Some(MongoKind::FerretDb)
        {
            return;
        }
        let shared = Postgres::start().expect("postgres starts");
        shared
            .psql("postgres", "CREATE DATABASE given")
            .expect("create database");
        let builders = [
            (
                "postgresql",
                MongoDb::builder().ferret_backend(FerretBackend::Postgresql),
            ),
            (
                "postgresql",
                MongoDb::builder()
                    .ferret_backend(FerretBackend::Postgresql)
                    .postgresql_url(shared.url("given")),
            ),
            (
                "sqlite",
                MongoDb::builder().ferret_backend(FerretBackend::Sqlite),
            ),
            (
                "sqlite-normal",
                MongoDb::builder().ferret_backend(FerretBackend::SqliteNormal),
            ),
        ];
        for (expected, builder) in builders {
            let mut server = builder.start().expect("ferretdb starts");
            assert_eq!(server.describe(), format!("ferretdb on {expected}"));
            let name = unique_name("kept");
            let writer = client(&server.url()).await;
            writer
                .database(&name)
                .collection::<Document>("c")
                .insert_one(doc! { "v": 1 })
                .await
                .expect("insert");
            writer.shutdown().await;
            server.stop();
            server.start_again().expect("starts again");
            let reader = client(&server.url()).await;
            let count = reader
                .database(&name)
                .collection::<Document>("c")
                .count_documents(doc! {})
                .await
                .expect("count");
            assert_eq!(count, 1, "{expected}");
            reader.shutdown().await;
            // FerretDB maps a MongoDB database to a PostgreSQL schema.
            let schemas = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ";
            let holder = match (server.ferret_backend(), server.private_postgres()) {
                (Some(FerretBackend::Postgresql), Some(private)) => {
                    Some(private.psql(FERRETDB_DATABASE, &format!("{schemas}'{name}'")))
                }
                (Some(FerretBackend::Postgresql), None) => {
                    Some(shared.psql("given", &format!("{schemas}'{name}'")))
                }
                _ => None,
            };
            if let Some(found) = holder {
                assert_eq!(found.expect("psql"), "1", "{expected}: no schema {name}");
            } else {
                assert!(
                    server
                        .dir()
                        .join("sqlite")
                        .join(format!("{name}.sqlite"))
                        .exists()
                );
            }
        }
    }

    #[test]
    fn an_unknown_backend_is_refused_by_name() {
        let err = "sqlite-fast".parse::<FerretBackend>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown FerretDB backend \"sqlite-fast\": expected postgresql, sqlite or sqlite-normal"
        );
        for backend in FerretBackend::ALL {
            assert_eq!(
                backend.as_str().parse::<FerretBackend>().ok(),
                Some(backend)
            );
        }
    }

    /// Asking for mongod explicitly either runs it or names the fix.
    #[test]
    fn a_missing_server_binary_names_scripts_setup() {
        if servers_disabled() {
            return;
        }
        match MongoDb::builder().kind(MongoKind::Mongod).start() {
            Ok(server) => assert_eq!(server.kind(), "mongod"),
            Err(error) => assert_eq!(
                error.to_string(),
                "mongod not found on PATH or in /usr/local/bin: run scripts/setup"
            ),
        }
    }
}

mod mailhog {
    use super::*;

    /// A plain SMTP dialogue, as any mail client would hold it.
    fn send_mail(port: u16, from: &str, to: &str, subject: &str, body: &str) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("SMTP connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut expect = |code: &str| loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("SMTP reply");
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
            // Multi-line replies continue with "250-".
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        };
        expect("220");
        let mut say = |line: String| writer.write_all(line.as_bytes()).expect("SMTP write");
        say("EHLO testkit\r\n".to_owned());
        expect("250");
        say(format!("MAIL FROM:<{from}>\r\n"));
        expect("250");
        say(format!("RCPT TO:<{to}>\r\n"));
        expect("250");
        say("DATA\r\n".to_owned());
        expect("354");
        say(format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n.\r\n"
        ));
        expect("250");
        say("QUIT\r\n".to_owned());
        expect("221");
    }

    #[test]
    fn receives_mail_over_smtp_and_shows_it_in_the_api() {
        if servers_disabled() {
            return;
        }
        let mailhog = MailHog::start().expect("mailhog starts");
        let to = format!("{}@example.com", unique_name("user"));
        send_mail(
            mailhog.smtp_port(),
            "sender@example.com",
            &to,
            "Testkit subject",
            "Hello, MailHog.",
        );

        let items = mailhog
            .wait_for_messages_to(&to, 1, Duration::from_secs(5))
            .expect("mail arrives");
        assert_eq!(items.len(), 1);
        let message = &items[0];
        assert_eq!(
            message["Content"]["Headers"]["Subject"][0],
            "Testkit subject"
        );
        assert_eq!(message["Raw"]["To"][0], to.as_str());
        assert!(
            message["Content"]["Body"]
                .as_str()
                .expect("body")
                .contains("Hello, MailHog.")
        );

        let all = mailhog.messages().expect("messages");
        assert_eq!(all["total"], 1);
        assert_eq!(
            mailhog.messages_to("nobody@example.com").expect("search")["items"]
                .as_array()
                .map(Vec::len),
            Some(0)
        );

        mailhog.delete_all().expect("delete");
        assert_eq!(mailhog.messages().expect("messages")["total"], 0);
        assert!(mailhog.api_url().starts_with("http://127.0.0.1:"));
    }

    #[test]
    fn two_instances_side_by_side_restart_and_drop() {
        if servers_disabled() {
            return;
        }
        let mut first = MailHog::start().expect("first starts");
        let second = MailHog::start().expect("second starts");
        assert_ne!(first.smtp_port(), second.smtp_port());
        send_mail(
            first.smtp_port(),
            "a@example.com",
            "b@example.com",
            "only first",
            "x",
        );
        first
            .wait_for_messages_to("b@example.com", 1, Duration::from_secs(5))
            .expect("arrives");
        assert_eq!(second.messages().expect("messages")["total"], 0);

        let (smtp, http) = (first.smtp_port(), first.http_port());
        first.stop();
        assert!(port_closed(smtp) && port_closed(http));
        assert!(matches!(first.messages(), Err(Error::Stopped { .. })));
        first.start_again().expect("starts again");
        assert_eq!((first.smtp_port(), first.http_port()), (smtp, http));
        assert_eq!(
            first.messages().expect("messages")["total"],
            0,
            "messages live in memory"
        );

        let error = first
            .wait_for_messages_to("never@example.com", 1, Duration::from_millis(200))
            .expect_err("nothing arrives");
        assert!(matches!(error, Error::Timeout { .. }), "{error}");

        let (pid, dir) = (first.pid().expect("running"), first.dir().to_path_buf());
        drop(first);
        assert!(!process_alive(pid));
        assert!(!dir.exists());
        assert!(port_closed(smtp));
    }
}

mod prometheus {
    use super::*;

    /// Prometheus is newer to the setup than the other servers: where it is
    /// not installed yet, its tests say so and skip.
    fn prometheus_missing() -> bool {
        if servers_disabled() {
            return true;
        }
        match find_binary("prometheus") {
            Ok(_) => false,
            Err(error) => {
                skip(&error.to_string());
                true
            }
        }
    }

    /// Scraping itself, Prometheus proves the whole path a service's
    /// metrics take: the scrape (`up == 1`), the stored series (a metric of
    /// its own, read back through PromQL) and the targets API. A target
    /// nobody listens on is reported down, with the reason.
    #[test]
    fn scrapes_itself_and_reports_a_dead_target_down() {
        if prometheus_missing() {
            return;
        }
        let dead = free_port();
        let mut prometheus = Prometheus::builder()
            .scrape_itself("testkit-self")
            .job("testkit-dead", [format!("127.0.0.1:{dead}")])
            .scrape_interval(Duration::from_secs(1))
            .start()
            .expect("prometheus starts");
        let port = prometheus.port();
        assert_eq!(prometheus.url(), format!("http://127.0.0.1:{port}"));

        prometheus
            .wait_until_up("testkit-self", Duration::from_secs(30))
            .expect("prometheus scraped itself");
        assert_eq!(
            prometheus
                .query_value(r#"up{job="testkit-self"}"#)
                .expect("query"),
            Some(1.0)
        );
        // A series of its own /metrics, stored under the job's labels.
        let samples = prometheus
            .query(r#"prometheus_build_info{job="testkit-self"}"#)
            .expect("query");
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].labels["instance"], format!("127.0.0.1:{port}"));
        let major: u32 = samples[0].labels["version"]
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .expect("a version label");
        assert_eq!(prometheus.major_version(), Some(major));

        let down = prometheus
            .wait_for_value(
                r#"up{job="testkit-dead"}"#,
                |up| up == 0.0,
                Duration::from_secs(30),
            )
            .expect("the dead target was tried");
        assert_eq!(down, 0.0);
        let targets = prometheus.targets().expect("targets");
        let own = targets
            .iter()
            .find(|t| t.job == "testkit-self")
            .expect("own target");
        assert_eq!(own.scrape_url, format!("http://127.0.0.1:{port}/metrics"));
        assert_eq!(own.health, "up");
        let dead_target = targets
            .iter()
            .find(|t| t.job == "testkit-dead")
            .expect("dead target");
        assert_eq!(dead_target.health, "down");
        assert!(
            dead_target.last_error.contains("refused"),
            "{dead_target:?}"
        );

        let error = prometheus.query("up{").expect_err("bad PromQL is refused");
        assert!(matches!(error, Error::Protocol { .. }), "{error}");
        let error = prometheus
            .query_value("up")
            .expect_err("two samples are not one value");
        assert!(error.to_string().contains("2 samples"), "{error}");
        let error = prometheus
            .wait_until_up("testkit-dead", Duration::from_millis(300))
            .expect_err("the dead target never comes up");
        assert!(
            matches!(&error, Error::Timeout { what, .. } if what.contains("testkit-dead")),
            "{error}"
        );

        // Stopped and started again: same port, same database. Three
        // samples before the stop are still there right after the start,
        // before a second scrape could have replaced them.
        let scraped = r#"count_over_time(up{job="testkit-self"}[1h])"#;
        let before = prometheus
            .wait_for_value(scraped, |n| n >= 3.0, Duration::from_secs(30))
            .expect("three scrapes");
        prometheus.stop();
        assert!(port_closed(port));
        assert!(matches!(prometheus.query("up"), Err(Error::Stopped { .. })));
        prometheus.start_again().expect("starts again");
        assert_eq!(prometheus.port(), port);
        let after = prometheus.query_value(scraped).expect("query");
        assert!(
            after.is_some_and(|n| n >= before),
            "{before} samples before the restart, {after:?} after"
        );

        let (pid, dir) = (
            prometheus.pid().expect("running"),
            prometheus.dir().to_path_buf(),
        );
        assert!(dir.join("prometheus.yml").is_file());
        drop(prometheus);
        assert!(!process_alive(pid), "prometheus {pid} outlived its handle");
        assert!(!dir.exists(), "{} was not removed", dir.display());
        assert!(port_closed(port));
    }
}

/// What a test process leaves behind when it is killed: nothing. The helper
/// below runs in a child copy of this test binary, starts servers (one shared,
/// one owned), reports their pids and folders, and waits to be SIGKILLed.
mod orphans {
    use super::*;

    const HELPER_ENV: &str = "SWITCHBOARD_TESTKIT_ORPHAN_HELPER";

    #[test]
    #[ignore = "helper: runs inside orphaned_servers_are_reaped_when_the_test_process_is_killed"]
    fn helper_starts_servers_and_waits_to_be_killed() {
        if std::env::var_os(HELPER_ENV).is_none() {
            return;
        }
        let shared = Postgres::shared().expect("shared postgres");
        let owned = MailHog::start().expect("mailhog");
        println!(
            "SERVERS {} {} {} {}",
            shared.pid().expect("pid"),
            shared.dir().display(),
            owned.pid().expect("pid"),
            owned.dir().display()
        );
        std::io::stdout().flush().expect("flush");
        std::thread::sleep(Duration::from_secs(120));
    }

    #[test]
    fn orphaned_servers_are_reaped_when_the_test_process_is_killed() {
        if servers_disabled() {
            return;
        }
        let mut helper = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "orphans::helper_starts_servers_and_waits_to_be_killed",
                "--nocapture",
            ])
            .env(HELPER_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("helper starts");
        let stdout = helper.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("SERVERS "))
            .expect("helper reports its servers");
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (pg_pid, pg_dir): (u32, PathBuf) =
            (fields[1].parse().expect("pid"), PathBuf::from(fields[2]));
        let (mh_pid, mh_dir): (u32, PathBuf) =
            (fields[3].parse().expect("pid"), PathBuf::from(fields[4]));
        assert!(process_alive(pg_pid) && process_alive(mh_pid));

        helper.kill().expect("SIGKILL the helper");
        helper.wait().expect("reaped");

        let gone = |pid: u32, dir: &Path| !process_alive(pid) && !dir.exists();
        assert!(
            eventually(Duration::from_secs(10), || gone(pg_pid, &pg_dir)
                && gone(mh_pid, &mh_dir)),
            "servers of a killed test process survived: postgres {pg_pid} alive={} dir={}, mailhog {mh_pid} alive={} dir={}",
            process_alive(pg_pid),
            pg_dir.exists(),
            process_alive(mh_pid),
            mh_dir.exists()
        );
    }

    /// With SWITCHBOARD_SKIP_SERVER_TESTS=1 a server test returns at once and
    /// says so on stderr.
    #[test]
    fn skip_switch_turns_server_tests_into_visible_no_ops() {
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "postgres::two_instances_run_side_by_side",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(switchboard_testkit::SKIP_SERVER_TESTS_ENV, "1")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains("skipping: postgres::two_instances_run_side_by_side: SWITCHBOARD_SKIP_SERVER_TESTS=1"),
            "{stderr}"
        );
    }
}
