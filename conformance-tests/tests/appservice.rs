//! Application services against the real server: a stand-in bridge registered by YAML gets
//! the events and ephemeral data that concern it in transactions, in order and exactly once
//! across its own downtime and a restart of Hearth; its token acts as its users and no one
//! else; its namespaces are its own; and it is pinged, asked about users and aliases it may
//! create, and consulted for third-party protocols.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{
    Client, TestServer,
    appservice::{StandInAppservice, registration_yaml},
};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// A server with the services whose registration files are given, kept in `dir`.
async fn server_with(dir: &tempfile::TempDir, files: &[(&str, String)]) -> TestServer {
    let paths: Vec<_> = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    TestServer::start_with(|c| {
        c.storage.sync_writes = false;
        c.appservice.registration_files = paths;
    })
    .await
}

fn service(server: &TestServer, id: &str) -> Client {
    server.client().with_token(&format!("{id}-as-token"))
}

async fn register_ghost(bridge: &Client, localpart: &str) -> hearth_conformance_tests::client::Reply {
    bridge
        .post(
            &format!("{V3}/register"),
            json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}),
        )
        .await
}

#[tokio::test]
async fn the_as_token_acts_as_the_services_users_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(&dir, &[("mau.yaml", registration_yaml("mau", None, "localhost", ""))]).await;
    let bridge = service(&server, "mau");
    let alice = Client::register(&server.base_url, "alice", "pw").await;

    // The service's own user exists from the start; no device unless one is named.
    let me = bridge.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(me.assert_ok()["user_id"], "@maubot:localhost");
    assert!(me.body.get("device_id").is_none(), "{}", me.body);

    // A namespaced user must be registered before the service acts as it.
    let ghost = format!("{V3}/account/whoami?user_id=@mau_alice:localhost");
    bridge.get(&ghost).await.assert_error(403, "M_FORBIDDEN");
    register_ghost(&bridge, "mau_alice").await.assert_ok();
    assert_eq!(bridge.get(&ghost).await.assert_ok()["user_id"], "@mau_alice:localhost");
    register_ghost(&bridge, "mau_alice").await.assert_error(400, "M_USER_IN_USE");

    // Outside the namespace, or another server's user: refused.
    bridge
        .get(&format!("{V3}/account/whoami?user_id=@alice:localhost"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bridge
        .get(&format!("{V3}/account/whoami?user_id=@mau_x:elsewhere"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    register_ghost(&bridge, "alicia").await.assert_error(400, "M_EXCLUSIVE");

    // Wrong and missing tokens.
    let wrong = server.client().with_token("not-a-token");
    wrong.get(&format!("{V3}/account/whoami")).await.assert_error(401, "M_UNKNOWN_TOKEN");
    register_ghost(&wrong, "mau_bob").await.assert_error(401, "M_UNKNOWN_TOKEN");
    register_ghost(&server.client(), "mau_bob").await.assert_error(401, "M_MISSING_TOKEN");
    // A user's own token is not a service's.
    register_ghost(&alice, "mau_bob").await.assert_error(401, "M_UNKNOWN_TOKEN");

    // Devices: a service creates them for its users and acts on them by name (MSC4190).
    let with_device = format!("{V3}/account/whoami?user_id=@mau_alice:localhost&device_id=BRIDGEDEV");
    bridge.get(&with_device).await.assert_error(400, "M_UNKNOWN_DEVICE");
    bridge
        .put(
            &format!("{V3}/devices/BRIDGEDEV?user_id=@mau_alice:localhost"),
            json!({"display_name": "bridge"}),
        )
        .await
        .assert_ok();
    assert_eq!(bridge.get(&with_device).await.assert_ok()["device_id"], "BRIDGEDEV");
    bridge
        .post(&format!("{V3}/delete_devices?user_id=@mau_alice:localhost"), json!({"devices": ["BRIDGEDEV"]}))
        .await
        .assert_ok();
    bridge.get(&with_device).await.assert_error(400, "M_UNKNOWN_DEVICE");

    // Login as a namespaced user, and nobody else.
    let login = |user: &str| json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": user}});
    let session = bridge.post(&format!("{V3}/login"), login("mau_alice")).await;
    let token = session.assert_ok()["access_token"].as_str().unwrap().to_owned();
    let ghost_client = server.client().with_token(&token);
    assert_eq!(
        ghost_client.get(&format!("{V3}/account/whoami")).await.assert_ok()["user_id"],
        "@mau_alice:localhost"
    );
    bridge.post(&format!("{V3}/login"), login("alice")).await.assert_error(400, "M_EXCLUSIVE");
    server
        .client()
        .post(&format!("{V3}/login"), login("mau_alice"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let flows = server.client().get(&format!("{V3}/login")).await;
    assert!(
        flows.assert_ok()["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.application_service")
    );

    // Timestamps: a service keeps the bridged event's time; anyone else's `ts` is ignored.
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let ghost_join = format!("{V3}/join/{room}?user_id=@mau_alice:localhost");
    bridge.post(&ghost_join, json!({})).await.assert_ok();
    let sent = bridge
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t1?user_id=@mau_alice:localhost&ts=1000"),
            json!({"msgtype": "m.text", "body": "from the past"}),
        )
        .await;
    let event_id = sent.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let event = alice.get(&format!("{V3}/rooms/{room}/event/{event_id}")).await;
    assert_eq!(event.assert_ok()["origin_server_ts"], 1000);
    assert_eq!(event.body["sender"], "@mau_alice:localhost");
    let own = alice
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t2?ts=1000"),
            json!({"msgtype": "m.text", "body": "now"}),
        )
        .await;
    let own_id = own.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let own_event = alice.get(&format!("{V3}/rooms/{room}/event/{own_id}")).await;
    assert!(own_event.assert_ok()["origin_server_ts"].as_u64().unwrap() > 1_000_000);
    bridge
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t3?user_id=@mau_alice:localhost&ts=soon"),
            json!({"msgtype": "m.text", "body": "x"}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn exclusive_namespaces_belong_to_their_service() {
    let dir = tempfile::tempdir().unwrap();
    // A second service claims every alias, but not exclusively.
    let broad = "id: broad\nurl: null\nas_token: broad-as-token\nhs_token: broad-hs-token\n\
                 sender_localpart: broadbot\nnamespaces:\n  aliases:\n    - exclusive: false\n      regex: '#.*'\n";
    let files =
        [("mau.yaml", registration_yaml("mau", None, "localhost", "")), ("broad.yaml", broad.to_owned())];
    let server = server_with(&dir, &files).await;
    let bridge = service(&server, "mau");
    let alice = Client::register(&server.base_url, "alice", "pw").await;

    // Users: nobody else registers a name in the namespace, nor is told it is available.
    let taken = server
        .client()
        .post(
            &format!("{V3}/register"),
            json!({"username": "mau_eve", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    taken.assert_error(400, "M_EXCLUSIVE");
    server
        .client()
        .get(&format!("{V3}/register/available?username=mau_eve"))
        .await
        .assert_error(400, "M_EXCLUSIVE");

    // Aliases: nobody else creates one in the namespace, with a room or on its own.
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let alias = "%23mau_chat:localhost";
    alice
        .put(&format!("{V3}/directory/room/{alias}"), json!({"room_id": room}))
        .await
        .assert_error(400, "M_EXCLUSIVE");
    let rooms_before = alice.get(&format!("{V3}/joined_rooms")).await.assert_ok()["joined_rooms"].clone();
    alice
        .post(&format!("{V3}/createRoom"), json!({"room_alias_name": "mau_chat"}))
        .await
        .assert_error(400, "M_EXCLUSIVE");
    // Refused before the room was made, so no orphan room is left behind.
    assert_eq!(alice.get(&format!("{V3}/joined_rooms")).await.assert_ok()["joined_rooms"], rooms_before);

    // The user directory leaves the service's users to it.
    register_ghost(&bridge, "mau_dora").await.assert_ok();
    bridge.post(&format!("{V3}/join/{room}?user_id=@mau_dora:localhost"), json!({})).await.assert_ok();
    let found = alice.post(&format!("{V3}/user_directory/search"), json!({"search_term": "dora"})).await;
    assert_eq!(found.assert_ok()["results"], json!([]));

    // The service gives aliases of its namespace to any room, and removes them, but no others.
    bridge.put(&format!("{V3}/directory/room/{alias}"), json!({"room_id": room})).await.assert_ok();
    assert_eq!(
        alice.get(&format!("{V3}/directory/room/{alias}")).await.assert_ok()["room_id"],
        room.as_str()
    );
    alice.delete(&format!("{V3}/directory/room/{alias}")).await.assert_error(400, "M_EXCLUSIVE");
    // Not even another service whose own namespace is broad enough touches them.
    let other = service(&server, "broad");
    other.delete(&format!("{V3}/directory/room/{alias}")).await.assert_error(400, "M_EXCLUSIVE");
    other
        .put(&format!("{V3}/directory/room/%23mau_other:localhost"), json!({"room_id": room}))
        .await
        .assert_error(400, "M_EXCLUSIVE");
    other
        .put(&format!("{V3}/directory/room/%23broad_own:localhost"), json!({"room_id": room}))
        .await
        .assert_ok();
    bridge.delete(&format!("{V3}/directory/room/{alias}")).await.assert_ok();
    bridge
        .put(&format!("{V3}/directory/room/%23other:localhost"), json!({"room_id": room}))
        .await
        .assert_error(400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn pings_queries_and_third_party_protocols_reach_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = StandInAppservice::start().await;
    let files = [
        ("mau.yaml", registration_yaml("mau", Some(&stand_in.url), "localhost", "protocols: [gopher]\n")),
        ("quiet.yaml", registration_yaml("quiet", None, "localhost", "")),
        // Nothing listens on port 1 of loopback.
        ("gone.yaml", registration_yaml("gone", Some("http://127.0.0.1:1"), "localhost", "")),
    ];
    let server = server_with(&dir, &files).await;
    stand_in.act_on(&server.base_url, "mau-as-token");
    let bridge = service(&server, "mau");
    let alice = Client::register(&server.base_url, "alice", "pw").await;

    // Ping (MSC2659): the service answers with the transaction ID it was given.
    let ping = "/_matrix/client/v1/appservice/mau/ping";
    let pong = bridge.post(ping, json!({"transaction_id": "ping-1"})).await;
    assert!(pong.assert_ok()["duration_ms"].is_u64());
    assert_eq!(stand_in.pings(), [json!({"transaction_id": "ping-1"})]);
    service(&server, "quiet").post(ping, json!({})).await.assert_error(403, "M_FORBIDDEN");
    alice.post(ping, json!({})).await.assert_error(403, "M_FORBIDDEN");
    service(&server, "quiet")
        .post("/_matrix/client/v1/appservice/quiet/ping", json!({}))
        .await
        .assert_error(400, "M_URL_NOT_SET");
    service(&server, "gone")
        .post("/_matrix/client/v1/appservice/gone/ping", json!({}))
        .await
        .assert_error(502, "M_CONNECTION_FAILED");
    stand_in.set_down(true);
    let bad = bridge.post(ping, json!({})).await;
    bad.assert_error(502, "M_BAD_STATUS");
    assert_eq!(bad.body["status"], 503);
    stand_in.set_down(false);

    // A user or an alias nobody has yet is asked of the service, which may create it.
    let profile = alice.get(&format!("{V3}/profile/@mau_auto_carol:localhost")).await;
    assert_eq!(profile.assert_ok()["displayname"], "mau_auto_carol");
    alice.get(&format!("{V3}/profile/@mau_nobody:localhost")).await.assert_error(404, "M_NOT_FOUND");
    let found = alice.get(&format!("{V3}/directory/room/%23mau_auto_lobby:localhost")).await;
    let lobby = found.assert_ok()["room_id"].as_str().unwrap().to_owned();
    alice.post(&format!("{V3}/join/%23mau_auto_lobby:localhost"), json!({})).await.assert_ok();
    assert!(
        alice.get(&format!("{V3}/joined_rooms")).await.body["joined_rooms"]
            .as_array()
            .unwrap()
            .contains(&json!(lobby))
    );
    alice.get(&format!("{V3}/directory/room/%23mau_none:localhost")).await.assert_error(404, "M_NOT_FOUND");

    // Third-party protocols are the services' own descriptions, each instance named after its
    // service; lookups keep only well-formed answers.
    let protocols = alice.get(&format!("{V3}/thirdparty/protocols")).await;
    let gopher = &protocols.assert_ok()["gopher"];
    assert_eq!(gopher["user_fields"], json!(["nick"]));
    assert_eq!(gopher["instances"][0]["instance_id"], "mau|gophernet");
    assert_eq!(
        alice.get(&format!("{V3}/thirdparty/protocol/gopher")).await.assert_ok()["icon"],
        "mxc://example.org/gopher"
    );
    alice.get(&format!("{V3}/thirdparty/protocol/irc")).await.assert_error(404, "M_NOT_FOUND");
    let users = alice.get(&format!("{V3}/thirdparty/user/gopher?nick=bob")).await;
    assert_eq!(
        users.assert_ok(),
        &json!([{"userid": "@gopher_bob:example.org", "protocol": "gopher", "fields": {"nick": "bob"}}])
    );
    assert_eq!(alice.get(&format!("{V3}/thirdparty/user/irc")).await.assert_ok(), &json!([]));

    // A room the service publishes in its network's directory is listed for that network (and
    // for all networks), not in the server's own list.
    let bridged = bridge.post(&format!("{V3}/createRoom"), json!({"name": "gopher hole"})).await;
    let bridged = bridged.assert_ok()["room_id"].as_str().unwrap().to_owned();
    let publish = format!("{V3}/directory/list/appservice/gophernet/{bridged}");
    alice.put(&publish, json!({"visibility": "public"})).await.assert_error(403, "M_FORBIDDEN");
    bridge.put(&publish, json!({"visibility": "public"})).await.assert_ok();
    let listed =
        |body: &Value| body["chunk"].as_array().unwrap().iter().any(|r| r["room_id"] == bridged.as_str());
    let rooms = |filter: Value| {
        let alice = &alice;
        async move { alice.post(&format!("{V3}/publicRooms"), filter).await.assert_ok().clone() }
    };
    assert!(!listed(&rooms(json!({})).await));
    assert!(listed(&rooms(json!({"third_party_instance_id": "mau|gophernet"})).await));
    assert!(listed(&rooms(json!({"include_all_networks": true})).await));
    assert!(!listed(&rooms(json!({"third_party_instance_id": "mau|othernet"})).await));
    let by_get = alice.get(&format!("{V3}/publicRooms?third_party_instance_id=mau%7Cgophernet")).await;
    assert!(listed(by_get.assert_ok()));
    bridge.put(&publish, json!({"visibility": "private"})).await.assert_ok();
    assert!(!listed(&rooms(json!({"include_all_networks": true})).await));
}

/// The `m.room.message` bodies the service was sent, in order.
fn bodies(stand_in: &StandInAppservice) -> Vec<String> {
    stand_in
        .events()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn transactions_arrive_in_order_exactly_once_across_downtime_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = StandInAppservice::start().await;
    let files = [(
        "mau.yaml",
        registration_yaml("mau", Some(&stand_in.url), "localhost", "receive_ephemeral: true\n"),
    )];
    let server = server_with(&dir, &files).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;

    // A room the service is not in is none of its business.
    let private = bob.create_room(json!({})).await;
    bob.send_text(&private, "p1", "not for bridges").await;

    // Inviting its user brings the room to it.
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    alice
        .post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@maubot:localhost"}))
        .await
        .assert_ok();
    stand_in
        .wait_for("the invite", |s| s.events().iter().any(|e| e["content"]["membership"] == "invite"))
        .await;
    service(&server, "mau").post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    alice.send_text(&room, "m0", "hello bridge").await;
    stand_in.wait_for("the first message", |s| bodies(s) == ["hello bridge"]).await;
    let first = &stand_in.accepted()[0];
    assert_eq!(first.authorization.as_deref(), Some("Bearer mau-hs-token"));

    // Typing and a read receipt, since the registration asks for ephemeral data.
    alice
        .put(&format!("{V3}/rooms/{room}/typing/@alice:localhost"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    let last = alice.send_text(&room, "m1", "read me").await;
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{last}"), json!({})).await.assert_ok();
    stand_in
        .wait_for("typing and the receipt", |s| {
            let eph = s.ephemeral();
            eph.iter()
                .any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!(["@alice:localhost"]))
                && eph.iter().any(|e| {
                    e["type"] == "m.receipt"
                        && e["content"][&last]["m.read"]["@alice:localhost"]["ts"].is_u64()
                })
        })
        .await;
    let with_receipt = stand_in
        .accepted()
        .into_iter()
        .find(|t| t.body["ephemeral"].as_array().is_some_and(|e| !e.is_empty()))
        .unwrap();
    assert_eq!(with_receipt.body["ephemeral"], with_receipt.body["de.sorunome.msc2409.ephemeral"]);

    // The bridge goes down; messages keep coming; Hearth restarts in between.
    stand_in.set_down(true);
    for i in 0..3 {
        alice.send_text(&room, &format!("a{i}"), &format!("missed {i}")).await;
    }
    stand_in.wait_for("a refused attempt", |s| s.refused() > 0).await;
    let server = server.restart().await;
    let alice = Client::login(&server.base_url, "alice", "pw").await;
    for i in 3..5 {
        alice.send_text(&room, &format!("b{i}"), &format!("missed {i}")).await;
    }
    stand_in.set_down(false);
    let expected: Vec<String> = ["hello bridge", "read me"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..5).map(|i| format!("missed {i}")))
        .collect();
    stand_in.wait_for("everything it missed", |s| bodies(s).len() >= expected.len()).await;
    assert_eq!(bodies(&stand_in), expected, "in order, each once");
    let ids: Vec<Value> = stand_in.events().iter().map(|e| e["event_id"].clone()).collect();
    let unique: std::collections::BTreeSet<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    assert!(
        !stand_in.events().iter().any(|e| e["content"]["body"] == "not for bridges"),
        "a room without the service's users stays private"
    );
}

#[tokio::test]
async fn to_device_messages_and_device_list_changes_reach_services_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = StandInAppservice::start().await;
    let extra = "receive_ephemeral: true\norg.matrix.msc3202: true\n";
    let server =
        server_with(&dir, &[("mau.yaml", registration_yaml("mau", Some(&stand_in.url), "localhost", extra))])
            .await;
    let bridge = service(&server, "mau");
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    register_ghost(&bridge, "mau_alice").await.assert_ok();
    let as_ghost = "user_id=@mau_alice:localhost";
    bridge.put(&format!("{V3}/devices/GHOSTDEV?{as_ghost}"), json!({})).await.assert_ok();
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bridge.post(&format!("{V3}/join/{room}?{as_ghost}"), json!({})).await.assert_ok();

    // A to-device message for the ghost's device goes to the service (MSC2409).
    let message = json!({"messages": {"@mau_alice:localhost": {"GHOSTDEV": {"secret": "s3"}}}});
    alice.put(&format!("{V3}/sendToDevice/org.example.hello/td1"), message).await.assert_ok();
    stand_in
        .wait_for("the to-device message", |s| {
            s.accepted().iter().any(|t| {
                t.body["de.sorunome.msc2409.to_device"].as_array().is_some_and(|list| {
                    list.iter().any(|m| {
                        m["to_user_id"] == "@mau_alice:localhost"
                            && m["to_device_id"] == "GHOSTDEV"
                            && m["sender"] == "@alice:localhost"
                            && m["type"] == "org.example.hello"
                            && m["content"]["secret"] == "s3"
                    })
                })
            })
        })
        .await;

    // A room mate's new device keys are a device list change for it (MSC3202).
    let keys = json!({"device_keys": alice.device_keys()});
    alice.post(&format!("{V3}/keys/upload"), keys).await.assert_ok();
    stand_in
        .wait_for("alice's device list change", |s| {
            s.accepted().iter().any(|t| {
                t.body["org.matrix.msc3202.device_lists"]["changed"]
                    .as_array()
                    .is_some_and(|c| c.contains(&json!("@alice:localhost")))
            })
        })
        .await;
}

/// How deeply a value nests arrays and objects (`{}` is 1).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[tokio::test]
async fn an_event_at_the_nesting_limit_reaches_the_service_whole() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = StandInAppservice::start().await;
    let server =
        server_with(&dir, &[("mau.yaml", registration_yaml("mau", Some(&stand_in.url), "localhost", ""))])
            .await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    service(&server, "mau").post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    // The client body's limit is 64 levels: the content itself.
    let deep = (0..63).fold(json!(0), |inner, _| json!({ "a": inner }));
    let content = json!({"msgtype": "m.text", "body": "deep", "d": deep});
    assert_eq!(depth(&content), 64);
    alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/deep"), content.clone()).await.assert_ok();
    let too_deep = json!({"msgtype": "m.text", "body": "deeper", "d": {"x": deep}});
    alice
        .put(&format!("{V3}/rooms/{room}/send/m.room.message/deeper"), too_deep)
        .await
        .assert_error(400, "M_BAD_JSON");
    alice.send_text(&room, "after", "after").await;
    stand_in.wait_for("the deep message and the next", |s| bodies(s).contains(&"after".to_owned())).await;
    let events = stand_in.events();
    let delivered = events.iter().find(|e| e["content"]["body"] == "deep").unwrap();
    assert_eq!(delivered["content"], content);
    assert_eq!(bodies(&stand_in), ["deep", "after"]);
}

#[test]
fn a_bad_registration_file_stops_the_server_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        registration_yaml("mau", None, "localhost", "").replace("'@mau_.*:localhost'", "'@mau_(:'"),
    )
    .unwrap();
    let config = dir.path().join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[storage]\npath = \"{}\"\n[appservice]\nregistration_files = [\"{}\"]\n",
            dir.path().join("db").display(),
            file.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(hearth_conformance_tests::binary::hearth_bin())
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml") && stderr.contains("namespaces.users[0].regex"), "{stderr}");
}
