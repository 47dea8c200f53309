//! Account data in /sync: global and per room, what changed since the last sync.

use hearth_storage::schema::{GlobalAccountData, RoomAccountData};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::{Homeserver, Result};

impl Homeserver {
    pub(super) fn global_account_data(&self, user: &UserId, since: Option<u64>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut has_push_rules = false;
        for entry in self.db.scan_prefix::<GlobalAccountData, _>(&user.to_owned())?.lenient() {
            let ((_, kind), Some(mut record)) = entry? else { continue };
            if kind == "m.push_rules" {
                has_push_rules = true;
                if let Some(global) = record.content.get_mut("global") {
                    crate::account_data::fill_rule_kinds(global);
                }
            }
            if since.is_none_or(|s| record.stream_pos > s) {
                out.push(json!({"type": kind, "content": record.content}));
            }
        }
        // Clients expect their push rules in an initial sync even before they changed any.
        if since.is_none() && !has_push_rules {
            let content = crate::account_data::default_push_rules_content(user)?;
            out.push(json!({"type": "m.push_rules", "content": content}));
        }
        Ok(out)
    }

    pub(super) fn room_account_data(
        &self,
        user: &UserId,
        room_id: &RoomId,
        since: Option<u64>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for entry in
            self.db.scan_prefix::<RoomAccountData, _>(&(user.to_owned(), room_id.to_owned()))?.lenient()
        {
            let ((_, _, kind), Some(record)) = entry? else { continue };
            if since.is_none_or(|s| record.stream_pos > s) {
                out.push(json!({"type": kind, "content": record.content}));
            }
        }
        Ok(out)
    }
}
