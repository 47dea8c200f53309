#!/usr/bin/env python3
"""End-to-end encryption check: two matrix-nio clients talk Olm/Megolm.

matrix-nio with its `e2e` extra (crypto by vodozemac, the Rust Olm/Megolm
implementation) is a real Matrix E2EE client. Two fresh users exchange an
encrypted message each way through the homeserver under test:

  1. register      alice_<hex> and bob_<hex> via the UIA m.login.dummy flow
  2. login         each logs in with nio (password) on a fresh crypto store
  3. keys-upload   both upload device keys + signed one-time keys; the next
                   sync reports the same one-time key count
  4. room          alice creates an m.megolm.v1.aes-sha2 room, invites bob,
                   bob joins; both see an encrypted room with both joined
  5. keys-query    alice fetches bob's device keys (nio checks signatures)
  6. keys-claim    alice claims one of bob's one-time keys, opens Olm session
  7. share-session alice sends the Megolm room key to bob over sendToDevice
  8. send-alice    alice sends encrypted "hello from alice"
  9. recv-bob      bob syncs until nio decrypts it to RoomMessageText
 10. otk-count     bob's sync reports one fewer one-time key after the claim
 11. send-bob      bob (query/claim as needed, share, send) "hello from bob"
 12. recv-alice    alice syncs until nio decrypts it

With --homeserver-bob, bob lives on a second homeserver federating with the
first: the room is public and bob joins it through alice's server (step 4),
and every key query, key claim and to-device message between them crosses
federation.

Usage:
  python3 nio_e2ee_check.py --homeserver http://127.0.0.1:8008
                            [--homeserver-bob http://127.0.0.2:8008] [-v]

Prints "ok  <step> <detail>" per step, stops at the first failure with
"FAIL <step>: ...", and ends with "N passed, M failed". Exit status 0 if
every step passed, 1 on a failure, 2 on bad usage / missing dependencies.
Every network loop is bounded both in iterations and in wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

try:
    import aiohttp
    from nio import (
        AsyncClient,
        RoomPreset,
        AsyncClientConfig,
        JoinResponse,
        KeysClaimResponse,
        KeysQueryResponse,
        KeysUploadResponse,
        LoginResponse,
        MegolmEvent,
        RoomCreateResponse,
        RoomInviteResponse,
        RoomKeyEvent,
        RoomMessageText,
        RoomSendResponse,
        ShareGroupSessionResponse,
        SyncResponse,
    )
    from nio.crypto import ENCRYPTION_ENABLED
    from nio.responses import ErrorResponse
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"FAIL setup: matrix-nio with e2e support is not importable ({exc}); "
        "run: pip install -r requirements-e2ee.txt",
        file=sys.stderr,
    )
    sys.exit(2)

MEGOLM = "m.megolm.v1.aes-sha2"
ALICE_TEXT = "hello from alice"
BOB_TEXT = "hello from bob"
SYNC_POLL_MS = 1000  # server-side long-poll per sync request
MAX_SYNCS = 60  # hard cap on sync requests per wait, on top of the deadline


class StepFailed(Exception):
    """A step's assertion did not hold; the message says what and why."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise StepFailed(message)


async def describe(resp: Any) -> str:
    """Human-readable summary of an unexpected nio response, with raw body."""
    parts = [type(resp).__name__]
    if isinstance(resp, ErrorResponse):
        parts.append(f"errcode={resp.status_code!r} error={resp.message!r}")
    transport = getattr(resp, "transport_response", None)
    if transport is not None:
        parts.append(f"HTTP {transport.status}")
        try:
            body = await transport.text()  # aiohttp keeps the body once read
            if len(body) > 600:
                body = body[:600] + "..."
            parts.append(f"body={body}")
        except Exception:  # noqa: BLE001 - diagnostics only
            pass
    return " ".join(parts)


