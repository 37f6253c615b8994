//! bcrypt hashing and verification off the async workers, at a bounded
//! parallelism, with a dummy hash so that a login for an unknown e-mail costs
//! exactly as much as one with a wrong password (no user enumeration by timing).
//!
//! A run's permit travels into its blocking task: a request that is cancelled
//! (client gone, drain deadline) while bcrypt runs does not stop that run, so
//! its permit must stay taken until the run ends, or cancelled requests would
//! let more bcrypt runs than cores pile up on the blocking pool.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use switchboard_runtime::metrics::Held;
use switchboard_runtime::telemetry::{self, SpanKind};

use crate::domain::Password;
use crate::metrics::AuthMetrics;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the bcrypt worker stopped: {0}")]
    Worker(#[from] tokio::task::JoinError),
    #[error("the bcrypt workers are shut down")]
    Closed,
}

/// What a stored hash said about a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
}

/// What the hasher's bcrypt runs are doing, counted where bcrypt actually
/// runs (in the blocking task), so that it shows what cancellation cannot stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// bcrypt runs in progress now.
    pub running: usize,
    /// The most that were ever in progress at once.
    pub peak: usize,
    /// bcrypt runs started so far (the dummy hash made at start not included).
    pub started: u64,
}

/// The right to start one bcrypt run; see [`PasswordHasher::permit`].
#[derive(Debug)]
pub struct HashPermit(OwnedSemaphorePermit);

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// A hash of a random password at the configured cost: what an unknown
    /// user's login is checked against.
    dummy_hash: Arc<str>,
    /// bcrypt is pure CPU: more concurrent runs than cores only add latency
    /// to every one of them and threads to the blocking pool.
    permits: Arc<Semaphore>,
    parallelism: usize,
    activity: Arc<watch::Sender<Activity>>,
    metrics: Option<AuthMetrics>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.cost)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

/// Counts one bcrypt run in [`Activity`] for as long as it lives (a panic in
/// bcrypt included).
struct Running<'a>(&'a watch::Sender<Activity>);

impl<'a> Running<'a> {
    fn enter(activity: &'a watch::Sender<Activity>) -> Self {
        activity.send_modify(|a| {
            a.running += 1;
            a.peak = a.peak.max(a.running);
            a.started += 1;
        });
        Self(activity)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.running -= 1);
    }
}

impl PasswordHasher {
    /// Prepares a hasher for `cost` with one bcrypt run per CPU core,
    /// computing the dummy hash (one bcrypt run).
    pub async fn new(cost: u32) -> Result<Self, HashError> {
        let parallelism = std::thread::available_parallelism().map_or(2, usize::from);
        Self::with_parallelism(cost, parallelism).await
    }

    /// As [`Self::new`], with at most `parallelism` (at least 1) bcrypt runs at once.
    pub async fn with_parallelism(cost: u32, parallelism: usize) -> Result<Self, HashError> {
        let parallelism = parallelism.max(1);
        let random = uuid::Uuid::new_v4().to_string();
        let dummy_hash: String =
            tokio::task::spawn_blocking(move || bcrypt::hash(random, cost)).await??;
        Ok(Self {
            cost,
            dummy_hash: dummy_hash.into(),
            permits: Arc::new(Semaphore::new(parallelism)),
            parallelism,
            activity: Arc::new(watch::Sender::new(Activity::default())),
            metrics: None,
        })
    }

    /// Counts checks waiting for a worker and times each run in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: &AuthMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// How many bcrypt runs may be in progress at once.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// Follows [`Activity`] (tests and diagnostics).
    pub fn activity(&self) -> watch::Receiver<Activity> {
        self.activity.subscribe()
    }

    /// Waits for the right to start a bcrypt run. Taking it before the run
    /// lets a caller do a last check (the login throttle) at the moment the
    /// run could start, rather than before waiting in line for it.
    pub async fn permit(&self) -> Result<HashPermit, HashError> {
        let _waiting = self
            .metrics
            .as_ref()
            .map(|metrics| Held::new(&metrics.bcrypt_waiting));
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map(HashPermit)
            .map_err(|_| HashError::Closed)
    }

