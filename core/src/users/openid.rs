//! OpenID tokens (`/user/{userId}/openid/request_token`): a short-lived token a client hands to
//! a third party (a widget, an integration manager, Element Call's media service), which asks
//! this server's federation API who it belongs to. It proves the user's identity and grants
//! nothing else. Kept an hour in the ephemeral store, keyed by its hash.

use crate::ephemeral::spaces::OpenIdTokens;
use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use super::{Users, tokens::hash_token};
use crate::{Error, ErrorCode, Result, util};

/// How long an OpenID token works (as Synapse).
pub const OPENID_TOKEN_TTL: Duration = Duration::from_secs(3600);

fn id(token: &str) -> String {
    hex::encode(hash_token(token))
}

impl Users {
    /// Issues an OpenID token for `user_id`.
    pub async fn issue_openid_token(&self, user_id: &UserId) -> Result<String> {
        let token = format!("hto_{}", util::random_string(40));
        self.ephemeral.put_in::<OpenIdTokens>(id(&token), &user_id.to_owned()).await?;
        Ok(token)
    }

    /// Whose an OpenID token is; it works until it expires, for as many lookups as the third
    /// party makes.
    pub async fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        let unknown = || Error::new(ErrorCode::UnknownToken, "Unknown or expired OpenID token");
        self.ephemeral.get_in::<OpenIdTokens>(id(token)).await?.ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use crate::users::test_users;

    #[tokio::test]
    async fn openid_tokens_name_their_user_until_they_expire() {
        let users = test_users();
        let user = ruma::user_id!("@oid:example.org");
        let token = users.issue_openid_token(user).await.unwrap();
        assert_eq!(users.openid_user(&token).await.unwrap(), user);
        assert_eq!(users.openid_user(&token).await.unwrap(), user, "not single-use");
        assert!(users.openid_user("hto_made_up").await.is_err());
    }
}
