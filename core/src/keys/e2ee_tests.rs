//! End-to-end encryption keys on an in-memory homeserver: what an upload accepts, the order and
//! uniqueness of claims, fallback keys, and whose key changes a user hears of.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedDeviceId, OwnedUserId, device_id};
use serde_json::{Value, json};

use super::e2ee::KeyUpload;
use crate::{
    ErrorCode, Homeserver,
    config::HomeserverConfig,
    test_support::{shared_room, user},
};

fn device_keys(user: &OwnedUserId, device: &str, key: &str) -> Value {
    json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {format!("curve25519:{device}"): key},
        "signatures": {user.as_str(): {}},
    })
}

fn one_time(ids: &[&str]) -> BTreeMap<String, Value> {
    ids.iter().map(|id| (format!("signed_curve25519:{id}"), json!({"key": id}))).collect()
}

fn claim_of(user: &OwnedUserId, device: &str) -> BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>> {
    BTreeMap::from([(user.clone(), BTreeMap::from([(device.into(), "signed_curve25519".to_owned())]))])
}

fn claimed_id(answer: &Value, user: &OwnedUserId, device: &str) -> Option<String> {
    let keys = answer["one_time_keys"][user.as_str()][device].as_object()?;
    keys.keys().next().map(|k| k.split_once(':').unwrap().1.to_owned())
}

#[tokio::test]
async fn uploads_are_checked() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let device = device_id!("ADEV");

    let mut incomplete = device_keys(&alice, "ADEV", "k");
    incomplete.as_object_mut().unwrap().remove("signatures");
    let upload = KeyUpload { device_keys: Some(incomplete), ..Default::default() };
    let err = hs.upload_keys(&alice, device, upload).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadJson, "{err}");

    let upload = KeyUpload { device_keys: Some(device_keys(&alice, "OTHER", "k")), ..Default::default() };
    let err = hs.upload_keys(&alice, device, upload).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParam, "{err}");

    let upload = KeyUpload { one_time_keys: one_time(&["a", "b"]), ..Default::default() };
    let counts = hs.upload_keys(&alice, device, upload).await.unwrap();
    assert_eq!(counts.get("signed_curve25519"), Some(&2));
    // The same key again is a no-op; the same ID with other content is refused.
    let upload = KeyUpload { one_time_keys: one_time(&["a"]), ..Default::default() };
    assert_eq!(hs.upload_keys(&alice, device, upload).await.unwrap().get("signed_curve25519"), Some(&2));
    let mut changed = one_time(&["a"]);
    changed.insert("signed_curve25519:a".to_owned(), json!({"key": "different"}));
    let upload = KeyUpload { one_time_keys: changed, ..Default::default() };
    let err = hs.upload_keys(&alice, device, upload).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParam, "{err}");
}

#[tokio::test]
async fn claims_hand_out_the_oldest_key_once_then_the_fallback() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let device = device_id!("ADEV");
    // Two uploads: the first one's keys go first, each upload in its own order, whatever the IDs.
    let upload = KeyUpload { one_time_keys: one_time(&["z", "y"]), ..Default::default() };
    hs.upload_keys(&alice, device, upload).await.unwrap();
    let upload = KeyUpload { one_time_keys: one_time(&["a"]), ..Default::default() };
    hs.upload_keys(&alice, device, upload).await.unwrap();
    let mut fallback = BTreeMap::new();
    fallback.insert("signed_curve25519:fb".to_owned(), json!({"key": "fb", "fallback": true}));
    hs.upload_keys(&alice, device, KeyUpload { fallback_keys: fallback, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(hs.unused_fallback_key_types(&alice, device).unwrap(), ["signed_curve25519"]);

    // Concurrent claims never get the same key.
    let claims: Vec<_> = (0..3)
        .map(|_| {
            let hs = hs.clone();
            let wanted = claim_of(&alice, "ADEV");
            tokio::spawn(async move { hs.claim_keys(wanted).await.unwrap() })
        })
        .collect();
    let mut got = BTreeSet::new();
    for claim in claims {
        got.insert(claimed_id(&claim.await.unwrap(), &alice, "ADEV").unwrap());
    }
    assert_eq!(got, BTreeSet::from(["a".to_owned(), "y".to_owned(), "z".to_owned()]));
    let left = hs.one_time_key_counts(&alice, device).unwrap();
    assert_eq!(left, BTreeMap::from([("signed_curve25519".to_owned(), 0)]));

    // Out of one-time keys: the fallback key, as often as asked, now marked used.
    for _ in 0..2 {
        let answer = hs.claim_keys(claim_of(&alice, "ADEV")).await.unwrap();
        assert_eq!(claimed_id(&answer, &alice, "ADEV").as_deref(), Some("fb"));
    }
    assert!(hs.unused_fallback_key_types(&alice, device).unwrap().is_empty());
    // A device with nothing at all is left out of the answer.
    let answer = hs.claim_keys(claim_of(&alice, "NOKEYS")).await.unwrap();
    assert!(answer["one_time_keys"].get(alice.as_str()).is_none(), "{answer}");
}

#[tokio::test]
async fn the_claim_order_within_an_upload_is_the_upload_order() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let device = device_id!("ADEV");
    let upload = KeyUpload { one_time_keys: one_time(&["m", "b", "x"]), ..Default::default() };
    hs.upload_keys(&alice, device, upload).await.unwrap();
    let upload = KeyUpload { one_time_keys: one_time(&["a"]), ..Default::default() };
    hs.upload_keys(&alice, device, upload).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(
            claimed_id(&hs.claim_keys(claim_of(&alice, "ADEV")).await.unwrap(), &alice, "ADEV").unwrap(),
        );
    }
    // Within one upload the map's order (by ID) is the upload order; the later upload comes last.
    assert_eq!(order, ["b", "m", "x", "a"]);
}

#[tokio::test]
async fn key_changes_reach_only_users_who_share_a_room() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    shared_room(&hs, &alice, &[&bob]).await;

    let from = hs.streams.published();
    let upload = KeyUpload { device_keys: Some(device_keys(&bob, "BDEV", "k1")), ..Default::default() };
    hs.upload_keys(&bob, device_id!("BDEV"), upload).await.unwrap();
    let upload = KeyUpload { device_keys: Some(device_keys(&carol, "CDEV", "k1")), ..Default::default() };
    hs.upload_keys(&carol, device_id!("CDEV"), upload).await.unwrap();
    let to = hs.streams.published();
    assert_eq!(hs.key_changes(&alice, from, to).unwrap(), std::slice::from_ref(&bob));
    assert!(hs.key_changes(&alice, to, to).unwrap().is_empty());

    // The same keys uploaded again change nothing.
    let upload = KeyUpload { device_keys: Some(device_keys(&bob, "BDEV", "k1")), ..Default::default() };
    hs.upload_keys(&bob, device_id!("BDEV"), upload).await.unwrap();
    assert!(hs.key_changes(&alice, to, hs.streams.published()).unwrap().is_empty());
}
