//! Login throttling against real PostgreSQL: the limit per account (known or
//! not) and per client address, 429 with `Retry-After`, the reset by a
//! success, `X-Forwarded-For` believed only from trusted proxies, one count
//! shared by two instances and kept across a restart, no bcrypt for a refused
//! attempt, and a burst of concurrent guesses held near the limit.

mod common;

use std::time::Duration;

use common::{TestService, seed_user, settings};
use serde_json::{Value, json};
use switchboard_auth::api::{self, AppState};
use switchboard_auth::events;
use switchboard_auth::hashing::PasswordHasher;
use switchboard_auth::metrics::AuthMetrics;
use switchboard_auth::settings::Settings;
use switchboard_auth::store::UserStore;
use switchboard_auth::throttle::LoginThrottle;
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::AmqpEndpoint;
use switchboard_runtime::metrics::Metrics;
use switchboard_testkit::metrics;

/// The defaults under test.
const PER_ACCOUNT: usize = 5;
const PER_ADDRESS: usize = 20;
const WINDOW_SECS: u64 = 900;

/// What one login attempt got.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

async fn attempt(base: &str, email: &str, password: &str, forwarded_for: Option<&str>) -> Reply {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/authenticate"))
        .json(&json!({"email": email, "password": password}));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After is not whole seconds: {value:?}"))
    });
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("reply is not JSON ({err}): {text}"));
    Reply {
        status,
        retry_after,
        body,
    }
}

/// `count` wrong passwords for `email`, each answered 401.
async fn fail(base: &str, email: &str, count: usize, forwarded_for: Option<&str>) {
    for i in 1..=count {
        let reply = attempt(base, email, "wrong password", forwarded_for).await;
        assert_eq!(reply.status, 401, "{email} failure #{i}: {reply:?}");
        assert_eq!(reply.retry_after, None, "{reply:?}");
    }
}