async def expect(resp: Any, cls: type, what: str, hint: str = "") -> Any:
    if not isinstance(resp, cls):
        msg = f"{what}: expected {cls.__name__}, got {await describe(resp)}"
        if hint:
            msg += f" ({hint})"
        raise StepFailed(msg)
    return resp


async def nio_call(coro: Any, what: str, hint: str) -> Any:
    """Await a nio request; turn nio's parse crashes on odd bodies into StepFailed."""
    try:
        return await coro
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise StepFailed(
            f"{what}: nio crashed handling the response ({type(exc).__name__}: "
            f"{exc}); {hint}"
        )


QUERY_HINT = (
    "nio needs device_keys.<user>.<device> with algorithms, device_id, user_id, "
    "keys, signatures exactly as uploaded (only 'unsigned' may be added)"
)
CLAIM_HINT = (
    "nio needs one_time_keys.<user>.<device> = {'signed_curve25519:<id>': "
    "{key, signatures}} exactly as uploaded"
)


@dataclass
class User:
    name: str  # "alice" / "bob"
    localpart: str
    password: str
    homeserver: str  # base URL of the user's own server
    user_id: str = ""
    device_id: str = ""
    client: AsyncClient | None = None
    store_dir: str = ""
    uploaded_otks: int = 0
    last_otk_count: int | None = None  # last signed_curve25519 seen in sync


@dataclass
class State:
    homeserver: str
    timeout: float
    wait: float
    alice: User
    bob: User
    room_id: str = ""
    alice_event: str = ""
    bob_event: str = ""
    temp_dirs: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# Helpers


