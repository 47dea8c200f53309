//! Login tokens (`m.login.token`): what single sign-on hands the client's redirect URL. Each is
//! single-use and lives two minutes in the ephemeral store, keyed by its hash.

use crate::ephemeral::spaces::LoginTokens;
use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use super::{Users, tokens::hash_token};
use crate::{Error, Result, util};

/// The spec's upper bound for how long a login token may work.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(120);

fn id(token: &str) -> String {
    hex::encode(hash_token(token))
}

impl Users {
    /// Issues a login token for `user_id`.
    pub async fn issue_login_token(&self, user_id: &UserId) -> Result<String> {
        let token = format!("htl_{}", util::random_string(40));
        self.ephemeral.put_in::<LoginTokens>(id(&token), &user_id.to_owned()).await?;
        Ok(token)
    }

    /// Redeems a login token once; unknown, expired and used tokens are all `M_FORBIDDEN`.
    pub async fn redeem_login_token(&self, token: &str) -> Result<OwnedUserId> {
        let invalid = || Error::forbidden("Invalid login token");
        self.ephemeral.take_in::<LoginTokens>(id(token)).await?.ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use crate::users::test_users;

    #[tokio::test]
    async fn login_tokens_work_once() {
        let users = test_users();
        let user = ruma::user_id!("@tok:example.org");
        let token = users.issue_login_token(user).await.unwrap();
        assert_eq!(users.redeem_login_token(&token).await.unwrap(), user);
        assert!(users.redeem_login_token(&token).await.is_err());
        assert!(users.redeem_login_token("htl_made_up").await.is_err());
    }
}
