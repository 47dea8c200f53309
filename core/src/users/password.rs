//! Password hashing with argon2id, within a memory bound.
//!
//! Every hash or verification holds `memory_kib` of working memory for its whole run (19 MiB
//! with the defaults), so an unbounded burst of logins or registrations allocates one such
//! buffer per request. [`Passwords`] lets at most `max_concurrent` run at once (by default the
//! number of cores, which is all the CPU they can use anyway); the others wait in a fair (FIFO)
//! queue, and one that has waited `queue_timeout_secs` is answered 429 `M_LIMIT_EXCEEDED` with
//! a `retry_after_ms`, so a burst costs latency, never memory beyond the bound.

use std::{sync::Arc, time::Duration};

use argon2::{
    Algorithm, Argon2, Version,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::{Error, Result, config::PasswordConfig};

/// Longest password accepted: hashing cost grows with length, and no human needs more.
pub const MAX_PASSWORD_BYTES: usize = 512;

/// Hashes and verifies passwords, at most a fixed number at a time. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    params: argon2::Params,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new(config: &PasswordConfig) -> Result<Self> {
        let params = config.params().map_err(Error::internal)?;
        let slots = match config.max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(slots)),
            queue_timeout: Duration::from_secs(config.queue_timeout_secs),
        })
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String> {
        check_length(&password)?;
        let params = self.params.clone();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("argon2: {e}")))
        })
        .await
    }

    /// Whether `password` matches the stored PHC string, with the parameters stored in it. A
    /// malformed stored hash never matches.
    pub async fn verify(&self, hash: String, password: String) -> Result<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                tracing::error!("a stored password hash is not a valid PHC string");
                return Ok(false);
            };
            // The verifier takes algorithm, version and costs from the hash, not from itself.
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
    }

    /// Runs `work` on a blocking thread once a slot is free, in arrival order.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let permit = match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => return Err(Error::internal(closed)),
            Err(_elapsed) => {
                return Err(Error::limit_exceeded(
                    "Too many logins and registrations at once; try again shortly",
                    self.queue_timeout.max(Duration::from_secs(1)),
                ));
            }
        };
        tokio::task::spawn_blocking(move || {
            // Held until the hash is done, even if the request that asked was dropped meanwhile.
            let _permit = permit;
            work()
        })
        .await
        .map_err(Error::internal)?
    }

    /// Slots free right now (for tests and diagnostics).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
impl Default for Passwords {
    fn default() -> Self {
        Self::new(&PasswordConfig::default()).expect("the default argon2 parameters are valid")
    }
}

fn check_length(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::weak_password("The password must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_param(format!("The password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn cheap(max_concurrent: usize, queue_timeout_secs: u64) -> Passwords {
        Passwords::new(&PasswordConfig {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent,
            queue_timeout_secs,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let passwords = Passwords::default();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(passwords.verify(hash.clone(), "correct horse".into()).await.unwrap());
        assert!(!passwords.verify(hash, "wrong".into()).await.unwrap());
        assert!(!passwords.verify("garbage".into(), "x".into()).await.unwrap());
        assert!(passwords.hash(String::new()).await.is_err());
        assert!(passwords.hash("x".repeat(MAX_PASSWORD_BYTES + 1)).await.is_err());
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        // Made by an earlier build (argon2 0.5's defaults) and by a server configured cheaper.
        let old = Passwords::default().hash("pw".into()).await.unwrap();
        let cheap = cheap(1, 10);
        let new = cheap.hash("pw".into()).await.unwrap();
        assert!(new.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{new}");
        assert!(cheap.verify(old, "pw".into()).await.unwrap());
        assert!(Passwords::default().verify(new, "pw".into()).await.unwrap());
    }

    #[tokio::test]
    async fn a_request_that_waits_too_long_gets_429_with_a_retry_hint() {
        let passwords = cheap(1, 0);
        // Occupy the only slot, so the next request finds none free within its (zero) wait.
        let held = passwords.slots.clone().acquire_owned().await.unwrap();
        let err = passwords.hash("pw".into()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        assert!(err.retry_after().is_some());
        drop(held);
        assert!(passwords.hash("pw".into()).await.is_ok());
        assert_eq!(passwords.free_slots(), 1, "the slot is given back after the hash");
    }

    #[tokio::test]
    async fn no_more_than_the_bound_run_at_once() {
        let passwords = cheap(2, 60);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (passwords, running, most) = (passwords.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                passwords
                    .run(move || {
                        let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    }
}