async def register_dummy(state: State, user: User) -> None:
    """Two-stage UIA registration with m.login.dummy, using plain aiohttp."""
    url = f"{user.homeserver}/_matrix/client/v3/register"
    body: dict[str, Any] = {
        "username": user.localpart,
        "password": user.password,
        # No device/token needed here: the real device comes from nio's login.
        "inhibit_login": True,
    }
    timeout = aiohttp.ClientTimeout(total=state.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(url, json=body) as r:
            text = await r.text()
            check(
                r.status == 401,
                f"{user.name}: POST /register without auth: expected HTTP 401 "
                f"with UIA flows, got HTTP {r.status} body={text[:400]}",
            )
        try:
            uia = json.loads(text)
        except ValueError:
            raise StepFailed(f"{user.name}: /register 401 body is not JSON: {text[:400]}")
        session = uia.get("session")
        check(
            isinstance(session, str) and session != "",
            f"{user.name}: UIA 401 has no string 'session': {text[:400]}",
        )
        flows = uia.get("flows")
        check(
            isinstance(flows, list)
            and any(
                isinstance(f, dict) and f.get("stages") == ["m.login.dummy"]
                for f in flows
            ),
            f"{user.name}: UIA 401 offers no flow with stages ['m.login.dummy']: "
            f"{text[:400]}",
        )
        body["auth"] = {"type": "m.login.dummy", "session": session}
        async with http.post(url, json=body) as r:
            text = await r.text()
            check(
                r.status == 200,
                f"{user.name}: POST /register with m.login.dummy: expected HTTP 200, "
                f"got HTTP {r.status} body={text[:400]}",
            )
        try:
            done = json.loads(text)
        except ValueError:
            raise StepFailed(f"{user.name}: /register 200 body is not JSON: {text[:400]}")
        user_id = done.get("user_id")
        check(
            isinstance(user_id, str) and user_id.startswith(f"@{user.localpart}:"),
            f"{user.name}: /register returned user_id {user_id!r}, expected "
            f"@{user.localpart}:<server>",
        )
        user.user_id = user_id


def new_e2e_client(state: State, user: User) -> AsyncClient:
    store_dir = tempfile.mkdtemp(prefix=f"nio-e2ee-{user.name}-")
    state.temp_dirs.append(store_dir)
    user.store_dir = store_dir
    config = AsyncClientConfig(
        store_sync_tokens=True,
        encryption_enabled=True,
        # Fail fast instead of nio's default of retrying forever.
        max_limit_exceeded=3,
        max_timeouts=0,
        request_timeout=state.timeout,
    )
    client = AsyncClient(
        user.homeserver, user=user.user_id, store_path=store_dir, config=config
    )
    user.client = client
    return client


def note_otk_count(user: User, resp: SyncResponse) -> None:
    count = resp.device_key_count.signed_curve25519
    if count is not None:
        user.last_otk_count = count


async def sync_once(state: State, user: User, what: str) -> SyncResponse:
    resp = await user.client.sync(timeout=SYNC_POLL_MS)
    resp = await expect(resp, SyncResponse, f"{user.name} sync ({what})")
    note_otk_count(user, resp)
    return resp


async def sync_until(
    state: State,
    user: User,
    what: str,
    done: Callable[[SyncResponse], bool],
    describe_state: Callable[[], str] = lambda: "",
) -> int:
    """Sync until done(resp) is true; bounded by state.wait seconds and MAX_SYNCS."""
    deadline = time.monotonic() + state.wait
    for n in range(1, MAX_SYNCS + 1):
        resp = await sync_once(state, user, what)
        if done(resp):
            return n
        if time.monotonic() >= deadline:
            break
        # A server that ignores ?timeout= and returns at once gets a short pause.
        await asyncio.sleep(0.2)
    extra = describe_state()
    raise StepFailed(
        f"{user.name}: gave up after {n} syncs / {state.wait:.0f}s waiting for "
        f"{what}" + (f"; {extra}" if extra else "")
    )


def room_ok(user: User, room_id: str, other: str) -> bool:
    room = user.client.rooms.get(room_id)
    if room is None or not room.encrypted:
        return False
    for uid in (user.user_id, other):
        member = room.users.get(uid)
        if member is None or member.invited:
            return False
    return True


def room_summary(user: User, room_id: str) -> str:
    room = user.client.rooms.get(room_id)
    if room is None:
        inv = room_id in user.client.invited_rooms
        return f"room not among joined rooms (invited: {inv})"
    members = {u: ("invited" if m.invited else "joined") for u, m in room.users.items()}
    return f"encrypted={room.encrypted} members={members}"


async def query_claim(state: State, me: User, other: User) -> tuple[str, str]:
    """keys/query for `other` if nio wants it, then keys/claim if no Olm session."""
    client = me.client
    notes = []
    if client.should_query_keys:
        resp = await nio_call(client.keys_query(), f"{me.name} keys_query", QUERY_HINT)
        resp = await expect(resp, KeysQueryResponse, f"{me.name} keys_query", QUERY_HINT)
        check(
            other.device_id in resp.device_keys.get(other.user_id, {}),
            f"{me.name} keys_query: {other.user_id} device {other.device_id} missing "
            f"from device_keys (got {json.dumps(resp.device_keys)[:400]}, "
            f"failures={resp.failures})",
        )
        notes.append("queried")
    devices = client.device_store.active_user_devices(other.user_id)
    dev = next((d for d in devices if d.id == other.device_id), None)
    check(
        dev is not None,
        f"{me.name}: nio did not store {other.user_id}'s device {other.device_id} "
        "after keys_query (signature check failed, or user_id/device_id/keys "
        "fields mismatch); run with -v for nio's warnings",
    )
    missing = client.get_missing_sessions(state.room_id)
    if other.device_id in missing.get(other.user_id, []):
        resp = await nio_call(
            client.keys_claim(missing), f"{me.name} keys_claim", CLAIM_HINT
        )
        resp = await expect(resp, KeysClaimResponse, f"{me.name} keys_claim", CLAIM_HINT)
        claimed = resp.one_time_keys.get(other.user_id, {}).get(other.device_id)
        check(
            isinstance(claimed, dict)
            and any(k.startswith("signed_curve25519:") for k in claimed),
            f"{me.name} keys_claim: no signed_curve25519 key for {other.user_id} "
            f"{other.device_id}: one_time_keys={json.dumps(resp.one_time_keys)[:400]} "
            f"failures={resp.failures}",
        )
        still = client.get_missing_sessions(state.room_id)
        check(
            other.device_id not in still.get(other.user_id, []),
            f"{me.name}: nio opened no Olm session with {other.device_id} after "
            f"keys_claim (one-time key signature did not verify?) claimed={claimed}",
        )
        notes.append("claimed signed_curve25519 OTK")
    else:
        notes.append("Olm session already exists, no claim needed")
    return dev.ed25519, ", ".join(notes)


async def share_and_send(state: State, me: User, other: User, text: str) -> str:
    client = me.client
    resp = await client.share_group_session(
        state.room_id, ignore_unverified_devices=True
    )
    resp = await expect(resp, ShareGroupSessionResponse, f"{me.name} share_group_session")
    check(
        (other.user_id, other.device_id) in resp.users_shared_with,
        f"{me.name}: the Megolm session was not delivered to {other.user_id} "
        f"{other.device_id} (shared with {sorted(resp.users_shared_with)}); nio "
        "drops a device if PUT /sendToDevice does not answer HTTP 200 with "
        "exactly {} or if it has no Olm session with it",
    )
    resp = await client.room_send(
        state.room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": text},
        ignore_unverified_devices=True,
    )
    resp = await expect(resp, RoomSendResponse, f"{me.name} room_send")
    check(bool(resp.event_id), f"{me.name} room_send returned no event_id")
    return resp.event_id


async def wait_decrypted(
    state: State, me: User, sender: User, event_id: str, text: str
) -> str:
    found: dict[str, Any] = {}
    seen_to_device: list[str] = []

    def done(resp: SyncResponse) -> bool:
        for ev in resp.to_device_events:
            seen_to_device.append(type(ev).__name__)
            if isinstance(ev, RoomKeyEvent) and ev.room_id == state.room_id:
                found["room_key"] = ev.session_id
        info = resp.rooms.join.get(state.room_id)
        if info is None:
            return False
        for ev in info.timeline.events:
            if getattr(ev, "event_id", None) == event_id:
                found["event"] = ev
                return True
        return False

    def why() -> str:
        return (
            f"event {event_id} not seen in the room timeline; to-device events "
            f"seen: {seen_to_device or 'none'}"
        )

    n = await sync_until(state, me, f"{sender.name}'s event {event_id}", done, why)
    ev = found["event"]
    if isinstance(ev, MegolmEvent):
        raise StepFailed(
            f"{me.name} got {event_id} but nio could not decrypt it (still a "
            f"MegolmEvent, session {ev.session_id}); room key via to-device: "
            f"{'yes' if 'room_key' in found else 'no'}; to-device events seen: "
            f"{seen_to_device or 'none'}"
        )
    check(
        isinstance(ev, RoomMessageText),
        f"{me.name}: {event_id} decrypted to {type(ev).__name__}, expected "
        f"RoomMessageText: {getattr(ev, 'source', ev)}",
    )
    check(
        ev.decrypted,
        f"{me.name}: {event_id} arrived as a plaintext m.room.message; it was "
        "meant to be m.room.encrypted",
    )
    check(ev.body == text, f"{me.name}: decrypted body {ev.body!r}, expected {text!r}")
    check(
        ev.sender == sender.user_id,
        f"{me.name}: decrypted event sender {ev.sender!r}, expected {sender.user_id!r}",
    )
    key_note = "room key via to-device" if "room_key" in found else "room key already held"
    return f"{ev.body!r} decrypted from {event_id} after {n} sync(s), {key_note}"


# --------------------------------------------------------------------------
# Steps. Each returns the detail printed after "ok  <step>".


async def step_register(state: State) -> str:
    for user in (state.alice, state.bob):
        await register_dummy(state, user)
    return f"{state.alice.user_id} {state.bob.user_id}"


async def step_login(state: State) -> str:
    out = []
    for user in (state.alice, state.bob):
        client = new_e2e_client(state, user)
        # Bob's device gets no name: /keys/query must then leave the name out (nio's store
        # refuses `"device_display_name": null` and with it the whole answer).
        name = f"nio-e2ee-{user.name}" if user is state.alice else ""
        resp = await client.login(user.password, device_name=name)
        resp = await expect(resp, LoginResponse, f"{user.name} login")
        check(
            resp.user_id == user.user_id,
            f"{user.name} login user_id {resp.user_id!r} != {user.user_id!r}",
        )
        check(bool(resp.device_id), f"{user.name} login returned an empty device_id")
        check(
            client.olm is not None,
            f"{user.name}: nio did not load its crypto store after login "
            f"(ENCRYPTION_ENABLED={ENCRYPTION_ENABLED})",
        )
        user.device_id = resp.device_id
        out.append(f"{user.name}={resp.device_id}")
    return " ".join(out)


async def step_keys_upload(state: State) -> str:
    out = []
    for user in (state.alice, state.bob):
        client = user.client
        check(client.should_upload_keys, f"{user.name}: nio sees no keys to upload")
        resp = await client.keys_upload()
        resp = await expect(
            resp,
            KeysUploadResponse,
            f"{user.name} keys_upload",
            "nio needs {'one_time_key_counts': {'signed_curve25519': N, ...}}",
        )
        generated = client.olm.account.max_one_time_keys
        check(
            resp.signed_curve25519_count == generated,
            f"{user.name} keys_upload: one_time_key_counts.signed_curve25519 = "
            f"{resp.signed_curve25519_count}, expected {generated} (the number uploaded)",
        )
        check(
            not client.should_upload_keys,
            f"{user.name}: nio still wants to upload keys after a successful upload",
        )
        user.uploaded_otks = resp.signed_curve25519_count
        sync = await sync_once(state, user, "first sync after keys_upload")
        reported = sync.device_key_count.signed_curve25519
        check(
            reported == user.uploaded_otks,
            f"{user.name}: sync device_one_time_keys_count.signed_curve25519 = "
            f"{reported!r}, expected {user.uploaded_otks}",
        )
        out.append(f"{user.name}={user.uploaded_otks}")
    return "signed_curve25519 OTKs uploaded and reported by sync: " + " ".join(out)


async def join_via(state: State, user: User, server: str) -> None:
    """POST /join/{roomId}?via=: nio's join() cannot name the server to join through."""
    url = f"{user.homeserver}/_matrix/client/v3/join/{state.room_id}"
    headers = {"Authorization": f"Bearer {user.client.access_token}"}
    timeout = aiohttp.ClientTimeout(total=state.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(url, params={"via": server}, json={}, headers=headers) as r:
            text = await r.text()
            check(
                r.status == 200,
                f"{user.name}: POST /join/{state.room_id}?via={server}: HTTP {r.status} {text[:400]}",
            )


async def step_room(state: State) -> str:
    alice, bob = state.alice, state.bob
    two_servers = alice.homeserver != bob.homeserver
    resp = await alice.client.room_create(
        name="nio e2ee check",
        # Across servers bob joins a public room instead of accepting an invite.
        preset=RoomPreset.public_chat if two_servers else None,
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": MEGOLM},
            }
        ],
    )
    resp = await expect(resp, RoomCreateResponse, "alice room_create")
    state.room_id = resp.room_id
    if two_servers:
        await join_via(state, bob, alice.user_id.split(":", 1)[1])
    else:
        resp = await alice.client.room_invite(state.room_id, bob.user_id)
        await expect(resp, RoomInviteResponse, "alice room_invite bob")

        await sync_until(
            state,
            bob,
            f"the invite to {state.room_id}",
            lambda _r: state.room_id in bob.client.invited_rooms
            or state.room_id in bob.client.rooms,
        )
        resp = await bob.client.join(state.room_id)
        resp = await expect(resp, JoinResponse, "bob join")
        check(
            resp.room_id == state.room_id,
            f"bob joined {resp.room_id!r}, not {state.room_id!r}",
        )

    for me, other in ((bob, alice), (alice, bob)):
        await sync_until(
            state,
            me,
            "an encrypted room with both members joined",
            lambda _r, me=me, other=other: room_ok(me, state.room_id, other.user_id),
            lambda me=me: room_summary(me, state.room_id),
        )
    return f"{state.room_id} encrypted ({MEGOLM}), alice and bob joined"


