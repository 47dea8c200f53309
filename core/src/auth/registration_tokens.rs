//! Registration tokens admins issue (`/_synapse/admin/v1/registration_tokens`), each valid for
//! a number of registrations and until a time. A registration that passes the token stage
//! holds one use (`pending`) until it completes (`completed`) or fails (released).

use std::sync::{Arc, Mutex};

pub use hearth_storage::records::RegistrationTokenRecord;
use hearth_storage::{Db, schema::RegistrationTokens as Table};

use crate::{Error, Result, util};

/// Characters a token may have (RFC 3986's unreserved set, as Synapse allows).
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Whether a token can still complete a registration at `now`.
pub fn usable(record: &RegistrationTokenRecord, now: u64) -> bool {
    record.expiry_time.is_none_or(|t| t > now)
        && record.uses_allowed.is_none_or(|n| record.pending + record.completed < n)
}

#[derive(Clone)]
pub struct RegistrationTokens {
    db: Db,
    /// Serializes read-modify-writes of the counters, so that two registrations never both
    /// take a token's last use.
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for RegistrationTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationTokens").finish_non_exhaustive()
    }
}

impl RegistrationTokens {
    pub fn new(db: Db) -> Self {
        Self { db, lock: Arc::default() }
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = self.lock.lock().map_err(|_| Error::internal("registration token lock poisoned"))?;
        let _shared = self.db.shared_lock(hearth_storage::engine::LockKind::Create, "registration_tokens")?;
        f()
    }

    /// Every token, or only the usable (`Some(true)`) or unusable (`Some(false)`) ones.
    pub fn list(&self, valid: Option<bool>) -> Result<Vec<(String, RegistrationTokenRecord)>> {
        let now = util::now_ms();
        let mut out = Vec::new();
        for entry in self.db.scan_prefix_all::<Table>()? {
            let (token, record) = entry?;
            if valid.is_none_or(|v| usable(&record, now) == v) {
                out.push((token, record));
            }
        }
        Ok(out)
    }

    pub fn get(&self, token: &str) -> Result<Option<RegistrationTokenRecord>> {
        Ok(self.db.get::<Table>(&token.to_owned())?)
    }