/// A 429 from the limit of `scope` ("for this account" / "from this
/// address"), with a Retry-After the window just begun explains; returns it.
fn assert_throttled(reply: &Reply, scope: &str) -> u64 {
    assert_eq!(reply.status, 429, "{reply:?}");
    let retry_after = reply.retry_after.expect("Retry-After");
    // The failures are seconds old: nearly the whole window is left.
    assert!(
        (WINDOW_SECS - 120..=WINDOW_SECS).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(
        reply.body,
        json!({
            "error": true,
            "message": format!("too many failed logins {scope}; retry in {retry_after} s"),
        })
    );
    retry_after
}

#[tokio::test]
async fn the_sixth_wrong_password_gets_429_for_known_and_unknown_accounts_alike() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let service = TestService::start(settings(None)).await;
    seed_user(&service.store(), "ada@example.com", "verysecret", true).await;

    // Spelled differently each time: the count is per normalised address.
    fail(&service.base, "ada@example.com", PER_ACCOUNT - 1, None).await;
    fail(&service.base, " ADA@example.com", 1, None).await;
    let known = attempt(&service.base, "Ada@Example.com", "wrong password", None).await;
    assert_throttled(&known, "for this account");
    // Not even the right password is checked now.
    let right = attempt(&service.base, "ada@example.com", "verysecret", None).await;
    assert_throttled(&right, "for this account");

    fail(&service.base, "nobody@example.com", PER_ACCOUNT, None).await;
    let unknown = attempt(&service.base, "nobody@example.com", "wrong password", None).await;
    assert_throttled(&unknown, "for this account");

    // Other accounts are not affected (10 failures from this address so far).
    let reply = attempt(&service.base, "grace@example.com", "wrong password", None).await;
    assert_eq!(reply.status, 401, "{reply:?}");

    // The metrics door counted each kind of answer, and every refusal by scope.
    let exposition = service.scrape().await;
    let count = |series: &str| metrics::sample(&exposition, series);
    let wrong_passwords = Some((2 * PER_ACCOUNT + 1) as f64);
    assert_eq!(
        count(r#"switchboard_auth_logins_total{outcome="throttled"}"#),
        Some(3.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_auth_throttle_refusals_total{scope="account"}"#),
        Some(3.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_auth_logins_total{outcome="invalid"}"#),
        wrong_passwords,
        "{exposition}"
    );
    // Each wrong password ran bcrypt once; the refused ones did not.
    assert_eq!(
        count("switchboard_auth_bcrypt_duration_seconds_count"),
        wrong_passwords,
        "{exposition}"
    );
    assert_eq!(
        count("switchboard_auth_bcrypt_waiting"),
        Some(0.0),
        "{exposition}"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_correct_password_after_four_failures_resets_the_count() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let service = TestService::start(settings(None)).await;
    seed_user(&service.store(), "ada@example.com", "verysecret", true).await;

    fail(&service.base, "ada@example.com", PER_ACCOUNT - 1, None).await;
    let login = attempt(&service.base, "ada@example.com", "verysecret", None).await;
    assert_eq!(login.status, 202, "{login:?}");
    // A full allowance again, not the one failure that was left.
    fail(&service.base, "ada@example.com", PER_ACCOUNT, None).await;
    let reply = attempt(&service.base, "ada@example.com", "wrong password", None).await;
    assert_throttled(&reply, "for this account");
    service.stop().await;
}

#[tokio::test]
async fn the_per_address_limit_spans_accounts() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let service = TestService::start(settings(None)).await;
    seed_user(&service.store(), "ada@example.com", "verysecret", true).await;
    // The test connects from 127.0.0.1, a trusted proxy by default, so the
    // header names the client, as the broker's does.
    let sprayer = Some("198.51.100.7");
    for i in 0..PER_ADDRESS {
        fail(&service.base, &format!("user{i}@example.com"), 1, sprayer).await;
    }
    let fresh_account = attempt(&service.base, "user99@example.com", "guess", sprayer).await;
    assert_throttled(&fresh_account, "from this address");
    let right = attempt(&service.base, "ada@example.com", "verysecret", sprayer).await;
    assert_throttled(&right, "from this address");

    // Another client, and the proxy's own address, still get their answer.
    let other = attempt(
        &service.base,
        "ada@example.com",
        "verysecret",
        Some("198.51.100.8"),
    )
    .await;
    assert_eq!(other.status, 202, "{other:?}");
    let local = attempt(&service.base, "user99@example.com", "guess", None).await;
    assert_eq!(local.status, 401, "{local:?}");
    // IPv6 clients count by their /64: a new address in it is no way out.
    for i in 0..PER_ADDRESS {
        let address = format!("2001:db8:7:7::{:x}", i + 1);
        fail(
            &service.base,
            &format!("v6-{i}@example.com"),
            1,
            Some(&address),
        )
        .await;
    }
    let neighbour = attempt(
        &service.base,
        "v6-new@example.com",
        "guess",
        Some("2001:db8:7:7:ffff::1"),
    )
    .await;
    assert_throttled(&neighbour, "from this address");
    service.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let mut settings = settings(None);
    // The test's own address (127.0.0.1) is not a proxy here.
    settings.throttle.trusted_proxies = "192.0.2.1".into();
    let service = TestService::start(settings).await;
    // A new made-up client address per guess buys nothing: the peer counts.
    for i in 0..PER_ADDRESS {
        let spoofed = format!("203.0.113.{}", i + 1);
        fail(
            &service.base,
            &format!("user{i}@example.com"),
            1,
            Some(&spoofed),
        )
        .await;
    }
    let reply = attempt(
        &service.base,
        "user99@example.com",
        "guess",
        Some("203.0.113.200"),
    )
    .await;
    assert_throttled(&reply, "from this address");
    service.stop().await;
}

#[tokio::test]
async fn two_instances_share_one_count_and_a_restart_keeps_it() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let settings = settings(None);
    // Two processes' worth: each run() has its own pool on the same database.
    let first = TestService::start(settings.clone()).await;
    let second = TestService::start(settings.clone()).await;
    fail(&first.base, "ada@example.com", 3, None).await;
    fail(&second.base, "ada@example.com", PER_ACCOUNT - 3, None).await;
    for base in [&first.base, &second.base] {
        let reply = attempt(base, "ada@example.com", "wrong password", None).await;
        assert_throttled(&reply, "for this account");
    }
    first.stop().await;
    second.stop().await;

    let restarted = TestService::start(settings).await;
    let reply = attempt(&restarted.base, "ada@example.com", "wrong password", None).await;
    assert_throttled(&reply, "for this account");
    restarted.stop().await;
}

/// The service's router served as `run` serves it, with a hasher the test
/// holds, so that its bcrypt runs can be counted.
struct Direct {
    base: String,
    hasher: PasswordHasher,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    publisher_stop: Shutdown,
    publisher: tokio::task::JoinHandle<()>,
}

impl Direct {
    async fn start(settings: &Settings, hasher: PasswordHasher) -> Self {
        let store = UserStore::connect_lazy(&settings.database).expect("store");
        store.migrate().await.expect("migrate");
        let throttle =
            LoginThrottle::new(store.pool().clone(), &settings.throttle).expect("throttle");
        let rabbitmq =
            AmqpEndpoint::from_settings("events.amqp_url", &settings.events.amqp_url, None)
                .expect("amqp url");
        let publisher_stop = Shutdown::new();
        let registry = Metrics::new();
        let (events, publisher) = events::spawn_publisher(
            &settings.events,
            rabbitmq,
            publisher_stop.clone(),
            &registry,
        );
        let app = api::app(
            AppState {
                store,
                hasher: hasher.clone(),
                events,
                throttle,
                metrics: AuthMetrics::register(&registry),
            },
            settings.security.max_body_bytes,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = Shutdown::new();
        let server = tokio::spawn(switchboard_runtime::service::serve_http(
            listener,
            app,
            shutdown.clone(),
        ));
        Self {
            base,
            hasher,
            shutdown,
            server,
            publisher_stop,
            publisher,
        }
    }

    fn bcrypt_runs(&self) -> u64 {
        self.hasher.activity().borrow().started
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.server)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server");
        self.publisher_stop.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.publisher)
            .await
            .expect("publisher stops in time")
            .expect("publisher task");
    }
}

#[tokio::test]
async fn a_refused_attempt_runs_no_bcrypt_for_any_kind_of_account() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let settings = settings(None);
    let hasher = PasswordHasher::new(settings.security.bcrypt_cost)
        .await
        .expect("hasher");
    let service = Direct::start(&settings, hasher).await;
    seed_user(
        &UserStore::connect_lazy(&settings.database).expect("store"),
        "ada@example.com",
        "verysecret",
        true,
    )
    .await;
    let before = service.bcrypt_runs();
    for email in ["ada@example.com", "nobody@example.com"] {
        fail(&service.base, email, PER_ACCOUNT, None).await;
    }
    assert_eq!(service.bcrypt_runs(), before + 2 * PER_ACCOUNT as u64);
    for (email, password) in [
        ("ada@example.com", "wrong password"),
        ("ada@example.com", "verysecret"),
        ("nobody@example.com", "wrong password"),
    ] {
        let reply = attempt(&service.base, email, password, None).await;
        assert_throttled(&reply, "for this account");
    }
    assert_eq!(
        service.bcrypt_runs(),
        before + 2 * PER_ACCOUNT as u64,
        "a throttled attempt ran bcrypt"
    );
    service.stop().await;
}

