//! Synapse's admin API on Hearth, as synapse-admin and moderation tools call it: accounts,
//! rooms (with deletion and purge), media quarantine and deletion, registration tokens, event
//! reports and rate-limit overrides, against the real server.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, SHARED_SECRET, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const ADMIN: &str = "/_synapse/admin";

async fn admin_of(server: &TestServer) -> Client {
    Client::register_with_secret(&server.base_url, SHARED_SECRET, "root", "rootpw", true).await
}

fn names(body: &Value, list: &str, field: &str) -> Vec<String> {
    body[list].as_array().unwrap().iter().map(|v| v[field].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn only_admins_get_in_and_server_version_needs_no_token() {
    let server = TestServer::start().await;
    let anon = server.client();
    let version = anon.get(&format!("{ADMIN}/v1/server_version")).await;
    assert!(version.assert_ok()["server_version"].as_str().unwrap().starts_with("Hearth "));
    anon.get(&format!("{ADMIN}/v2/users")).await.assert_error(401, "M_MISSING_TOKEN");
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    alice.get(&format!("{ADMIN}/v2/users")).await.assert_error(403, "M_FORBIDDEN");
    alice.get(&format!("{ADMIN}/v1/rooms")).await.assert_error(403, "M_FORBIDDEN");
    let root = admin_of(&server).await;
    root.get(&format!("{ADMIN}/v2/users?limit=-1")).await.assert_error(400, "M_INVALID_PARAM");
    root.get(&format!("{ADMIN}/v2/users?dir=x")).await.assert_error(400, "M_INVALID_PARAM");
    root.get(&format!("{ADMIN}/v2/users?guests=yes")).await.assert_error(400, "M_INVALID_PARAM");
    // A user may whois themselves.
    let whois = alice.get(&format!("{ADMIN}/v1/whois/@alice:localhost")).await;
    assert_eq!(whois.assert_ok()["user_id"], "@alice:localhost");
}

#[tokio::test]
async fn accounts_are_created_listed_changed_locked_and_deactivated() {
    let server = TestServer::start().await;
    let root = admin_of(&server).await;

    // Create (201), then modify (200).
    let path = format!("{ADMIN}/v2/users/@bob:localhost");
    let created = root.put(&path, json!({"password": "bobpw", "displayname": "Bob", "admin": false})).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    assert_eq!(created.body["displayname"], "Bob");
    assert_eq!(created.body["deactivated"], false);
    let bob = Client::login(&server.base_url, "bob", "bobpw").await;
    let changed = root.put(&path, json!({"displayname": "Robert", "user_type": "bot"})).await;
    assert_eq!(changed.assert_ok()["displayname"], "Robert");
    assert_eq!(changed.body["user_type"], "bot");
    root.put(&path, json!({"user_type": "wizard"})).await.assert_error(400, "M_UNKNOWN");
    root.put(&path, json!({"deactivated": true, "locked": true})).await.assert_error(400, "M_UNKNOWN");
    root.get(&format!("{ADMIN}/v2/users/@nobody:localhost")).await.assert_error(404, "M_NOT_FOUND");
    root.get(&format!("{ADMIN}/v2/users/@bob:elsewhere")).await.assert_error(400, "M_UNKNOWN");

    // The list: filters, order and pages.
    for name in ["carol", "dave", "erin"] {
        Client::register(&server.base_url, name, "pw").await;
    }
    let all = root.get(&format!("{ADMIN}/v2/users")).await;
    assert_eq!(all.assert_ok()["total"], 5);
    assert_eq!(names(&all.body, "users", "name")[0], "@bob:localhost", "by name");
    assert!(all.body["users"][0]["creation_ts"].as_u64().unwrap() > 1_600_000_000_000, "ms in the list");
    let page = root.get(&format!("{ADMIN}/v2/users?from=1&limit=2&dir=b")).await;
    assert_eq!(names(page.assert_ok(), "users", "name"), ["@erin:localhost", "@dave:localhost"]);
    assert_eq!(page.body["next_token"], "3");
    let by_name = root.get(&format!("{ADMIN}/v2/users?name=rob")).await;
    assert_eq!(names(by_name.assert_ok(), "users", "name"), ["@bob:localhost"], "display names match too");
    let admins = root.get(&format!("{ADMIN}/v2/users?admins=true")).await;
    assert_eq!(names(admins.assert_ok(), "users", "name"), ["@root:localhost"]);

    // Reset a password: the old one stops working, sessions end.
    root.post(&format!("{ADMIN}/v1/reset_password/@bob:localhost"), json!({"new_password": "newpw"}))
        .await
        .assert_ok();
    bob.get(&format!("{V3}/account/whoami")).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let bob = Client::login(&server.base_url, "bob", "newpw").await;

    // Lock: requests are refused with soft_logout, logging out still works, unlock restores.
    root.put(&path, json!({"locked": true})).await.assert_ok();
    let locked = bob.get(&format!("{V3}/account/whoami")).await;
    locked.assert_error(401, "M_USER_LOCKED");
    assert_eq!(locked.body["soft_logout"], true);
    let default_list = root.get(&format!("{ADMIN}/v2/users")).await;
    assert!(
        !names(&default_list.body, "users", "name").contains(&"@bob:localhost".to_owned()),
        "locked hidden"
    );
    root.put(&path, json!({"locked": false})).await.assert_ok();
    bob.get(&format!("{V3}/account/whoami")).await.assert_ok();

    // Admin flag, login as, devices.
    let flag = format!("{ADMIN}/v1/users/@carol:localhost/admin");
    root.put(&flag, json!({"admin": true})).await.assert_ok();
    assert_eq!(root.get(&flag).await.assert_ok()["admin"], true);
    root.put(&format!("{ADMIN}/v1/users/@root:localhost/admin"), json!({"admin": false}))
        .await
        .assert_error(400, "M_UNKNOWN");
    let puppet = root.post(&format!("{ADMIN}/v1/users/@dave:localhost/login"), json!({})).await;
    let dave = server.client().with_token(puppet.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(dave.get(&format!("{V3}/account/whoami")).await.assert_ok()["user_id"], "@dave:localhost");
    let devices = root.get(&format!("{ADMIN}/v2/users/@dave:localhost/devices")).await;
    assert_eq!(devices.assert_ok()["total"], 2);
    let device = devices.body["devices"][0]["device_id"].as_str().unwrap().to_owned();
    root.delete(&format!("{ADMIN}/v2/users/@dave:localhost/devices/{device}")).await.assert_ok();
    assert_eq!(root.get(&format!("{ADMIN}/v2/users/@dave:localhost/devices")).await.body["total"], 1);

    // Deactivate: the user leaves their rooms and can no longer log in.
    let room = bob.create_room(json!({"name": "Bob's"})).await;
    let joined = root.get(&format!("{ADMIN}/v1/users/@bob:localhost/joined_rooms")).await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([room]));
    let gone = root.post(&format!("{ADMIN}/v1/deactivate/@bob:localhost"), json!({"erase": true})).await;
    assert_eq!(gone.assert_ok()["id_server_unbind_result"], "success");
    assert_eq!(root.get(&format!("{ADMIN}/v1/users/@bob:localhost/joined_rooms")).await.body["total"], 0);
    let details = root.get(&path).await;
    assert_eq!(
        (details.body["deactivated"].clone(), details.body["erased"].clone()),
        (json!(true), json!(true))
    );
    let login = server
        .client()
        .post(&format!("{V3}/login"), json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "newpw"}))
        .await;
    assert_eq!(login.status.as_u16(), 403, "{}", login.body);
    let with_gone = root.get(&format!("{ADMIN}/v2/users?deactivated=true")).await;
    assert_eq!(with_gone.body["total"], 5);
    let only_gone = root.get(&format!("{ADMIN}/v3/users?deactivated=true")).await;
    assert_eq!(names(only_gone.assert_ok(), "users", "name"), ["@bob:localhost"]);
}

