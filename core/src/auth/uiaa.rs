//! User-Interactive Authentication: multi-stage auth for registration and sensitive operations.
//!
//! A session lives in the ephemeral store and is bound to the operation (and, for a logged-in
//! user, the user) that started it, so a session completed for one request cannot authorize
//! another.

use crate::ephemeral::spaces::{Json, UiaSessions};
use std::{sync::Arc, time::Duration};

use ruma::{
    OwnedUserId, UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::StandardErrorBody,
    },
};
use serde::{Deserialize, Serialize};

use super::registration_tokens::RegistrationTokens;
use crate::{Error, ErrorCode, Result, ephemeral::EphemeralStore, users::Users, util};

pub(crate) const SESSION_TTL: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionState {
    flows: Vec<Vec<String>>,
    completed: Vec<String>,
    operation: String,
    user_id: Option<OwnedUserId>,
    /// An admin-issued registration token this session holds a use of.
    #[serde(default)]
    registration_token: Option<String>,
}

/// What a completed UIA exchange leaves for the operation.
#[derive(Debug, Default)]
pub struct Completed {
    /// The admin-issued registration token that let a registration through: the operation
    /// completes or releases its use.
    pub registration_token: Option<String>,
}

#[derive(Clone)]
pub struct Uiaa {
    ephemeral: Arc<dyn EphemeralStore>,
    users: Users,
    registration_token: Option<String>,
    tokens: RegistrationTokens,
}

impl std::fmt::Debug for Uiaa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uiaa").finish_non_exhaustive()
    }
}

impl Uiaa {
    pub fn new(
        ephemeral: Arc<dyn EphemeralStore>,
        users: Users,
        registration_token: Option<String>,
        tokens: RegistrationTokens,
    ) -> Self {
        Self { ephemeral, users, registration_token, tokens }
    }

    /// Advances UIA for one request. Returns `Ok(())` once some flow is complete; otherwise
    /// `Err(Error::Uiaa)`, which the API answers with 401 and the flow state.
    pub async fn authenticate(
        &self,
        auth: Option<&AuthData>,
        flows: &[Vec<AuthType>],
        operation: &str,
        user: Option<&UserId>,
    ) -> Result<Completed> {
        let flows: Vec<Vec<String>> =
            flows.iter().map(|f| f.iter().map(|t| t.as_str().to_owned()).collect()).collect();
        let fresh = || SessionState {
            flows: flows.clone(),
            completed: Vec::new(),
            operation: operation.to_owned(),
            user_id: user.map(ToOwned::to_owned),
            registration_token: None,
        };
        let Some(auth) = auth else {
            let session = util::random_string(24);
            let state = fresh();
            self.save(&session, &state).await?;
            return Err(challenge(&session, &state, None));
        };

        let (session, mut state) = match auth.session() {
            Some(id) => {
                let Json(state) = self
                    .ephemeral
                    .get_in::<UiaSessions>(id)
                    .await?
                    .ok_or_else(|| Error::bad_request(format!("Unknown session ID: {id}")))?;
                (id.to_owned(), state)
            }
            // Like Synapse, a stage sent without a session starts one and counts at once.
            None => (util::random_string(24), fresh()),
        };
        if state.operation != operation || state.user_id.as_deref() != user {
            return Err(Error::forbidden(
                "Requested operation has changed during the UI authentication session.",
            ));
        }

        let stage = auth.auth_type().map(|t| t.as_str().to_owned()).unwrap_or_default();
        let allowed = state.flows.iter().any(|f| f.contains(&stage));
        // A stage done in a browser (the fallback page) is completed there; the client only
        // comes back with the session to see whether that finished the flow.
        let acknowledgement =
            matches!(auth, AuthData::FallbackAcknowledgement(_)) || stage == AuthType::Sso.as_str();
        let outcome = if acknowledgement {
            Ok(())
        } else if allowed {
            self.check_stage(auth, user, &mut state).await?
        } else {
            Err(format!("{stage} is not one of the allowed stages"))
        };
        let auth_error = match outcome {
            Ok(()) if acknowledgement => None,
            Ok(()) => {
                if !state.completed.contains(&stage) {
                    state.completed.push(stage);
                }
                None
            }
            Err(message) => Some(message),
        };

        let done = state.flows.iter().any(|f| f.iter().all(|s| state.completed.contains(s)));
        if done {
            self.ephemeral.delete_in::<UiaSessions>(&session).await?;
            return Ok(Completed { registration_token: state.registration_token });
        }
        self.save(&session, &state).await?;
        Err(challenge(&session, &state, auth_error))
    }