/// Guesses sent all at once pass the check before any of them has failed; the
/// check repeated when bcrypt can start keeps them near the limit instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_guesses_stays_near_the_limit() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let mut settings = settings(None);
    // Slow enough that the burst is all in before the first guess fails.
    settings.security.bcrypt_cost = 10;
    let hasher = PasswordHasher::with_parallelism(settings.security.bcrypt_cost, 1)
        .await
        .expect("hasher");
    let service = Direct::start(&settings, hasher).await;
    const BURST: usize = 30;
    let guesses = (0..BURST).map(|i| {
        let base = service.base.clone();
        async move { attempt(&base, "nobody@example.com", &format!("guess {i}"), None).await }
    });
    let replies = futures::future::join_all(guesses).await;
    let checked = replies.iter().filter(|reply| reply.status == 401).count();
    let refused = replies.iter().filter(|reply| reply.status == 429).count();
    assert_eq!(checked + refused, BURST, "{replies:?}");
    eprintln!("{checked} of {BURST} concurrent guesses checked, {refused} refused");
    // One run in progress (parallelism 1), and one whose failure is being
    // written as the next run is checked, may get past the limit.
    let slack = 2 * service.hasher.parallelism();
    assert!(
        (PER_ACCOUNT..=PER_ACCOUNT + slack).contains(&checked),
        "{checked} of {BURST} concurrent guesses had their password checked"
    );
    assert_eq!(service.bcrypt_runs(), checked as u64);
    service.stop().await;
}
