//! Push rules (stored per user, starting from the spec's default set) and pushers.

use hearth_core::{Error, Homeserver, account_data::ruleset_json};
use ruma::{
    api::client::push::{
        PushRule, delete_pushrule, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};

use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
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

/// `GET /_matrix/client/v3/pushers`: pushers are registered with the push issue; until then
/// no user has any.
pub async fn get_pushers(
    _hs: Homeserver,
    req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    req.session()?;
    Ok(get_pushers::v3::Response::new(Vec::new()))
}