async def step_keys_query(state: State) -> str:
    alice, bob = state.alice, state.bob
    check(
        bob.user_id in alice.client.users_for_key_query
        or bob.user_id in alice.client.olm.tracked_users,
        f"alice's nio is not tracking {bob.user_id}'s devices after the room sync",
    )
    check(
        alice.client.should_query_keys,
        "alice's nio does not want to query keys for the new room member",
    )
    resp = await nio_call(alice.client.keys_query(), "alice keys_query", QUERY_HINT)
    resp = await expect(resp, KeysQueryResponse, "alice keys_query", QUERY_HINT)
    got = resp.device_keys.get(bob.user_id, {})
    check(
        bob.device_id in got,
        f"keys_query: {bob.user_id} device {bob.device_id} missing "
        f"(device_keys={json.dumps(resp.device_keys)[:400]} failures={resp.failures})",
    )
    devices = {d.id: d for d in alice.client.device_store.active_user_devices(bob.user_id)}
    check(
        bob.device_id in devices,
        f"alice's nio rejected bob's device keys (bad signature or mismatched "
        f"user_id/device_id): {json.dumps(got.get(bob.device_id))[:400]}",
    )
    dev = devices[bob.device_id]
    check(
        dev.ed25519 == bob.client.olm.account.identity_keys["ed25519"]
        and dev.curve25519 == bob.client.olm.account.identity_keys["curve25519"],
        "keys_query returned identity keys for bob that differ from the ones bob uploaded",
    )
    return f"bob's device {bob.device_id} keys verified (ed25519 {dev.ed25519[:10]}...)"


