//! Profile fields of local users: `displayname`, `avatar_url`, and any extended field.

use std::collections::BTreeMap;

use hearth_storage::schema::ProfileFields;
use ruma::UserId;

use super::{Users, blocking};
use crate::{Error, Result};

/// Limits from Synapse, so that clients see the same rules.
const MAX_DISPLAYNAME_CHARS: usize = 256;
const MAX_AVATAR_URL_CHARS: usize = 1000;
/// How long a cached profile may be served; changes through this server invalidate it at once.
const PROFILE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

fn profile_key(user_id: &UserId) -> String {
    format!("profile:{user_id}")
}

/// The whole profile must fit in this many bytes of JSON (spec: 64 KiB).
const MAX_PROFILE_BYTES: usize = 65_536;

impl Users {
    /// Every field of a local user's profile, or `None` when the user does not exist.
    pub fn profile(&self, user_id: &UserId) -> Result<Option<BTreeMap<String, serde_json::Value>>> {
        if !self.exists(user_id)? {
            return Ok(None);
        }
        let fields = self
            .db
            .scan_prefix::<ProfileFields, _>(&user_id.to_owned())?
            .map(|entry| entry.map(|((_, field), value)| (field, value)))
            .collect::<Result<_, _>>()?;
        Ok(Some(fields))
    }

    /// [`Self::profile`] through the shared cache: member events and profile lookups read it
    /// far more often than users change it.
    pub async fn cached_profile(
        &self,
        user_id: &UserId,
    ) -> Result<Option<BTreeMap<String, serde_json::Value>>> {
        let this = self.clone();
        let user = user_id.to_owned();
        self.cache.get_or_load(&profile_key(user_id), PROFILE_TTL, move || this.profile(&user)).await
    }

    /// The profile fields a member event carries (`displayname`, `avatar_url`), as an object to
    /// add `membership` to: a join shows the joiner's, an invite the invitee's, as on Synapse.
    pub async fn member_content(&self, user_id: &UserId) -> Result<serde_json::Value> {
        let mut content = serde_json::Map::new();
        if let Some(profile) = self.cached_profile(user_id).await? {
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = profile.get(field) {
                    content.insert(field.to_owned(), value.clone());
                }
            }
        }
        Ok(serde_json::Value::Object(content))
    }

    pub fn profile_field(&self, user_id: &UserId, field: &str) -> Result<Option<serde_json::Value>> {
        Ok(self.db.get::<ProfileFields>(&(user_id.to_owned(), field.to_owned()))?)
    }

    /// Sets (or with `None` removes) one field, after checking the limits for it.
    pub async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<serde_json::Value>,
    ) -> Result<()> {
        if let Some(v) = &value {
            check_field(field, v)?;
            let mut profile =
                self.profile(user_id)?.ok_or_else(|| Error::not_found("Profile was not found"))?;
            profile.insert(field.to_owned(), v.clone());
            let size = serde_json::to_vec(&profile).map_or(usize::MAX, |b| b.len());
            if size > MAX_PROFILE_BYTES {
                return Err(Error::too_large("The profile would exceed 64 KiB"));
            }
        }
        let users = self.clone();
        let key = (user_id.to_owned(), field.to_owned());
        blocking(move || {
            match value {
                Some(v) => users.db.put::<ProfileFields>(&key, &v)?,
                None => users.db.delete::<ProfileFields>(&key)?,
            }
            Ok(())
        })
        .await?;
        self.cache.invalidate(&profile_key(user_id)).await;
        Ok(())
    }
}

fn check_field(field: &str, value: &serde_json::Value) -> Result<()> {
    if field.is_empty() || field.len() > 255 {
        return Err(Error::invalid_param("Profile field names must be 1 to 255 bytes"));
    }
    let limit = match field {
        "displayname" => MAX_DISPLAYNAME_CHARS,
        "avatar_url" => MAX_AVATAR_URL_CHARS,
        _ => return Ok(()),
    };
    let Some(text) = value.as_str() else {
        return Err(Error::bad_json(format!("{field} must be a string")));
    };
    if text.chars().count() > limit {
        return Err(Error::invalid_param(format!("{field} is too long (max {limit})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::users::{NewAccount, test_users};

    #[tokio::test]
    async fn fields_and_limits() {
        let users = test_users();
        let uid = users
            .register(NewAccount { localpart: Some("pat".into()), inhibit_login: true, ..Default::default() })
            .await
            .unwrap()
            .user_id;
        assert_eq!(users.profile_field(&uid, "displayname").unwrap(), Some(json!("pat")));
        users.set_profile_field(&uid, "displayname", Some(json!("Pat"))).await.unwrap();
        users.set_profile_field(&uid, "avatar_url", Some(json!("mxc://x/y"))).await.unwrap();
        let profile = users.profile(&uid).unwrap().unwrap();
        assert_eq!(profile["displayname"], json!("Pat"));
        assert_eq!(profile["avatar_url"], json!("mxc://x/y"));
        users.set_profile_field(&uid, "avatar_url", None).await.unwrap();
        assert!(!users.profile(&uid).unwrap().unwrap().contains_key("avatar_url"));

        assert!(users.set_profile_field(&uid, "displayname", Some(json!("x".repeat(257)))).await.is_err());
        assert!(users.set_profile_field(&uid, "displayname", Some(json!(5))).await.is_err());
        assert!(users.set_profile_field(&uid, "m.big", Some(json!("y".repeat(70_000)))).await.is_err());
        let nobody = ruma::user_id!("@nobody:example.org");
        assert!(users.profile(nobody).unwrap().is_none());
    }
}
