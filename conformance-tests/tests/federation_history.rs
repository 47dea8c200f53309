//! History and lookups across two federating Hearths: back-paginating a room's history from
//! before this server joined (backfill), profiles, room aliases and the public room directory
//! of the other server, notary key queries, and the other server's media.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";
const B: &str = "hs-b.test";

fn bodies(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned)).collect()
}

#[tokio::test]
async fn a_late_joiner_back_paginates_the_history_from_before_it_joined() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat", "name": "history"})).await;
    let sent: Vec<String> = (0..30).map(|i| format!("message {i}")).collect();
    for (i, text) in sent.iter().enumerate() {
        alice.send_text(&room, &format!("t{i}"), text).await;
    }

    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
    let first = bob.get(&format!("{V3}/sync?timeout=0")).await;
    let since = first.assert_ok()["next_batch"].as_str().unwrap().to_owned();
    let timeline = &first.body["rooms"]["join"][&room]["timeline"];
    // The join is the first thing bob's server has of the room; history is not pushed as new.
    assert!(bodies(timeline["events"].as_array().unwrap()).is_empty(), "{timeline}");

    // Back-paginate in small pages from the newest event until the server says it is done.
    let mut from: Option<String> = None;
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..40 {
        let path = match &from {
            Some(token) => format!("{V3}/rooms/{room}/messages?dir=b&limit=7&from={token}"),
            None => format!("{V3}/rooms/{room}/messages?dir=b&limit=7"),
        };
        let page = bob.get(&path).await;
        let body = page.assert_ok().clone();
        events.extend(body["chunk"].as_array().unwrap().iter().cloned());
        match body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event came twice: {ids:?}");

    // Newest first: bob's join, then alice's 30 messages in reverse, then the room's creation.
    let got = bodies(&events);
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(got, expected);
    assert_eq!(events[0]["type"], "m.room.member");
    assert_eq!(events[0]["state_key"], json!(bob.user_id()));
    assert_eq!(events.last().unwrap()["type"], "m.room.create", "history reaches the creation");

    // Paging forward from the beginning returns the same events, oldest first.
    let forward = bob.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=100")).await;
    let forward_ids: Vec<&str> = forward.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(forward_ids, reversed);

    // The fetched history never shows up in bob's incremental sync.
    let later = bob.get(&format!("{V3}/sync?timeout=0&since={since}")).await;
    let timeline = &later.assert_ok()["rooms"]["join"][&room]["timeline"];
    let new_bodies = timeline["events"].as_array().map(|e| bodies(e)).unwrap_or_default();
    assert!(new_bodies.is_empty(), "backfilled history came through sync: {new_bodies:?}");
}

#[tokio::test]
async fn profiles_aliases_and_the_directory_of_another_server() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let alice_id = alice.user_id().to_owned();
    alice
        .put(&format!("{V3}/profile/{alice_id}/displayname"), json!({"displayname": "Alice A"}))
        .await
        .assert_ok();

    // Profiles of the other server's users are asked of it.
    let profile = bob.get(&format!("{V3}/profile/{alice_id}")).await;
    assert_eq!(profile.assert_ok()["displayname"], "Alice A");
    let name = bob.get(&format!("{V3}/profile/{alice_id}/displayname")).await;
    assert_eq!(name.assert_ok()["displayname"], "Alice A");
    bob.get(&format!("{V3}/profile/@nobody:{A}")).await.assert_error(404, "M_NOT_FOUND");

    let room = alice
        .create_room(json!({
            "preset": "public_chat", "visibility": "public", "name": "Lobby", "topic": "all welcome",
            "room_alias_name": "room",
        }))
        .await;
    let alias = format!("%23room:{A}");

    // The alias resolves across servers to the room and servers that can let bob in.
    let resolved = bob.get(&format!("{V3}/directory/room/{alias}")).await;
    assert_eq!(resolved.assert_ok()["room_id"], json!(room));
    assert!(resolved.body["servers"].as_array().unwrap().contains(&json!(A)), "{:?}", resolved.body);
    bob.get(&format!("{V3}/directory/room/%23missing:{A}")).await.assert_error(404, "M_NOT_FOUND");

    // Joining by the remote alias resolves it, then joins through the servers it named.
    let joined = bob.post(&format!("{V3}/join/{alias}"), json!({})).await;
    assert_eq!(joined.assert_ok()["room_id"], json!(room));
    let rooms = bob.get(&format!("{V3}/joined_rooms")).await;
    assert!(rooms.assert_ok()["joined_rooms"].as_array().unwrap().contains(&json!(room)));

    // A's public room directory, read from B, both ways.
    let listed = bob.get(&format!("{V3}/publicRooms?server={A}")).await;
    let chunk = listed.assert_ok()["chunk"].as_array().unwrap().clone();
    let lobby = chunk.iter().find(|r| r["room_id"] == json!(room)).unwrap_or_else(|| panic!("{chunk:?}"));
    assert_eq!(lobby["name"], "Lobby");
    assert_eq!(lobby["topic"], "all welcome");
    assert_eq!(lobby["canonical_alias"], json!(format!("#room:{A}")));
    let searched = bob
        .post(&format!("{V3}/publicRooms?server={A}"), json!({"filter": {"generic_search_term": "lobby"}}))
        .await;
    let found = searched.assert_ok()["chunk"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["room_id"], json!(room));
    let none = bob
        .post(&format!("{V3}/publicRooms?server={A}"), json!({"filter": {"generic_search_term": "zzz"}}))
        .await;
    assert!(none.assert_ok()["chunk"].as_array().unwrap().is_empty());
    // B's own directory does not have A's room.
    let own = bob.get(&format!("{V3}/publicRooms")).await;
    assert!(!own.assert_ok()["chunk"].as_array().unwrap().iter().any(|r| r["room_id"] == json!(room)));
}

