//! bcrypt hashing and verification off the async workers, at a bounded
//! parallelism, with a dummy hash so that a login for an unknown e-mail costs
//! exactly as much as one with a wrong password (no user enumeration by timing).

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::Password;

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
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Prepares a hasher for `cost`, computing the dummy hash (one bcrypt run).
    pub async fn new(cost: u32) -> Result<Self, HashError> {
        let parallelism = std::thread::available_parallelism().map_or(2, usize::from);
        let permits = Arc::new(Semaphore::new(parallelism));
        let random = uuid::Uuid::new_v4().to_string();
        let dummy_hash: String =
            tokio::task::spawn_blocking(move || bcrypt::hash(random, cost)).await??;
        Ok(Self {
            cost,
            dummy_hash: dummy_hash.into(),
            permits,
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// A new hash of `password` at the configured cost.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError::Closed)?;
        let password = password.clone();
        let cost = self.cost;
        Ok(tokio::task::spawn_blocking(move || bcrypt::hash(password.expose(), cost)).await??)
    }

    /// Checks `password` against `stored`, or against the dummy hash when there
    /// is no stored hash (unknown user), which never matches.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError::Closed)?;
        let known_user = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let password = password.clone();
        let matched =
            tokio::task::spawn_blocking(move || bcrypt::verify(password.expose(), &hash)).await??;
        Ok(if matched && known_user {
            Verdict::Match
        } else {
            Verdict::Mismatch
        })
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
}
