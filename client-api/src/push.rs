//! Push rules (stored per user, starting from the spec's default set) and pushers.

use hearth_core::{Error, Homeserver, account_data::ruleset_json, push as core_push};
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::push::{
        PushRule, delete_pushrule,
        get_notifications::{self, v3::Notification},
        get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
        get_pushrules_global_scope,
        set_pusher::{self, v3::PusherAction},
        set_pushrule, set_pushrule_actions, set_pushrule_enabled,
    },
    push::{Action, InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};

use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
    room::raw,
    sso::{Page, esc, page},
};

fn rule_not_found() -> Error {
    Error::not_found("Unknown push rule")
}

fn find(rules: &Ruleset, kind: &RuleKind, rule_id: &str) -> Result<PushRule, Error> {
    rules.get(kind.clone(), rule_id).map(PushRule::from).ok_or_else(rule_not_found)
}

/// `GET /_matrix/client/v3/pushrules/`: every kind present, even when empty.
pub async fn get_pushrules_all(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_pushrules_all::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?;
    let rules = ruleset_json(&hs.account_data.push_rules(&session.user_id)?)?;
    Ok(Json(json!({ "global": rules })))
}

/// `GET /_matrix/client/v3/pushrules/global/`
pub async fn get_pushrules_global_scope(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_pushrules_global_scope::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?;
    Ok(Json(ruleset_json(&hs.account_data.push_rules(&session.user_id)?)?))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn get_pushrule(
    hs: Homeserver,
    req: Ruma<get_pushrule::v3::Request>,
) -> ApiResult<get_pushrule::v3::Response> {
    let session = req.session()?;
    let rules = hs.account_data.push_rules(&session.user_id)?;
    Ok(get_pushrule::v3::Response::new(find(&rules, &req.body.kind, &req.body.rule_id)?))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn set_pushrule(
    hs: Homeserver,
    req: Ruma<set_pushrule::v3::Request>,
) -> ApiResult<set_pushrule::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let mut rules = hs.account_data.push_rules(&session.user_id)?;
    rules.insert(b.rule, b.after.as_deref(), b.before.as_deref()).map_err(|e| match e {
        InsertPushRuleError::UnknownRuleId => Error::not_found("`before` or `after` names an unknown rule"),
        other => Error::bad_json(other.to_string()),
    })?;
    hs.account_data.set_push_rules(&session.user_id, &rules).await?;
    Ok(set_pushrule::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn delete_pushrule(
    hs: Homeserver,
    req: Ruma<delete_pushrule::v3::Request>,
) -> ApiResult<delete_pushrule::v3::Response> {
    let session = req.session()?.clone();
    let mut rules = hs.account_data.push_rules(&session.user_id)?;
    rules.remove(req.body.kind.clone(), &req.body.rule_id).map_err(|e| match e {
        RemovePushRuleError::NotFound => rule_not_found(),
        other => Error::bad_json(other.to_string()),
    })?;
    hs.account_data.set_push_rules(&session.user_id, &rules).await?;
    Ok(delete_pushrule::v3::Response::new())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn get_pushrule_enabled(
    hs: Homeserver,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let session = req.session()?;
    let rules = hs.account_data.push_rules(&session.user_id)?;
    Ok(get_pushrule_enabled::v3::Response::new(find(&rules, &req.body.kind, &req.body.rule_id)?.enabled))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn set_pushrule_enabled(
    hs: Homeserver,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let mut rules = hs.account_data.push_rules(&session.user_id)?;
    rules.set_enabled(b.kind, &b.rule_id, b.enabled).map_err(|_| rule_not_found())?;
    hs.account_data.set_push_rules(&session.user_id, &rules).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn get_pushrule_actions(
    hs: Homeserver,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let session = req.session()?;
    let rules = hs.account_data.push_rules(&session.user_id)?;
    Ok(get_pushrule_actions::v3::Response::new(find(&rules, &req.body.kind, &req.body.rule_id)?.actions))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn set_pushrule_actions(
    hs: Homeserver,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let mut rules = hs.account_data.push_rules(&session.user_id)?;
    rules.set_actions(b.kind, &b.rule_id, b.actions).map_err(|_| rule_not_found())?;
    hs.account_data.set_push_rules(&session.user_id, &rules).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

/// `GET /_matrix/client/v3/pushers`
pub async fn get_pushers(
    hs: Homeserver,
    req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    let session = req.session()?;
    Ok(get_pushers::v3::Response::new(hs.pushers(&session.user_id)?))
}

/// `POST /_matrix/client/v3/pushers/set`: create, replace or (with `kind: null`) delete.
pub async fn set_pusher(
    hs: Homeserver,
    req: Ruma<set_pusher::v3::Request>,
) -> ApiResult<set_pusher::v3::Response> {
    let session = req.session()?.clone();
    match req.body.action {
        PusherAction::Post(post) => {
            hs.set_pusher(&session.user_id, session.device_id.as_deref(), post.pusher, post.append).await?;
        }
        PusherAction::Delete(ids) => hs.delete_pusher(&session.user_id, &ids.app_id, &ids.pushkey).await?,
        _ => return Err(Error::invalid_param("unknown pusher action").into()),
    }
    Ok(set_pusher::v3::Response::new())
}

/// `GET /_matrix/client/unstable/io.hearth/push/unsubscribe`: the link in notification e-mails,
/// which works without logging in (the server signed it for one pusher).
pub async fn unsubscribe(hs: Homeserver, req: Ruma<Unsubscribe>) -> ApiResult<Page> {
    let b = req.body;
    let user = ruma::UserId::parse(&b.user_id).map_err(|_| Error::invalid_param("Invalid user_id"))?;
    hs.unsubscribe(&user, &b.app_id, &b.pushkey, &b.token).await?;
    Ok(Page::Html {
        body: page(
            "Unsubscribed",
            &format!("<p>{} will no longer receive these e-mails.</p>", esc(&b.pushkey)),
        ),
    })
}

/// Hearth's own endpoint, declared against ruma's endpoint traits like the single sign-on
/// pages.
mod endpoint {
    use hearth_core::push::mail::UNSUBSCRIBE_PATH;
    use ruma::api::{
        IncomingRequest, Metadata,
        auth_scheme::NoAuthentication,
        error::{DeserializationError, Error as MatrixError},
        path_builder::SinglePath,
    };

    use crate::sso::{Page, param, query};

    /// `GET ...?user_id=&app_id=&pushkey=&token=`
    pub struct Unsubscribe {
        pub user_id: String,
        pub app_id: String,
        pub pushkey: String,
        pub token: String,
    }

    impl Metadata for Unsubscribe {
        const METHOD: http::Method = http::Method::GET;
        const RATE_LIMITED: bool = true;
        type Authentication = NoAuthentication;
        type PathBuilder = SinglePath;
        const PATH_BUILDER: SinglePath = SinglePath::new(UNSUBSCRIBE_PATH);
    }

    impl IncomingRequest for Unsubscribe {
        type EndpointError = MatrixError;
        type OutgoingResponse = Page;

        fn try_from_http_request_inner(
            request: http::Request<&[u8]>,
            _path_args: &[&str],
        ) -> Result<Self, DeserializationError> {
            let pairs = query(&request);
            let get = |name| param(&pairs, name).unwrap_or_default();
            Ok(Self {
                user_id: get("user_id"),
                app_id: get("app_id"),
                pushkey: get("pushkey"),
                token: get("token"),
            })
        }
    }
}

pub use endpoint::Unsubscribe;

/// The most notifications one page holds.
const MAX_NOTIFICATIONS: usize = 100;

/// `GET /_matrix/client/v3/notifications`: newest first; `next_token` continues below the page.
pub async fn get_notifications(
    hs: Homeserver,
    req: Ruma<get_notifications::v3::Request>,
) -> ApiResult<get_notifications::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let from = match b.from.as_deref() {
        None | Some("") => None,
        Some(token) => Some(token.parse::<u64>().map_err(|_| Error::invalid_param("Invalid from token"))?),
    };
    let limit = b.limit.map_or(20, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_NOTIFICATIONS));
    let limit = limit.clamp(1, MAX_NOTIFICATIONS);
    let only_highlight = b.only.as_deref() == Some("highlight");
    let user = session.user_id;
    let (page, next) = core_push::notifications(&hs.db, &user, from, limit, only_highlight)?;
    let mut notifications = Vec::with_capacity(page.len());
    for n in page {
        let Some(record) = hs.rooms.pdu_record(&n.record.event_id)? else {
            tracing::warn!(event_id = %n.record.event_id, "a notification's event is gone; skipped");
            continue;
        };
        let event = hs.rooms.client_event(&n.record.event_id, &record, &user, None)?;
        let actions: Vec<Action> = match serde_json::from_value(n.record.actions) {
            Ok(actions) => actions,
            Err(error) => {
                tracing::warn!(%error, "stored notification actions do not parse; skipped");
                continue;
            }
        };
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(n.record.ts).unwrap_or_default());
        notifications.push(Notification::new(actions, raw(&event)?, n.read, n.record.room_id, ts));
    }
    let mut response = get_notifications::v3::Response::new(notifications);
    response.next_token = next.map(|pos| pos.to_string());
    Ok(response)
}