    /// A new hash of `password` at the configured cost.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let permit = self.permit().await?;
        let password = password.clone();
        let cost = self.cost;
        self.run(permit, move || bcrypt::hash(password.expose(), cost))
            .await?
            .map_err(HashError::from)
    }

    /// Checks `password` against `stored`, or against the dummy hash when there
    /// is no stored hash (unknown user), which never matches.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict, HashError> {
        let permit = self.permit().await?;
        self.verify_with(permit, password, stored).await
    }

    /// [`Self::verify`] with a permit already taken.
    pub async fn verify_with(
        &self,
        permit: HashPermit,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict, HashError> {
        let known_user = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let password = password.clone();
        let matched = self
            .run(permit, move || bcrypt::verify(password.expose(), &hash))
            .await??;
        Ok(if matched && known_user {
            Verdict::Match
        } else {
            Verdict::Mismatch
        })
    }

    /// Runs `work` on the blocking pool, holding `permit` until it returns.
    /// The permit is moved into the task: dropping the returned future (a
    /// cancelled request) leaves both the run and its permit to the task.
    async fn run<T: Send + 'static>(
        &self,
        permit: HashPermit,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let activity = Arc::clone(&self.activity);
        let duration = self
            .metrics
            .as_ref()
            .map(|metrics| metrics.bcrypt_duration.clone());
        let task = tokio::task::spawn_blocking(move || {
            // Declared first, dropped last: the run is uncounted before its
            // permit lets the next one start, so `peak` never overstates.
            let HashPermit(_permit) = permit;
            let _running = Running::enter(&activity);
            let started = std::time::Instant::now();
            let done = work();
            if let Some(duration) = duration {
                duration.observe(started.elapsed().as_secs_f64());
            }
            done
        });
        let span = || telemetry::step_span("bcrypt", SpanKind::Internal);
        Ok(telemetry::traced(span, task).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = PasswordHasher::new(4).await.expect("hasher");
        let right = Password::parse("verysecret".into()).expect("valid");
        let wrong = Password::parse("verysecreT".into()).expect("valid");
        let hash = hasher.hash(&right).await.expect("hash");
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert_eq!(
            hasher.verify(&right, Some(&hash)).await.expect("verify"),
            Verdict::Match
        );
        assert_eq!(
            hasher.verify(&wrong, Some(&hash)).await.expect("verify"),
            Verdict::Mismatch
        );
        assert_eq!(
            hasher.verify(&right, None).await.expect("verify"),
            Verdict::Mismatch
        );
    }

    #[tokio::test]
    async fn a_72_byte_password_differs_from_its_71_byte_prefix() {
        let hasher = PasswordHasher::new(4).await.expect("hasher");
        let full = Password::parse("p".repeat(71) + "q").expect("72 bytes");
        let prefix = Password::parse("p".repeat(71)).expect("71 bytes");
        let hash = hasher.hash(&full).await.expect("hash");
        assert_eq!(
            hasher.verify(&prefix, Some(&hash)).await.expect("verify"),
            Verdict::Mismatch
        );
        assert_eq!(
            hasher.verify(&full, Some(&hash)).await.expect("verify"),
            Verdict::Match
        );
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_error_not_a_match() {
        let hasher = PasswordHasher::new(4).await.expect("hasher");
        let password = Password::parse("verysecret".into()).expect("valid");
        assert!(hasher.verify(&password, Some("not a hash")).await.is_err());
    }

    /// Cancelled requests must not free their permit while their bcrypt run
    /// goes on: with a bound of 1, each next run may start only after the
    /// previous one ended, however early its request was dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_run_keeps_its_permit_until_bcrypt_ends() {
        // Slow enough (tens of ms per run) that a run freed too early would
        // overlap the next one by a wide margin.
        let hasher = PasswordHasher::with_parallelism(11, 1)
            .await
            .expect("hasher");
        let password = Password::parse("verysecret".into()).expect("valid");
        let stored = hasher.hash(&password).await.expect("hash");
        let mut activity = hasher.activity();
        let base = activity.borrow().started;
        for round in 1..=4u64 {
            // Alternate the two kinds of run; both go through the same path.
            let run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                if round % 2 == 0 {
                    let hasher = hasher.clone();
                    let password = password.clone();
                    Box::pin(async move {
                        let _ = hasher.hash(&password).await;
                    })
                } else {
                    let hasher = hasher.clone();
                    let password = password.clone();
                    let stored = stored.clone();
                    Box::pin(async move {
                        let _ = hasher.verify(&password, Some(&stored)).await;
                    })
                };
            let mut run = run;
            tokio::select! {
                biased;
                started = activity.wait_for(|a| a.started == base + round) => {
                    started.expect("activity");
                }
                () = &mut run => panic!("round {round} finished before it could be cancelled"),
            }
            // The request goes away while its bcrypt run is in progress.
            drop(run);
        }
        // One that is not cancelled still gets its answer, after the others.
        assert_eq!(
            hasher
                .verify(&password, Some(&stored))
                .await
                .expect("verify"),
            Verdict::Match
        );
        let done = *activity
            .wait_for(|a| a.running == 0)
            .await
            .expect("activity");
        assert_eq!(done.started, base + 5, "{done:?}");
        assert_eq!(done.peak, 1, "more bcrypt runs than permits: {done:?}");
    }
}