/// Whether `object` carries a valid signature of `server` made with one of the keys of the
/// key response `keys` (canonical JSON: sorted keys, no whitespace, without `signatures` and
/// `unsigned`).
fn signed_by(object: &Value, server: &str, keys: &Value) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut content = object.clone();
    content.as_object_mut().unwrap().remove("signatures");
    content.as_object_mut().unwrap().remove("unsigned");
    let message = serde_json::to_vec(&content).unwrap();
    let Some(signatures) = object["signatures"][server].as_object() else { return false };
    !signatures.is_empty()
        && signatures.iter().all(|(key_id, signature)| {
            let Some(key) = keys["verify_keys"][key_id]["key"].as_str() else { return false };
            let key = b64.decode(key).unwrap();
            let signature = b64.decode(signature.as_str().unwrap()).unwrap();
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, key)
                .verify(&message, &signature)
                .is_ok()
        })
}

#[tokio::test]
async fn a_notary_query_returns_the_other_servers_keys_signed_by_both() {
    let (a, b) = TestServer::federating_pair().await;
    let fed_a = a.config.listen.federation.unwrap();
    let fed_b = b.config.listen.federation.unwrap();
    let server_keys = |fed: std::net::SocketAddr| async move {
        let url = format!("https://{fed}/_matrix/key/v2/server");
        hearth_conformance_tests::insecure_https()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let (keys_a, keys_b) = (server_keys(fed_a).await, server_keys(fed_b).await);

    // B has never talked to A: it fetches A's keys, checks them, and countersigns them.
    let reply = hearth_conformance_tests::insecure_https()
        .get(format!("https://{fed_b}/_matrix/key/v2/query/{A}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let body: Value = reply.json().await.unwrap();
    let keys = body["server_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{body}");
    assert_eq!(keys[0]["server_name"], A);
    assert_eq!(keys[0]["verify_keys"], keys_a["verify_keys"]);
    assert!(signed_by(&keys[0], A, &keys_a), "A's own signature is passed on intact: {body}");
    assert!(signed_by(&keys[0], B, &keys_b), "B countersigned: {body}");
    // The signatures cover the content: a changed response fails both.
    let mut forged = keys[0].clone();
    forged["valid_until_ts"] = json!(1);
    assert!(!signed_by(&forged, A, &keys_a) && !signed_by(&forged, B, &keys_b));

    // The batch form, for A and for B itself.
    let batch = json!({"server_keys": {A: {}, B: {}}});
    let reply = hearth_conformance_tests::insecure_https()
        .post(format!("https://{fed_b}/_matrix/key/v2/query"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let body: Value = reply.json().await.unwrap();
    let names: Vec<&str> =
        body["server_keys"].as_array().unwrap().iter().map(|k| k["server_name"].as_str().unwrap()).collect();
    assert_eq!(names, [A, B], "{body}");
    for keys in body["server_keys"].as_array().unwrap() {
        assert!(signed_by(keys, B, &keys_b), "{keys}");
    }
    assert!(signed_by(&body["server_keys"][0], A, &keys_a));
    // A server nobody can reach has no keys to give.
    let reply = hearth_conformance_tests::insecure_https()
        .get(format!("https://{fed_b}/_matrix/key/v2/query/hs-c.test"))
        .send()
        .await
        .unwrap();
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["server_keys"], json!([]));
}

/// A picture with detail in it, so that a thumbnail is really smaller.
fn picture(w: u32, h: u32) -> Vec<u8> {
    let img = image::ImageBuffer::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13) ^ (x * y);
        image::Rgb([(v % 251) as u8, (x % 256) as u8, (y % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn get_bytes(client: &Client, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = client
        .http
        .get(format!("{}{path}", client.base_url))
        .bearer_auth(client.access_token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_user_downloads_media_uploaded_on_the_other_server_and_a_thumbnail() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let png = picture(640, 480);
    let upload = alice
        .http
        .post(format!("{}/_matrix/media/v3/upload?filename=cat.png", alice.base_url))
        .bearer_auth(alice.access_token.as_deref().unwrap())
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    let uri: Value = upload.json().await.unwrap();
    let uri = uri["content_uri"].as_str().unwrap().to_owned();
    let path = uri.strip_prefix("mxc://").unwrap();
    assert!(path.starts_with(A), "{uri}");

    // Bob's server fetches it from A over federation and hands over the very same bytes.
    let (status, headers, bytes) =
        get_bytes(&bob, &format!("/_matrix/client/v1/media/download/{path}")).await;
    assert_eq!(status, 200);
    assert!(bytes == png, "the downloaded file differs from the upload");
    assert_eq!(headers["content-type"], "image/png");
    assert!(headers["content-disposition"].to_str().unwrap().contains("cat.png"), "{headers:?}");

    // A thumbnail of it, smaller and of the size asked for.
    let thumb_path = format!("/_matrix/client/v1/media/thumbnail/{path}?width=96&height=96&method=crop");
    let (status, headers, thumb) = get_bytes(&bob, &thumb_path).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert!(thumb.len() < png.len());
    assert_eq!(image::load_from_memory(&thumb).unwrap().to_rgb8().dimensions(), (96, 96));

    // Media A never had is not found.
    let (status, _, body) = get_bytes(&bob, &format!("/_matrix/client/v1/media/download/{A}/nothing")).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // Cached on B: it is served again with A gone.
    a.stop().await;
    let (status, _, again) = get_bytes(&bob, &format!("/_matrix/client/v1/media/download/{path}")).await;
    assert_eq!(status, 200);
    assert!(again == png);
}

#[tokio::test]
async fn federation_media_endpoints_serve_only_signed_requests() {
    let (a, _b) = TestServer::federating_pair().await;
    let fed = a.config.listen.federation.unwrap();
    let reply = hearth_conformance_tests::insecure_https()
        .get(format!("https://{fed}/_matrix/federation/v1/media/download/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 401);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
}

#[tokio::test]
async fn a_page_larger_than_what_backfill_brings_in_its_rounds_still_leads_to_the_rest() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    // More than one /messages request backfills before answering (a few rounds of 50).
    let sent: Vec<String> = (0..180).map(|i| format!("filler {i}")).collect();
    for (i, text) in sent.iter().enumerate() {
        alice.send_text(&room, &format!("t{i}"), text).await;
    }
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();

    let mut from: Option<String> = None;
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..20 {
        let path = match &from {
            Some(token) => format!("{V3}/rooms/{room}/messages?dir=b&limit=200&from={token}"),
            None => format!("{V3}/rooms/{room}/messages?dir=b&limit=200"),
        };
        let body = bob.get(&path).await.assert_ok().clone();
        events.extend(body["chunk"].as_array().unwrap().iter().cloned());
        match body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(bodies(&events), expected);
    assert_eq!(events.last().unwrap()["type"], "m.room.create", "history reaches the creation");
}