#[tokio::test]
async fn rooms_are_listed_blocked_and_deleted_with_purge() {
    let server = TestServer::start().await;
    let root = admin_of(&server).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let big = alice
        .create_room(json!({"name": "Big room", "preset": "public_chat", "room_alias_name": "big", "visibility": "public"}))
        .await;
    bob.post(&format!("{V3}/join/{big}"), json!({})).await.assert_ok();
    let small = alice.create_room(json!({"name": "Another"})).await;
    alice.send_text(&big, "t1", "hello").await;

    let list = root.get(&format!("{ADMIN}/v1/rooms")).await;
    assert_eq!(list.assert_ok()["total_rooms"], 2);
    assert_eq!(
        names(&list.body, "rooms", "room_id"),
        [small.clone(), big.clone()],
        "by name: Another, Big room"
    );
    let by_size = root.get(&format!("{ADMIN}/v1/rooms?order_by=joined_members")).await;
    assert_eq!(names(by_size.assert_ok(), "rooms", "room_id")[0], big, "largest first");
    let found = root.get(&format!("{ADMIN}/v1/rooms?search_term=BIG")).await;
    assert_eq!(names(found.assert_ok(), "rooms", "room_id"), vec![big.clone()]);
    root.get(&format!("{ADMIN}/v1/rooms?search_term=")).await.assert_error(400, "M_INVALID_PARAM");
    root.get(&format!("{ADMIN}/v1/rooms?order_by=colour")).await.assert_error(400, "M_INVALID_PARAM");
    let details = root.get(&format!("{ADMIN}/v1/rooms/{big}")).await;
    let d = details.assert_ok();
    assert_eq!(
        (d["name"].clone(), d["joined_members"].clone(), d["joined_local_members"].clone()),
        (json!("Big room"), json!(2), json!(2))
    );
    assert_eq!(
        (d["public"].clone(), d["creator"].clone(), d["canonical_alias"].clone()),
        (json!(true), json!("@alice:localhost"), json!("#big:localhost"))
    );
    let members = root.get(&format!("{ADMIN}/v1/rooms/{big}/members")).await;
    assert_eq!(members.assert_ok()["members"], json!(["@alice:localhost", "@bob:localhost"]));
    let state = root.get(&format!("{ADMIN}/v1/rooms/{big}/state?type=m.room.name")).await;
    assert_eq!(state.assert_ok()["state"][0]["content"]["name"], "Big room");
    root.get(&format!("{ADMIN}/v1/rooms/!nope:localhost")).await.assert_error(404, "M_NOT_FOUND");

    // Blocking stops local joins and invites.
    let block = format!("{ADMIN}/v1/rooms/{small}/block");
    assert_eq!(root.get(&block).await.assert_ok()["block"], false);
    root.put(&block, json!({"block": true})).await.assert_ok();
    assert_eq!(root.get(&block).await.body["user_id"], "@root:localhost");
    alice
        .post(&format!("{V3}/rooms/{small}/invite"), json!({"user_id": "@bob:localhost"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    root.put(&block, json!({"block": false})).await.assert_ok();

    // Delete (v2) with purge: members are out, the alias is gone, the room is no longer listed.
    let deleted = root
        .request(reqwest::Method::DELETE, &format!("{ADMIN}/v2/rooms/{big}"), Some(json!({"block": true})))
        .await;
    let delete_id = deleted.assert_ok()["delete_id"].as_str().unwrap().to_owned();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = root.get(&format!("{ADMIN}/v2/rooms/delete_status/{delete_id}")).await.assert_ok().clone();
        if status["status"] != "active" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "complete", "{status}");
    let kicked = status["shutdown_room"]["kicked_users"].as_array().unwrap().len();
    assert_eq!(kicked, 2);
    assert_eq!(status["shutdown_room"]["local_aliases"], json!(["#big:localhost"]));
    let by_room = root.get(&format!("{ADMIN}/v2/rooms/{big}/delete_status")).await;
    assert_eq!(by_room.assert_ok()["results"][0]["delete_id"], json!(delete_id));
    assert_eq!(root.get(&format!("{ADMIN}/v1/rooms")).await.body["total_rooms"], 1);
    root.get(&format!("{ADMIN}/v1/rooms/{big}")).await.assert_error(404, "M_NOT_FOUND");
    server
        .client()
        .get(&format!("{V3}/directory/room/%23big:localhost"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let sync = bob.get(&format!("{V3}/sync?timeout=0")).await;
    assert!(sync.assert_ok()["rooms"]["join"].get(&big).is_none(), "bob is out");
    bob.post(&format!("{V3}/join/{big}"), json!({})).await.assert_error(403, "M_FORBIDDEN");

    // Delete (v1) without purge answers with the result at once.
    let v1 = root
        .request(reqwest::Method::DELETE, &format!("{ADMIN}/v1/rooms/{small}"), Some(json!({"purge": false})))
        .await;
    assert_eq!(v1.assert_ok()["kicked_users"], json!(["@alice:localhost"]));
    root.request(reqwest::Method::DELETE, &format!("{ADMIN}/v1/rooms/{small}"), None)
        .await
        .assert_error(400, "M_NOT_JSON");
}

#[tokio::test]
async fn media_is_listed_quarantined_protected_and_deleted() {
    let server = TestServer::start().await;
    let root = admin_of(&server).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let upload = |body: &'static str| {
        let (http, url, token) = (
            reqwest::Client::new(),
            format!("{}/_matrix/media/v3/upload", server.base_url),
            alice.access_token.clone().unwrap(),
        );
        async move {
            let reply = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .unwrap();
            Client::reply(reply).await.assert_ok()["content_uri"].as_str().unwrap().to_owned()
        }
    };
    let first = upload("one").await;
    let same = upload("one").await;
    let other = upload("two").await;
    let id = |uri: &str| uri.rsplit('/').next().unwrap().to_owned();
    let download = |uri: String| {
        let client = alice.clone();
        async move {
            client
                .get(&format!("/_matrix/client/v1/media/download/{}", uri.trim_start_matches("mxc://")))
                .await
        }
    };

    let listed = root.get(&format!("{ADMIN}/v1/users/@alice:localhost/media")).await;
    assert_eq!(listed.assert_ok()["total"], 3);
    assert_eq!(listed.body["media"][0]["media_id"], json!(id(&other)), "newest first");
    let room = alice.create_room(json!({})).await;
    let msg = json!({"msgtype": "m.image", "body": "pic", "url": first});
    alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/img"), msg).await.assert_ok();
    let in_room = root.get(&format!("{ADMIN}/v1/room/{room}/media")).await;
    assert_eq!(in_room.assert_ok()["local"], json!([first]));

    // Quarantine: the item and its twin (same content) are served to nobody.
    root.post(&format!("{ADMIN}/v1/media/quarantine/localhost/{}", id(&first)), json!({})).await.assert_ok();
    download(first.clone()).await.assert_error(404, "M_NOT_FOUND");
    download(same.clone()).await.assert_error(404, "M_NOT_FOUND");
    download(other.clone()).await.assert_ok();
    let info = root.get(&format!("{ADMIN}/v1/media/localhost/{}", id(&first))).await;
    assert_eq!(info.assert_ok()["media_info"]["quarantined_by"], "@root:localhost");
    root.post(&format!("{ADMIN}/v1/media/unquarantine/localhost/{}", id(&first)), json!({}))
        .await
        .assert_ok();
    assert_eq!(download(same.clone()).await.status.as_u16(), 200);

    // Protected media survives quarantine and bulk deletion.
    root.post(&format!("{ADMIN}/v1/media/protect/{}", id(&other)), json!({})).await.assert_ok();
    let q = root.post(&format!("{ADMIN}/v1/user/@alice:localhost/media/quarantine"), json!({})).await;
    assert_eq!(q.assert_ok()["num_quarantined"], 2);
    download(other.clone()).await.assert_ok();
    root.post(&format!("{ADMIN}/v1/media/unquarantine/localhost/{}", id(&first)), json!({}))
        .await
        .assert_ok();
    root.post(&format!("{ADMIN}/v1/media/protect/nope"), json!({})).await.assert_error(404, "M_NOT_FOUND");

    // Deletion one by one, then by date.
    let one = root.delete(&format!("{ADMIN}/v1/media/localhost/{}", id(&same))).await;
    assert_eq!(one.assert_ok()["deleted_media"], json!([id(&same)]));
    download(same).await.assert_error(404, "M_NOT_FOUND");
    download(first.clone()).await.assert_ok();
    let now = hearth_core::util::now_ms() + 1000;
    root.post(&format!("{ADMIN}/v1/media/delete"), json!({})).await.assert_error(400, "M_MISSING_PARAM");
    root.post(&format!("{ADMIN}/v1/media/delete?before_ts=1700"), json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let bulk = root.post(&format!("{ADMIN}/v1/media/localhost/delete?before_ts={now}"), json!({})).await;
    assert_eq!(bulk.assert_ok()["deleted_media"], json!([id(&first)]), "the protected item stays");
    download(first).await.assert_error(404, "M_NOT_FOUND");
    download(other).await.assert_ok();
}

#[tokio::test]
async fn registration_tokens_admit_as_many_registrations_as_they_allow() {
    let server = TestServer::start_with(|c| c.registration.requires_token = true).await;
    let root = admin_of(&server).await;
    let tokens = format!("{ADMIN}/v1/registration_tokens");
    let made = root.post(&format!("{tokens}/new"), json!({"uses_allowed": 1})).await;
    let token = made.assert_ok()["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 16);
    assert_eq!((made.body["pending"].clone(), made.body["completed"].clone()), (json!(0), json!(0)));
    root.post(&format!("{tokens}/new"), json!({"token": "bad token"}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    root.post(&format!("{tokens}/new"), json!({"expiry_time": 5})).await.assert_error(400, "M_INVALID_PARAM");
    let validity = format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}");
    assert_eq!(server.client().get(&validity).await.assert_ok()["valid"], true);

    let register = |user: &'static str| {
        let anon = server.client();
        let token = token.clone();
        async move {
            let body = json!({"username": user, "password": "pw"});
            let challenge = anon.post(&format!("{V3}/register"), body.clone()).await;
            let session = challenge.body["session"].as_str().unwrap().to_owned();
            let mut body = body;
            body["auth"] = json!({"type": "m.login.registration_token", "token": token, "session": session});
            anon.post(&format!("{V3}/register"), body).await
        }
    };
    register("first").await.assert_ok();
    let second = register("second").await;
    assert_eq!(second.status.as_u16(), 401, "the one use is spent: {}", second.body);
    let listed = root.get(&format!("{tokens}?valid=false")).await;
    assert_eq!(listed.assert_ok()["registration_tokens"][0]["completed"], 1);
    assert_eq!(server.client().get(&validity).await.assert_ok()["valid"], false);
    let raised = root.put(&format!("{tokens}/{token}"), json!({"uses_allowed": null})).await;
    assert_eq!(raised.assert_ok()["uses_allowed"], Value::Null);
    register("second").await.assert_ok();
    root.delete(&format!("{tokens}/{token}")).await.assert_ok();
    root.get(&format!("{tokens}/{token}")).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn event_reports_and_rate_limit_overrides() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.message = hearth_core::config::RateLimit { per_second: 0.001, burst_count: 2 };
    })
    .await;
    let root = admin_of(&server).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"name": "Reported"})).await;
    let event = alice.send_text(&room, "t1", "spam").await;
    alice.post(&format!("{V3}/rooms/{room}/report/{event}"), json!({"reason": "test"})).await.assert_ok();
    let reports = root.get(&format!("{ADMIN}/v1/event_reports")).await;
    assert_eq!(reports.assert_ok()["total"], 1);
    let report = &reports.body["event_reports"][0];
    assert_eq!(
        (report["sender"].clone(), report["name"].clone(), report["reason"].clone()),
        (json!("@alice:localhost"), json!("Reported"), json!("test"))
    );
    let id = report["id"].as_u64().unwrap();
    let one = root.get(&format!("{ADMIN}/v1/event_reports/{id}")).await;
    assert_eq!(one.assert_ok()["event_json"]["content"]["body"], "spam");
    root.delete(&format!("{ADMIN}/v1/event_reports/{id}")).await.assert_ok();
    root.get(&format!("{ADMIN}/v1/event_reports/{id}")).await.assert_error(404, "M_NOT_FOUND");
    root.get(&format!("{ADMIN}/v1/event_reports/x")).await.assert_error(400, "M_INVALID_PARAM");

    // Alice spent her burst of two (the room and a message); an override of zero lifts it.
    alice
        .put(&format!("{V3}/rooms/{room}/send/m.room.message/t2"), json!({"msgtype": "m.text", "body": "x"}))
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    let limit = format!("{ADMIN}/v1/users/@alice:localhost/override_ratelimit");
    assert_eq!(root.get(&limit).await.assert_ok(), &json!({}));
    let set = root.post(&limit, json!({"messages_per_second": 0, "burst_count": 0})).await;
    assert_eq!(set.assert_ok(), &json!({"messages_per_second": 0, "burst_count": 0}));
    for i in 0..5 {
        alice.send_text(&room, &format!("free{i}"), "unlimited").await;
    }
    root.post(&limit, json!({"messages_per_second": -1})).await.assert_error(400, "M_INVALID_PARAM");
    root.delete(&limit).await.assert_ok();
    assert_eq!(root.get(&limit).await.assert_ok(), &json!({}));
}