async def step_keys_claim(state: State) -> str:
    alice, bob = state.alice, state.bob
    missing = alice.client.get_missing_sessions(state.room_id)
    check(
        bob.device_id in missing.get(bob.user_id, []),
        f"alice's nio does not list bob's device as needing an Olm session: {missing}",
    )
    _, note = await query_claim(state, alice, bob)
    return f"bob {bob.device_id}: {note}, Olm session open"


async def step_share_session(state: State) -> str:
    alice, bob = state.alice, state.bob
    resp = await alice.client.share_group_session(
        state.room_id, ignore_unverified_devices=True
    )
    resp = await expect(resp, ShareGroupSessionResponse, "alice share_group_session")
    check(
        (bob.user_id, bob.device_id) in resp.users_shared_with,
        f"the Megolm session was not delivered to bob {bob.device_id} (shared with "
        f"{sorted(resp.users_shared_with)}); nio drops a device if PUT "
        "/sendToDevice does not answer HTTP 200 with exactly {}",
    )
    return f"m.room_key sent over sendToDevice to bob {bob.device_id}"


async def step_send_alice(state: State) -> str:
    resp = await state.alice.client.room_send(
        state.room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": ALICE_TEXT},
        ignore_unverified_devices=True,
    )
    resp = await expect(resp, RoomSendResponse, "alice room_send")
    check(bool(resp.event_id), "alice room_send returned no event_id")
    state.alice_event = resp.event_id
    return f"m.room.encrypted {resp.event_id}"


