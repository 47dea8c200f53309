//! Authentication beyond access tokens: user-interactive auth, single sign-on, JWT login, and
//! the outbound HTTP seam identity providers are reached through.

pub mod http;
pub mod jwt;
pub mod registration_tokens;
pub mod sso;
pub mod uiaa;

use ruma::{UserId, api::client::uiaa::AuthType};

use crate::{Homeserver, Result};

impl Homeserver {
    /// The UIA flows that re-authenticate `user` for a sensitive operation: the password when
    /// the account has one, single sign-on when it is linked to a configured provider.
    pub fn reauth_flows(&self, user: &UserId) -> Result<Vec<Vec<AuthType>>> {
        let has_password = self.users.account(user)?.is_some_and(|a| a.password_hash.is_some());
        let has_sso = !self.sso.reauth_providers(user)?.is_empty();
        let mut flows = Vec::new();
        if has_password || !has_sso {
            flows.push(vec![AuthType::Password]);
        }
        if has_sso {
            flows.push(vec![AuthType::Sso]);
        }
        Ok(flows)
    }
}
