//! Measures how long each dependency server takes to start, to stop, to start
//! again and to be dropped, plus the per-test isolation helpers
//! (`create_database`, `create_vhost`). Run with
//! `cargo run -p switchboard-testkit --example timings`.

use std::time::{Duration, Instant};

use switchboard_testkit::{MailHog, MongoDb, Postgres, RabbitMq, Result};

fn timed<T>(label: &str, action: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = action();
    let elapsed = started.elapsed();
    println!("{label:<44} {:>8.3} s", elapsed.as_secs_f64());
    (value, elapsed)
}

fn main() -> Result<()> {
    let (postgres, _) = timed("postgres: start (initdb + ready)", Postgres::start);
    let mut postgres = postgres?;
    timed("postgres: create_database", || postgres.create_database()).0?;
    timed("postgres: stop", || postgres.stop());
    timed("postgres: start_again", || postgres.start_again()).0?;
    timed("postgres: drop", || drop(postgres));

    let (mongo, _) = timed("mongodb: start", MongoDb::start);
    let mut mongo = mongo?;
    println!("  (kind: {})", mongo.kind());
    timed("mongodb: stop", || mongo.stop());
    timed("mongodb: start_again", || mongo.start_again()).0?;
    timed("mongodb: drop", || drop(mongo));

    let (mailhog, _) = timed("mailhog: start", MailHog::start);
    let mut mailhog = mailhog?;
    timed("mailhog: stop", || mailhog.stop());
    timed("mailhog: start_again", || mailhog.start_again()).0?;
    timed("mailhog: drop", || drop(mailhog));

    let (rabbit, _) = timed("rabbitmq: start (epmd + node)", RabbitMq::start);
    let mut rabbit = rabbit?;
    for round in 1..=3 {
        timed(&format!("rabbitmq: create_vhost #{round}"), || {
            rabbit.create_vhost()
        })
        .0?;
    }
    timed("rabbitmq: stop (graceful)", || rabbit.stop());
    timed("rabbitmq: start_again", || rabbit.start_again()).0?;
    timed("rabbitmq: drop (temporary: SIGKILL)", || drop(rabbit));

    let (managed, _) = timed("rabbitmq+management: start", || {
        RabbitMq::builder().with_management().start()
    });
    let mut managed = managed?;
    timed("rabbitmq+management: stop (graceful)", || managed.stop());
    timed("rabbitmq+management: drop", || drop(managed));
    Ok(())
}