async def step_recv_bob(state: State) -> str:
    return await wait_decrypted(
        state, state.bob, state.alice, state.alice_event, ALICE_TEXT
    )


async def step_otk_count(state: State) -> str:
    bob = state.bob
    expected = bob.uploaded_otks - 1
    if bob.last_otk_count != expected:
        # One more sync in case the count lagged behind the to-device delivery.
        await sync_once(state, bob, "one-time key count")
    check(
        bob.last_otk_count == expected,
        f"bob's sync reports device_one_time_keys_count.signed_curve25519 = "
        f"{bob.last_otk_count!r} after alice claimed one key; expected {expected}",
    )
    return f"bob signed_curve25519 {bob.uploaded_otks} -> {expected}"


async def step_send_bob(state: State) -> str:
    bob, alice = state.bob, state.alice
    _, note = await query_claim(state, bob, alice)
    state.bob_event = await share_and_send(state, bob, alice, BOB_TEXT)
    return f"{note}; m.room.encrypted {state.bob_event}"


async def step_recv_alice(state: State) -> str:
    return await wait_decrypted(
        state, state.alice, state.bob, state.bob_event, BOB_TEXT
    )


STEPS = [
    ("register", step_register),
    ("login", step_login),
    ("keys-upload", step_keys_upload),
    ("room", step_room),
    ("keys-query", step_keys_query),
    ("keys-claim", step_keys_claim),
    ("share-session", step_share_session),
    ("send-alice", step_send_alice),
    ("recv-bob", step_recv_bob),
    ("otk-count", step_otk_count),
    ("send-bob", step_send_bob),
    ("recv-alice", step_recv_alice),
]


