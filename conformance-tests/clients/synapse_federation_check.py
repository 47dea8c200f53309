"""Hearth <-> Synapse federation, driven over both servers' Client-Server APIs.

Usage: synapse_federation_check.py HEARTH_URL HEARTH_NAME SYNAPSE_URL SYNAPSE_NAME

A Synapse user joins a room on Hearth and a Hearth user joins a room on Synapse
(of the default version, then of versions 9 and 1);
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
    def arrived(body):
        joined = body.get("rooms", {}).get("join", {}).get(room, {})
        return any(e.get("content", {}).get("body") == text for e in joined.get("timeline", {}).get("events", []))
    return wait_for_sync(base, token, arrived, f"{text!r} in {room}", timeout)


def wait_for_sync(base, token, predicate, what, timeout=60):
    since = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = "/_matrix/client/v3/sync?timeout=2000" + (f"&since={since}" if since else "")
        body = ok(*call(base, "GET", path, token), "sync")
        since = body["next_batch"]
        if predicate(body):
            return body
    print(f"FAIL: {what} never showed in /sync at {base}")
    sys.exit(1)


def typing_of(room, user):
    def seen(body):
        ephemeral = body.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
        return any(e.get("type") == "m.typing" and user in e.get("content", {}).get("user_ids", []) for e in ephemeral)
    return seen


def invited_to(room):
    return lambda body: room in body.get("rooms", {}).get("invite", {})


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

# 3. Typing both ways.
check("Synapse user typing seen on Hearth",
      lambda: (ok(*call(SYNAPSE, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(h_room)}/typing/{urllib.parse.quote(s_user)}", s_token, {"typing": True, "timeout": 30000}), "typing on Synapse"),
               wait_for_sync(HEARTH, h_token, typing_of(h_room, s_user), "Synapse user's typing")))
check("Hearth user typing seen on Synapse",
      lambda: (ok(*call(HEARTH, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(h_room)}/typing/{urllib.parse.quote(h_user)}", h_token, {"typing": True, "timeout": 30000}), "typing on Hearth"),
               wait_for_sync(SYNAPSE, s_token, typing_of(h_room, h_user), "Hearth user's typing")))

# 4. Invites both ways, accepted without naming a server.
s2_token, s2_user = register(SYNAPSE, "sue" + RUN)
h2_token, h2_user = register(HEARTH, "hugo" + RUN)
check("Hearth invites a Synapse user, who accepts",
      lambda: (ok(*call(HEARTH, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(h_room)}/invite", h_token, {"user_id": s2_user}), "invite from Hearth"),
               wait_for_sync(SYNAPSE, s2_token, invited_to(h_room), "the invite from Hearth"),
               ok(*call(SYNAPSE, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(h_room)}", s2_token, {}), "accept on Synapse"),
               send(SYNAPSE, s2_token, h_room, "sue is here"), wait_for(HEARTH, h_token, h_room, "sue is here")))
check("Synapse invites a Hearth user, who accepts",
      lambda: (ok(*call(SYNAPSE, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(s_room)}/invite", s_token, {"user_id": h2_user}), "invite from Synapse"),
               wait_for_sync(HEARTH, h2_token, invited_to(s_room), "the invite from Synapse"),
               ok(*call(HEARTH, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(s_room)}", h2_token, {}), "accept on Hearth"),
               send(HEARTH, h2_token, s_room, "hugo is here"), wait_for(SYNAPSE, s_token, s_room, "hugo is here")))

# 5. A Hearth user leaves the Synapse room; Synapse sees it.
def left(room, user):
    def seen(body):
        events = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
        return any(e.get("type") == "m.room.member" and e.get("state_key") == user
                   and e.get("content", {}).get("membership") == "leave" for e in events)
    return seen
check("Hearth user leaves the Synapse room",
      lambda: (ok(*call(HEARTH, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(s_room)}/leave", h2_token, {}), "leave on Hearth"),
               wait_for_sync(SYNAPSE, s_token, left(s_room, h2_user), "the leave")))

# 6. Older room versions, each way: version 9 (restricted joins, string power levels allowed)
# and version 1 (event IDs chosen by the sender, [id, hashes] references, state resolution v1).
for version in ["9", "1"]:
    def both_ways(version=version):
        room = ok(*call(HEARTH, "POST", "/_matrix/client/v3/createRoom", h_token,
                        {"preset": "public_chat", "room_version": version}), f"v{version} room on Hearth")["room_id"]
        via = urllib.parse.quote(HEARTH_NAME)
        ok(*call(SYNAPSE, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}?server_name={via}&via={via}", s_token, {}),
           f"Synapse joins the v{version} Hearth room")
        send(HEARTH, h_token, room, f"v{version} from hearth")
        wait_for(SYNAPSE, s_token, room, f"v{version} from hearth")
        send(SYNAPSE, s_token, room, f"v{version} from synapse")
        wait_for(HEARTH, h_token, room, f"v{version} from synapse")

        room = ok(*call(SYNAPSE, "POST", "/_matrix/client/v3/createRoom", s_token,
                        {"preset": "public_chat", "room_version": version}), f"v{version} room on Synapse")["room_id"]
        via = urllib.parse.quote(SYNAPSE_NAME)
        ok(*call(HEARTH, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}?via={via}", h_token, {}),
           f"Hearth joins the v{version} Synapse room")
        send(SYNAPSE, s_token, room, f"v{version} on synapse")
        wait_for(HEARTH, h_token, room, f"v{version} on synapse")
        send(HEARTH, h_token, room, f"v{version} reply from hearth")
        wait_for(SYNAPSE, s_token, room, f"v{version} reply from hearth")
    check(f"version {version} rooms joined and written both ways", both_ways)
print("all federation checks passed")
