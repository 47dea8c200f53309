//! WebSocket tickets: browsers cannot set headers on a WebSocket, so a client trades its access
//! token for a short-lived, single-use JWT and passes that in the URL instead.

use crate::ephemeral::spaces::WsTickets;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::{Error, Homeserver, Result, users::Session, util};

/// How long a ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: OwnedUserId,
    dev: OwnedDeviceId,
    exp: u64,
    iat: u64,
    jti: String,
}

/// The secret tickets are signed with, derived from the server's signing key: a ticket issued
/// by one process sharing the store is good at any other (a load balancer may send the
/// WebSocket anywhere).
pub struct TicketKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys").finish_non_exhaustive()
    }
}

impl TicketKeys {
    pub(crate) fn new(signing_key: &crate::keys::signing_key::SigningKey) -> Self {
        let secret = &signing_key.mac_secret;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) }
    }
}

impl Homeserver {
    /// Issues a ticket for the session; returns it and its lifetime.
    pub async fn issue_ws_ticket(&self, session: &Session) -> Result<(String, Duration)> {
        let now = util::now_ms() / 1000;
        let claims = Claims {
            sub: session.user_id.clone(),
            dev: session.device()?.to_owned(),
            iat: now,
            exp: now + TICKET_TTL.as_secs(),
            jti: util::random_string(24),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.ticket_keys.encoding)
            .map_err(Error::internal)?;
        self.ephemeral.put_in::<WsTickets>(&claims.jti, &()).await?;
        Ok((token, TICKET_TTL))
    }

    /// Redeems a ticket once: a bad, expired or already used ticket is `M_UNKNOWN_TOKEN`.
    pub async fn redeem_ws_ticket(&self, token: &str) -> Result<Session> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = decode::<Claims>(token, &self.ticket_keys.decoding, &validation)
            .map_err(|_| Error::unknown_token("Invalid or expired ticket"))?
            .claims;
        if self.ephemeral.take_in::<WsTickets>(&claims.jti).await?.is_none() {
            return Err(Error::unknown_token("This ticket was already used"));
        }
        // The device may have been logged out since the ticket was issued.
        if self.users.device(&claims.sub, &claims.dev)?.is_none() {
            return Err(Error::unknown_token("The session of this ticket has ended"));
        }
        let is_guest = self.users.account(&claims.sub)?.is_some_and(|a| a.is_guest);
        Ok(Session { user_id: claims.sub, device_id: Some(claims.dev), is_guest, appservice: None })
    }
}
