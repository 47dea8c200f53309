//! Password hashing with argon2id. Hashing is deliberately slow, so callers run it on a blocking
//! thread (see [`hash_password`] and [`verify_password`]).

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

use crate::{Error, Result};

/// Longest password accepted: hashing cost grows with length, and no human needs more.
pub const MAX_PASSWORD_BYTES: usize = 512;

pub async fn hash_password(password: String) -> Result<String> {
    check_length(&password)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("argon2: {e}")))
    })
    .await
    .map_err(Error::internal)?
}

/// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
pub async fn verify_password(hash: String, password: String) -> Result<bool> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            tracing::error!("a stored password hash is not a valid PHC string");
            return false;
        };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    })
    .await
    .map_err(Error::internal)
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

    #[tokio::test]
    async fn hash_and_verify() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(hash.clone(), "correct horse".into()).await.unwrap());
        assert!(!verify_password(hash, "wrong".into()).await.unwrap());
        assert!(!verify_password("garbage".into(), "x".into()).await.unwrap());
        assert!(hash_password(String::new()).await.is_err());
        assert!(hash_password("x".repeat(MAX_PASSWORD_BYTES + 1)).await.is_err());
    }
}
