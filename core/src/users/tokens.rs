//! Access tokens: random, shown to the client once, stored only as a SHA-256 hash.

use hearth_storage::schema::AccessTokens;

use super::{Session, Users};
use crate::{Error, Result, util};

pub(super) fn new_access_token() -> String {
    format!("hth_{}", util::random_string(40))
}

pub(super) fn hash_token(token: &str) -> Vec<u8> {
    util::sha256(token.as_bytes())
}

impl Users {
    /// The session an access token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Session> {
        let record = self
            .db
            .get::<AccessTokens>(&hash_token(token))?
            .ok_or_else(|| Error::unknown_token("Unrecognised access token"))?;
        Ok(Session { user_id: record.user_id, device_id: record.device_id, is_guest: record.is_guest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let (a, b) = (new_access_token(), new_access_token());
        assert_ne!(a, b);
        assert!(a.starts_with("hth_"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
