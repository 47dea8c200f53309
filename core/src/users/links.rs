//! Single sign-on links: which local account an identity provider's subject signs in as. A link
//! is made only when the account is created through that provider; nothing ever links an
//! existing account by a matching e-mail address or name.

use hearth_storage::{
    Batch,
    schema::{SsoLinks, UserSsoLinks},
};
use ruma::{OwnedUserId, UserId};

use super::{Users, accounts::account_batch, blocking};
use crate::{Error, Result};

/// Turns an attribute from a provider into something the localpart grammar accepts: lower
/// case, other characters replaced by `_`, no leading `_`, not purely numeric.
pub fn sanitize_localpart(raw: &str) -> String {
    let mapped: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+') { c } else { '_' })
        .collect();
    let trimmed = mapped.trim_start_matches('_');
    let mut localpart: String = trimmed.chars().take(64).collect();
    if localpart.is_empty() || localpart.bytes().all(|b| b.is_ascii_digit()) {
        localpart.insert_str(0, "user");
    }
    localpart
}

/// The outcome of a single sign-on: who it is, and whether the account is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoAccount {
    pub user_id: OwnedUserId,
    pub created: bool,
}

impl Users {
    /// The account linked to a provider's subject.
    pub fn sso_user(&self, idp_id: &str, subject: &str) -> Result<Option<OwnedUserId>> {
        Ok(self.db.get::<SsoLinks>(&(idp_id.to_owned(), subject.to_owned()))?)
    }

    /// The providers an account is linked to.
    /// The identities a user is linked to: `(provider, subject)`.
    pub fn sso_links_of(&self, user_id: &UserId) -> Result<Vec<(String, String)>> {
        self.db
            .scan_prefix::<UserSsoLinks, _>(&user_id.to_owned())?
            .map(|entry| {
                let ((_, provider), subject) = entry?;
                Ok((provider, subject))
            })
            .collect()
    }

    pub fn sso_providers_of(&self, user_id: &UserId) -> Result<Vec<String>> {
        self.db.scan_prefix::<UserSsoLinks, _>(&user_id.to_owned())?.map(|entry| Ok(entry?.0.1)).collect()
    }

    /// The account linked to `(idp_id, subject)`; without one, a new
    /// account with the first free localpart like `wanted`, linked in the same write. Two
    /// concurrent first sign-ins of one subject yield one account.
    pub async fn sso_find_or_create(
        &self,
        idp_id: &str,
        subject: &str,
        wanted: &str,
        displayname: Option<String>,
    ) -> Result<SsoAccount> {
        let users = self.clone();
        let link = (idp_id.to_owned(), subject.to_owned());
        let wanted = sanitize_localpart(wanted);
        let account = blocking(move || {
            let _guard = users.create_lock.lock().map_err(|_| Error::internal("create lock poisoned"))?;
            let _shared = users.db.shared_lock(hearth_storage::engine::LockKind::Create, "user")?;
            if let Some(user_id) = users.db.get::<SsoLinks>(&link)? {
                return Ok(SsoAccount { user_id, created: false });
            }
            let user_id = users.free_user_id_like(&wanted)?;
            let mut batch = Batch::new();
            account_batch(&mut batch, &user_id, None, false, false, displayname)?;
            batch.put::<SsoLinks>(&link, &user_id)?;
            batch.put::<UserSsoLinks>(&(user_id.clone(), link.0.clone()), &link.1)?;
            users.db.write(batch)?;
            Ok(SsoAccount { user_id, created: true })
        })
        .await?;
        if account.created {
            tracing::info!(user_id = %account.user_id, idp_id, "registered a new account through single sign-on");
        }
        Ok(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{NewAccount, test_users};

    #[test]
    fn localparts_from_provider_attributes() {
        assert_eq!(sanitize_localpart("Octo-Cat"), "octo-cat");
        assert_eq!(sanitize_localpart("jo hn@x"), "jo_hn_x");
        assert_eq!(sanitize_localpart("__x"), "x");
        assert_eq!(sanitize_localpart("12345"), "user12345");
        assert_eq!(sanitize_localpart(""), "user");
        assert_eq!(sanitize_localpart("Zoë"), "zo_");
    }

    #[tokio::test]
    async fn links_are_stable_and_collisions_get_a_free_localpart() {
        let users = test_users();
        users
            .register(NewAccount {
                localpart: Some("octocat".into()),
                inhibit_login: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let first = users.sso_find_or_create("github", "1", "octocat", Some("Octo".into())).await.unwrap();
        assert!(first.created);
        assert_eq!(first.user_id.as_str(), "@octocat1:example.org");
        let again = users.sso_find_or_create("github", "1", "someone-else", None).await.unwrap();
        assert_eq!(again, SsoAccount { user_id: first.user_id.clone(), created: false });
        // The same subject at another provider is another person.
        let other = users.sso_find_or_create("google", "1", "octocat", None).await.unwrap();
        assert_eq!(other.user_id.as_str(), "@octocat2:example.org");
        assert_eq!(users.sso_user("github", "1").unwrap(), Some(first.user_id.clone()));
        assert_eq!(users.sso_providers_of(&first.user_id).unwrap(), vec!["github".to_owned()]);
        assert_eq!(users.account(&first.user_id).unwrap().unwrap().password_hash, None);
        assert_eq!(
            users.profile_field(&first.user_id, "displayname").unwrap(),
            Some(serde_json::json!("Octo"))
        );
    }
}