async def run(args: argparse.Namespace) -> int:
    tag = secrets.token_hex(4)
    homeserver = args.homeserver.rstrip("/")
    homeserver_bob = (args.homeserver_bob or args.homeserver).rstrip("/")
    state = State(
        homeserver=homeserver,
        timeout=args.timeout,
        wait=args.wait,
        alice=User("alice", f"alice_{tag}", "pw-" + secrets.token_hex(12), homeserver),
        bob=User("bob", f"bob_{tag}", "pw-" + secrets.token_hex(12), homeserver_bob),
    )
    passed = failed = 0
    try:
        for name, step in STEPS:
            try:
                detail = await asyncio.wait_for(step(state), timeout=args.step_timeout)
            except StepFailed as exc:
                print(f"FAIL {name}: {exc}", flush=True)
                failed = 1
                break
            except asyncio.TimeoutError:
                print(f"FAIL {name}: step took longer than {args.step_timeout:.0f}s", flush=True)
                failed = 1
                break
            except Exception as exc:  # noqa: BLE001 - report, don't traceback
                print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
                failed = 1
                break
            print(f"ok  {name} {detail}", flush=True)
            passed += 1
    finally:
        for user in (state.alice, state.bob):
            if user.client is not None:
                try:
                    await user.client.close()
                except Exception:  # noqa: BLE001
                    pass
        for d in state.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--homeserver", required=True, help="base URL, e.g. http://127.0.0.1:8008"
    )
    parser.add_argument(
        "--homeserver-bob",
        help="bob's homeserver, federating with --homeserver (default: the same one)",
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="per-request timeout, seconds"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="how long to keep syncing for an expected event, seconds",
    )
    parser.add_argument(
        "--step-timeout", type=float, default=90.0, help="hard cap per step, seconds"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="nio debug logs")
    args = parser.parse_args()
    for url in (args.homeserver, args.homeserver_bob or args.homeserver):
        if not is_loopback(url):
            parser.error("homeservers must be loopback addresses (127.0.0.0/8, ::1, localhost)")
    if not ENCRYPTION_ENABLED:
        print(
            "FAIL setup: matrix-nio is installed without its e2e extra; "
            "run: pip install -r requirements-e2ee.txt",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
