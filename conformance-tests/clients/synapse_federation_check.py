"""Hearth <-> Synapse federation, driven over both servers' Client-Server APIs.

Usage: synapse_federation_check.py HEARTH_URL HEARTH_NAME SYNAPSE_URL SYNAPSE_NAME

A Synapse user joins a room on Hearth and a Hearth user joins a room on Synapse;
messages flow both ways in both rooms. Prints one line per check and exits
non-zero on the first failure.
"""

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HEARTH, HEARTH_NAME, SYNAPSE, SYNAPSE_NAME = sys.argv[1:5]
RUN = str(int(time.time() * 1000) % 10_000_000)


def call(base, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def ok(status, body, what):
    if status != 200:
        print(f"FAIL {what}: HTTP {status} {body}")
        sys.exit(1)
    return body


def register(base, name):
    status, body = call(base, "POST", "/_matrix/client/v3/register", body={"username": name, "password": "pw-" + RUN})
    session = body.get("session")
    body = ok(*call(base, "POST", "/_matrix/client/v3/register",
                    body={"username": name, "password": "pw-" + RUN, "auth": {"type": "m.login.dummy", "session": session}}),
              f"register {name}")
    return body["access_token"], body["user_id"]


def send(base, token, room, text):
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/{RUN}{abs(hash(text))}"
    return ok(*call(base, "PUT", path, token, {"msgtype": "m.text", "body": text}), f"send {text!r}")["event_id"]


def wait_for(base, token, room, text, timeout=60):
    since = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = "/_matrix/client/v3/sync?timeout=2000" + (f"&since={since}" if since else "")
        body = ok(*call(base, "GET", path, token), "sync")
        since = body["next_batch"]
        joined = body.get("rooms", {}).get("join", {}).get(room, {})
        for event in joined.get("timeline", {}).get("events", []):
            if event.get("content", {}).get("body") == text:
                return True
    print(f"FAIL: {text!r} did not arrive in {room} at {base}")
    sys.exit(1)


def check(label, fn):
    started = time.time()
    fn()
    print(f"ok {label} ({time.time() - started:.1f}s)")


h_token, h_user = register(HEARTH, "hannah" + RUN)
s_token, s_user = register(SYNAPSE, "sam" + RUN)

# 1. A Synapse user joins a room on Hearth.
h_room = ok(*call(HEARTH, "POST", "/_matrix/client/v3/createRoom", h_token, {"preset": "public_chat", "name": "on hearth"}), "create on Hearth")["room_id"]
via = urllib.parse.quote(HEARTH_NAME)
check("Synapse user joins a Hearth room",
      lambda: ok(*call(SYNAPSE, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(h_room)}?server_name={via}&via={via}", s_token, {}), "join from Synapse"))
check("Hearth -> Synapse message in the Hearth room",
      lambda: (send(HEARTH, h_token, h_room, "hello sam, from hearth"), wait_for(SYNAPSE, s_token, h_room, "hello sam, from hearth")))
check("Synapse -> Hearth message in the Hearth room",
      lambda: (send(SYNAPSE, s_token, h_room, "hello hannah, from synapse"), wait_for(HEARTH, h_token, h_room, "hello hannah, from synapse")))

# 2. A Hearth user joins a room on Synapse.
s_room = ok(*call(SYNAPSE, "POST", "/_matrix/client/v3/createRoom", s_token, {"preset": "public_chat", "name": "on synapse"}), "create on Synapse")["room_id"]
via = urllib.parse.quote(SYNAPSE_NAME)
check("Hearth user joins a Synapse room",
      lambda: ok(*call(HEARTH, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(s_room)}?via={via}", h_token, {}), "join from Hearth"))
check("Synapse -> Hearth message in the Synapse room",
      lambda: (send(SYNAPSE, s_token, s_room, "welcome hannah"), wait_for(HEARTH, h_token, s_room, "welcome hannah")))
check("Hearth -> Synapse message in the Synapse room",
      lambda: (send(HEARTH, h_token, s_room, "thanks sam"), wait_for(SYNAPSE, s_token, s_room, "thanks sam")))
name = ok(*call(HEARTH, "GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(s_room)}/state/m.room.name", h_token), "room name on Hearth")
assert name.get("name") == "on synapse", name
print("ok Hearth has the Synapse room's state")
print("all federation checks passed")