    /// Issues a token: the one given, or a random one of `length` characters (16 by default).
    pub fn create(
        &self,
        token: Option<String>,
        length: Option<u64>,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<(String, RegistrationTokenRecord)> {
        if expiry_time.is_some_and(|t| t < util::now_ms()) {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        let record = RegistrationTokenRecord { uses_allowed, pending: 0, completed: 0, expiry_time };
        self.locked(|| {
            let token = match token {
                Some(token) if !valid_token(&token) => {
                    return Err(Error::invalid_param(
                        "token must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'",
                    ));
                }
                Some(token) => {
                    if self.db.contains::<Table>(&token)? {
                        return Err(Error::invalid_param(format!("Token already exists: {token}")));
                    }
                    token
                }
                None => {
                    let length = length.unwrap_or(16);
                    if !(1..=64).contains(&length) {
                        return Err(Error::invalid_param(
                            "length must be greater than zero and not greater than 64",
                        ));
                    }
                    let length = usize::try_from(length).unwrap_or(16);
                    // 62^length possibilities: a collision is a sign of something else.
                    let token = util::random_string(length);
                    if self.db.contains::<Table>(&token)? {
                        return Err(Error::internal("a random registration token collided"));
                    }
                    token
                }
            };
            self.db.put::<Table>(&token, &record)?;
            Ok((token, record))
        })
    }

    /// Changes a token's limits; `None` leaves one as it is, `Some(None)` lifts it.
    pub fn update(
        &self,
        token: &str,
        uses_allowed: Option<Option<u64>>,
        expiry_time: Option<Option<u64>>,
    ) -> Result<RegistrationTokenRecord> {
        if let Some(Some(t)) = expiry_time
            && t < util::now_ms()
        {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        self.locked(|| {
            let key = token.to_owned();
            let mut record = self.db.get::<Table>(&key)?.ok_or_else(|| not_found(token))?;
            if let Some(uses) = uses_allowed {
                record.uses_allowed = uses;
            }
            if let Some(expiry) = expiry_time {
                record.expiry_time = expiry;
            }
            self.db.put::<Table>(&key, &record)?;
            Ok(record)
        })
    }

    pub fn delete(&self, token: &str) -> Result<()> {
        self.locked(|| {
            let key = token.to_owned();
            if !self.db.contains::<Table>(&key)? {
                return Err(not_found(token));
            }
            self.db.delete::<Table>(&key)?;
            Ok(())
        })
    }

    /// Whether a token would let a registration through now (the validity endpoint).
    pub fn is_usable(&self, token: &str) -> Result<bool> {
        Ok(self.get(token)?.is_some_and(|r| usable(&r, util::now_ms())))
    }

    /// Takes one use of a token for a registration under way; false when it is not usable.
    pub fn begin_use(&self, token: &str) -> Result<bool> {
        self.change(token, |record| {
            if !usable(record, util::now_ms()) {
                return false;
            }
            record.pending += 1;
            true
        })
    }

    /// The registration holding a use completed.
    pub fn complete_use(&self, token: &str) -> Result<()> {
        self.change(token, |record| {
            record.pending = record.pending.saturating_sub(1);
            record.completed += 1;
            true
        })
        .map(drop)
    }

    /// The registration holding a use failed: the use is free again.
    pub fn release_use(&self, token: &str) -> Result<()> {
        self.change(token, |record| {
            record.pending = record.pending.saturating_sub(1);
            true
        })
        .map(drop)
    }

    /// Applies `change` under the lock, writing the record when it says so; false for a
    /// token that does not exist (any more).
    fn change(&self, token: &str, change: impl FnOnce(&mut RegistrationTokenRecord) -> bool) -> Result<bool> {
        self.locked(|| {
            let key = token.to_owned();
            let Some(mut record) = self.db.get::<Table>(&key)? else { return Ok(false) };
            let write = change(&mut record);
            if write {
                self.db.put::<Table>(&key, &record)?;
            }
            Ok(write)
        })
    }
}

fn not_found(token: &str) -> Error {
    Error::not_found(format!("No such registration token: {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_with_one_use_serves_one_registration() {
        let tokens = RegistrationTokens::new(Db::in_memory());
        let (token, record) = tokens.create(None, None, Some(1), None).unwrap();
        assert_eq!(token.len(), 16);
        assert_eq!((record.pending, record.completed), (0, 0));
        assert!(tokens.begin_use(&token).unwrap());
        assert!(!tokens.begin_use(&token).unwrap(), "the one use is held");
        tokens.release_use(&token).unwrap();
        assert!(tokens.begin_use(&token).unwrap(), "released, it is free again");
        tokens.complete_use(&token).unwrap();
        let record = tokens.get(&token).unwrap().unwrap();
        assert_eq!((record.pending, record.completed), (0, 1));
        assert!(!tokens.is_usable(&token).unwrap());
        assert_eq!(tokens.list(Some(false)).unwrap().len(), 1);
        assert!(tokens.list(Some(true)).unwrap().is_empty());
        tokens.update(&token, Some(None), None).unwrap();
        assert!(tokens.is_usable(&token).unwrap(), "unlimited now");
    }

    #[test]
    fn tokens_are_checked() {
        let tokens = RegistrationTokens::new(Db::in_memory());
        let err = |r: Result<(String, RegistrationTokenRecord)>| r.unwrap_err().code();
        assert_eq!(
            err(tokens.create(Some("bad token".into()), None, None, None)),
            crate::ErrorCode::InvalidParam
        );
        assert_eq!(err(tokens.create(Some(String::new()), None, None, None)), crate::ErrorCode::InvalidParam);
        assert_eq!(err(tokens.create(None, Some(65), None, None)), crate::ErrorCode::InvalidParam);
        assert_eq!(err(tokens.create(None, None, None, Some(1))), crate::ErrorCode::InvalidParam);
        tokens.create(Some("a.b_c~d-E9".into()), None, None, None).unwrap();
        assert_eq!(
            err(tokens.create(Some("a.b_c~d-E9".into()), None, None, None)),
            crate::ErrorCode::InvalidParam
        );
        let expired =
            RegistrationTokenRecord { uses_allowed: None, pending: 0, completed: 0, expiry_time: Some(5) };
        assert!(!usable(&expired, 10));
        assert_eq!(tokens.delete("missing").unwrap_err().code(), crate::ErrorCode::NotFound);
    }
}