    /// The operation and user of a live session, for a fallback page that must say what the
    /// user is confirming.
    pub async fn session_info(&self, session: &str) -> Result<Option<(String, Option<OwnedUserId>)>> {
        let Some(Json(state)) = self.ephemeral.get_in::<UiaSessions>(session).await? else { return Ok(None) };
        Ok(Some((state.operation, state.user_id)))
    }

    /// Records a stage completed outside the API (single sign-on in a browser) for the session
    /// of `user`.
    pub async fn complete_stage(&self, session: &str, stage: &AuthType, user: &UserId) -> Result<()> {
        let Json(mut state) = self
            .ephemeral
            .get_in::<UiaSessions>(session)
            .await?
            .ok_or_else(|| Error::bad_request(format!("Unknown session ID: {session}")))?;
        if state.user_id.as_deref() != Some(user) {
            return Err(Error::forbidden("This identity is not the user who started the operation"));
        }
        let stage = stage.as_str().to_owned();
        if !state.flows.iter().any(|f| f.contains(&stage)) {
            return Err(Error::forbidden(format!("{stage} is not one of the allowed stages")));
        }
        if !state.completed.contains(&stage) {
            state.completed.push(stage);
        }
        self.save(session, &state).await
    }

    async fn save(&self, session: &str, state: &SessionState) -> Result<()> {
        self.ephemeral.put_in::<UiaSessions>(session, &Json(state.clone())).await
    }

    /// `Ok(Ok(()))`: the stage passed; `Ok(Err(message))`: it failed and the client may retry.
    async fn check_stage(
        &self,
        auth: &AuthData,
        user: Option<&UserId>,
        state: &mut SessionState,
    ) -> Result<Result<(), String>> {
        Ok(match auth {
            AuthData::Dummy(_) => Ok(()),
            AuthData::RegistrationToken(given) => {
                let given = given.token.as_str();
                let configured = self
                    .registration_token
                    .as_ref()
                    .is_some_and(|t| util::constant_time_eq(given.as_bytes(), t.as_bytes()));
                match &state.registration_token {
                    _ if configured => Ok(()),
                    // Sent again in the same session: its use is already held.
                    Some(held) if held == given => Ok(()),
                    Some(_) => Err("Registration token has changed".to_owned()),
                    None if self.tokens.begin_use(given)? => {
                        state.registration_token = Some(given.to_owned());
                        Ok(())
                    }
                    None => Err("Invalid registration token".to_owned()),
                }
            }
            AuthData::Password(password) => {
                let Some(user) = user else {
                    return Ok(Err("Password authentication needs a logged-in user".to_owned()));
                };
                let named = match &password.identifier {
                    UserIdentifier::Matrix(id) => self.users.resolve_login_user(&id.user)?,
                    _ => None,
                };
                if named.as_deref() != Some(user) {
                    // Valid credentials of someone else are refused outright, as Synapse does:
                    // they can never complete this user's session (and are no better an
                    // oracle than /login).
                    if let Some(other) = &named
                        && self.users.check_password(other, &password.password).await?
                    {
                        return Err(Error::forbidden("Authenticated as another user"));
                    }
                    return Ok(Err("The identifier does not match the logged-in user".to_owned()));
                }
                if self.users.check_password(user, &password.password).await? {
                    Ok(())
                } else {
                    Err("Invalid password".to_owned())
                }
            }
            _ => Err("Unsupported authentication stage".to_owned()),
        })
    }
}

