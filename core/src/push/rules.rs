//! Each user's push rules, parsed once and shared: every event in a room of 1,000 evaluates
//! 1,000 rulesets, and parsing them from account data each time would cost more than the
//! evaluation.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use hearth_storage::{Db, schema::GlobalAccountData};
use ruma::{OwnedUserId, UserId, push::Ruleset};

use crate::Result;

/// Users whose rules are kept before the cache starts over (a ruleset is a few KiB).
const MAX_USERS: usize = 20_000;

/// The account data type push rules are stored under.
pub const PUSH_RULES: &str = "m.push_rules";

/// Parsed rulesets by user. Writers store the new ruleset after writing it (write-through), and
/// a reader that missed stores what it read only if nothing is there yet, so a reader that read
/// before a write can never put back the old rules over the new ones.
#[derive(Debug, Clone, Default)]
pub struct RulesCache {
    users: Arc<Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>>,
}

impl RulesCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Arc<Ruleset>>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's rules: cached, or read from storage.
    pub fn get(&self, db: &Db, user: &UserId) -> Result<Arc<Ruleset>> {
        if db.shared().is_some() {
            // Another process sharing the store may change them, unheard of here.
            return Ok(Arc::new(load(db, user)?));
        }
        if let Some(rules) = self.lock().get(user) {
            return Ok(rules.clone());
        }
        let rules = Arc::new(load(db, user)?);
        let mut users = self.lock();
        if users.len() >= MAX_USERS {
            users.clear();
        }
        Ok(users.entry(user.to_owned()).or_insert(rules).clone())
    }

    /// Records rules just written to storage.
    pub fn stored(&self, user: &UserId, rules: Ruleset) {
        let mut users = self.lock();
        if users.len() >= MAX_USERS {
            users.clear();
        }
        users.insert(user.to_owned(), Arc::new(rules));
    }

    /// Forgets a user's rules (their account data was removed).
    pub fn forget(&self, user: &UserId) {
        self.lock().remove(user);
    }
}

/// The user's stored rules, or the spec's defaults for a user who never changed them (or whose
/// stored rules no longer parse: logged, and never a reason to fail an event that notifies
/// them).
pub fn load(db: &Db, user: &UserId) -> Result<Ruleset> {
    let Some(record) = db.get_lenient::<GlobalAccountData>(&(user.to_owned(), PUSH_RULES.to_owned()))? else {
        return Ok(Ruleset::server_default(user));
    };
    let content = record.content;
    let global = content.get("global").cloned().unwrap_or(content);
    match serde_json::from_value(global) {
        Ok(rules) => Ok(rules),
        Err(error) => {
            tracing::warn!(%user, %error, "stored push rules do not parse; using the defaults");
            Ok(Ruleset::server_default(user))
        }
    }
}