#[tokio::test]
async fn federation_destinations_show_their_backoff_and_can_be_reset() {
    let (a, b) = TestServer::federating_pair().await;
    let root = admin_of(&a).await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}?via=hs-a.test"), json!({})).await.assert_ok();
    alice.send_text(&room, "t1", "delivered").await;
    bob.wait_for_bodies(&room, &["delivered"]).await;

    let list = root.get(&format!("{ADMIN}/v1/federation/destinations")).await;
    assert_eq!(names(list.assert_ok(), "destinations", "destination"), ["hs-b.test"]);
    assert_eq!(list.body["destinations"][0]["retry_last_ts"], 0);
    let rooms = root.get(&format!("{ADMIN}/v1/federation/destinations/hs-b.test/rooms")).await;
    assert_eq!(rooms.assert_ok()["rooms"][0]["room_id"], json!(room));
    let reset = format!("{ADMIN}/v1/federation/destinations/hs-b.test/reset_connection");
    root.post(&reset, json!({})).await.assert_error(400, "M_UNKNOWN");
    root.get(&format!("{ADMIN}/v1/federation/destinations/hs-c.test")).await.assert_error(404, "M_NOT_FOUND");

    // B goes away: deliveries fail and the destination backs off, until an admin resets it.
    drop(b.stop().await);
    alice.send_text(&room, "t2", "queued").await;
    let mut backing_off = Value::Null;
    for _ in 0..100 {
        let one = root.get(&format!("{ADMIN}/v1/federation/destinations/hs-b.test")).await;
        if one.body["retry_last_ts"].as_u64().unwrap_or(0) > 0 {
            backing_off = one.body.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(backing_off["failure_ts"].as_u64().is_some(), "{backing_off}");
    assert!(backing_off["retry_interval"].as_u64().unwrap() >= 1000);
    root.post(&reset, json!({})).await.assert_ok();
    let status = root.get(&format!("{ADMIN}/v1/background_updates/status")).await;
    assert_eq!(status.assert_ok(), &json!({"enabled": true, "current_updates": {}}));
}

#[tokio::test]
async fn a_shadow_banned_user_is_answered_but_nothing_reaches_the_room() {
    let server = TestServer::start().await;
    let root = admin_of(&server).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let mallory = Client::register(&server.base_url, "mallory", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    mallory.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let ban = format!("{ADMIN}/v1/users/@mallory:localhost/shadow_ban");
    root.post(&ban, json!({})).await.assert_ok();
    assert_eq!(root.get(&format!("{ADMIN}/v2/users/@mallory:localhost")).await.body["shadow_banned"], true);
    let fake = mallory.send_text(&room, "s1", "spam").await;
    mallory.put(&format!("{V3}/rooms/{room}/state/m.room.topic"), json!({"topic": "spam"})).await.assert_ok();
    mallory
        .post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@alice:localhost"}))
        .await
        .assert_ok();
    alice.get(&format!("{V3}/rooms/{room}/event/{fake}")).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await.assert_error(404, "M_NOT_FOUND");
    root.delete(&ban).await.assert_ok();
    let real = mallory.send_text(&room, "s2", "hello").await;
    alice.get(&format!("{V3}/rooms/{room}/event/{real}")).await.assert_ok();
}

#[tokio::test]
async fn server_notices_arrive_in_a_tagged_room_of_their_own() {
    let off = TestServer::start().await;
    let notice = json!({"user_id": "@alice:localhost", "content": {"msgtype": "m.text", "body": "hello"}});
    admin_of(&off)
        .await
        .post(&format!("{ADMIN}/v1/send_server_notice"), notice.clone())
        .await
        .assert_error(400, "M_UNKNOWN");

    let server = TestServer::start_with(|c| {
        c.server_notices.system_user_localpart = Some("notices".into());
        c.server_notices.system_user_displayname = Some("Server".into());
    })
    .await;
    let root = admin_of(&server).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let path = format!("{ADMIN}/v1/send_server_notice");
    let first = root.post(&path, notice.clone()).await.assert_ok()["event_id"].clone();
    let sync = alice
        .sync_until(None, "the notice invite", |b| {
            b["rooms"]["invite"].as_object().is_some_and(|r| !r.is_empty())
        })
        .await;
    let (room, invite) = sync["rooms"]["invite"].as_object().unwrap().iter().next().unwrap();
    let room = room.clone();
    let name = invite["invite_state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap();
    assert_eq!(name["content"]["name"], "Server Notices");
    let tags = alice.get(&format!("{V3}/user/@alice:localhost/rooms/{room}/tags")).await;
    assert!(tags.assert_ok()["tags"]["m.server_notice"].is_object(), "{}", tags.body);
    alice.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();

    // The next notices go to the same room; a retried PUT is answered with its first event.
    let put = format!("{ADMIN}/v1/send_server_notice/n1");
    let second = root.put(&put, notice.clone()).await.assert_ok()["event_id"].clone();
    assert_eq!(root.put(&put, notice.clone()).await.assert_ok()["event_id"], second);
    let bodies = alice.wait_for_bodies(&room, &["hello"]).await;
    assert!(!bodies.is_empty());
    let messages = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await;
    let ids: Vec<&Value> = messages.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| &e["event_id"])
        .collect();
    assert_eq!(ids, [&second, &first]);
    let sender = &messages.body["chunk"][0]["sender"];
    assert_eq!(sender, "@notices:localhost");

    let nobody = json!({"user_id": "@nobody:localhost", "content": {"body": "x"}});
    root.post(&path, nobody).await.assert_error(404, "M_NOT_FOUND");
    let remote = json!({"user_id": "@bob:elsewhere", "content": {"body": "x"}});
    root.post(&path, remote).await.assert_error(400, "M_UNKNOWN");
}