fn challenge(session: &str, state: &SessionState, auth_error: Option<String>) -> Error {
    let flows = state
        .flows
        .iter()
        .map(|f| AuthFlow::new(f.iter().map(|s| AuthType::from(s.as_str())).collect()))
        .collect();
    let mut info = UiaaInfo::new(flows);
    info.completed = state.completed.iter().map(|s| AuthType::from(s.as_str())).collect();
    info.session = Some(session.to_owned());
    // Some clients (matrix-nio) require `params` to be present, even when empty.
    info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
    info.auth_error = auth_error
        .map(|message| Box::new(StandardErrorBody::new(ErrorCode::Forbidden.status_and_kind().1, message)));
    Error::Uiaa(Box::new(info))
}

#[cfg(test)]
mod tests {
    use ruma::api::client::uiaa::{Dummy, Password, RegistrationToken};

    use super::*;
    use crate::{ephemeral::LocalEphemeral, users::NewAccount};

    fn setup(token: Option<&str>) -> (Uiaa, Users) {
        let users = crate::users::test_users();
        let tokens = RegistrationTokens::new(hearth_storage::Db::in_memory());
        let uiaa = Uiaa::new(Arc::new(LocalEphemeral::new()), users.clone(), token.map(Into::into), tokens);
        (uiaa, users)
    }

    fn session_of(err: Error) -> (String, Box<UiaaInfo>) {
        match err {
            Error::Uiaa(info) => (info.session.clone().unwrap(), info),
            other => panic!("expected a UIA challenge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dummy_flow_completes_in_two_steps() {
        let (uiaa, _) = setup(None);
        let flows = [vec![AuthType::Dummy]];
        let (session, info) =
            session_of(uiaa.authenticate(None, &flows, "register", None).await.unwrap_err());
        assert!(info.completed.is_empty());
        let mut dummy = Dummy::new();
        dummy.session = Some(session.clone());
        uiaa.authenticate(Some(&AuthData::Dummy(dummy.clone())), &flows, "register", None).await.unwrap();
        // The completed session is gone: it cannot authorize a second request.
        assert!(uiaa.authenticate(Some(&AuthData::Dummy(dummy)), &flows, "register", None).await.is_err());
    }

    #[tokio::test]
    async fn token_stage_and_disallowed_stage() {
        let (uiaa, _) = setup(Some("letmein"));
        let flows = [vec![AuthType::RegistrationToken]];
        let err = uiaa
            .authenticate(Some(&AuthData::Dummy(Dummy::new())), &flows, "register", None)
            .await
            .unwrap_err();
        let (session, info) = session_of(err);
        assert!(info.auth_error.is_some(), "dummy must not pass a token flow");
        let mut wrong = RegistrationToken::new("nope".into());
        wrong.session = Some(session.clone());
        let (_, info) = session_of(
            uiaa.authenticate(Some(&AuthData::RegistrationToken(wrong)), &flows, "register", None)
                .await
                .unwrap_err(),
        );
        assert!(info.auth_error.is_some());
        let mut right = RegistrationToken::new("letmein".into());
        right.session = Some(session);
        uiaa.authenticate(Some(&AuthData::RegistrationToken(right)), &flows, "register", None).await.unwrap();
    }

    #[tokio::test]
    async fn password_stage_is_bound_to_user_and_operation() {
        let (uiaa, users) = setup(None);
        let uid = users
            .register(NewAccount {
                localpart: Some("uia".into()),
                password: Some("pw".into()),
                inhibit_login: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .user_id;
        let flows = [vec![AuthType::Password]];
        let (session, _) =
            session_of(uiaa.authenticate(None, &flows, "delete_devices", Some(&uid)).await.unwrap_err());
        let ident =
            || UserIdentifier::Matrix(ruma::api::client::uiaa::MatrixUserIdentifier::new("uia".into()));
        let mut bad = Password::new(ident(), "wrong".into());
        bad.session = Some(session.clone());
        let err =
            uiaa.authenticate(Some(&AuthData::Password(bad)), &flows, "delete_devices", Some(&uid)).await;
        assert!(session_of(err.unwrap_err()).1.auth_error.is_some());
        let mut good = Password::new(ident(), "pw".into());
        good.session = Some(session);
        let other_op = uiaa
            .authenticate(Some(&AuthData::Password(good.clone())), &flows, "deactivate", Some(&uid))
            .await;
        assert!(matches!(other_op, Err(Error::Matrix { code: ErrorCode::Forbidden, .. })));
        uiaa.authenticate(Some(&AuthData::Password(good)), &flows, "delete_devices", Some(&uid))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn another_users_valid_password_is_refused_outright() {
        let (uiaa, users) = setup(None);
        let mut ids = Vec::new();
        for (name, pw) in [("owner", "pw1"), ("other", "pw2")] {
            let account = NewAccount {
                localpart: Some(name.into()),
                password: Some(pw.into()),
                inhibit_login: true,
                ..Default::default()
            };
            ids.push(users.register(account).await.unwrap().user_id);
        }
        let flows = [vec![AuthType::Password]];
        let other =
            || UserIdentifier::Matrix(ruma::api::client::uiaa::MatrixUserIdentifier::new("other".into()));
        // Wrong credentials of another user: a retryable stage failure.
        let wrong = AuthData::Password(Password::new(other(), "nope".into()));
        let err = uiaa.authenticate(Some(&wrong), &flows, "delete_device", Some(&ids[0])).await;
        assert!(session_of(err.unwrap_err()).1.auth_error.is_some());
        // Right credentials of another user: forbidden.
        let right = AuthData::Password(Password::new(other(), "pw2".into()));
        let err = uiaa.authenticate(Some(&right), &flows, "delete_device", Some(&ids[0])).await;
        assert!(matches!(err, Err(Error::Matrix { code: ErrorCode::Forbidden, .. })), "{err:?}");
    }

    #[tokio::test]
    async fn stages_completed_in_a_browser_count_for_their_user_only() {
        let (uiaa, _) = setup(None);
        let alice = ruma::user_id!("@alice:example.org");
        let flows = [vec![AuthType::Sso]];
        let (session, _) =
            session_of(uiaa.authenticate(None, &flows, "deactivate", Some(alice)).await.unwrap_err());
        let ack = AuthData::fallback_acknowledgement(session.clone());
        // Acknowledging before the browser finished gets the challenge again, without an error.
        let (_, info) =
            session_of(uiaa.authenticate(Some(&ack), &flows, "deactivate", Some(alice)).await.unwrap_err());
        assert!(info.auth_error.is_none() && info.completed.is_empty());
        let bob = ruma::user_id!("@bob:example.org");
        assert!(uiaa.complete_stage(&session, &AuthType::Sso, bob).await.is_err());
        assert!(uiaa.complete_stage(&session, &AuthType::Password, alice).await.is_err());
        assert_eq!(
            uiaa.session_info(&session).await.unwrap(),
            Some(("deactivate".into(), Some(alice.to_owned())))
        );
        uiaa.complete_stage(&session, &AuthType::Sso, alice).await.unwrap();
        uiaa.authenticate(Some(&ack), &flows, "deactivate", Some(alice)).await.unwrap();
    }

    #[tokio::test]
    async fn unknown_session_is_a_400() {
        let (uiaa, _) = setup(None);
        let mut dummy = Dummy::new();
        dummy.session = Some("nope".into());
        let err = uiaa
            .authenticate(Some(&AuthData::Dummy(dummy)), &[vec![AuthType::Dummy]], "register", None)
            .await;
        assert!(matches!(err, Err(Error::Matrix { code: ErrorCode::BadRequest, .. })));
    }
}
