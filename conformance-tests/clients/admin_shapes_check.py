#!/usr/bin/env python3
"""Compare the JSON shapes of Synapse's admin API on Hearth and on a real Synapse.

synapse-admin (and other admin tools) talk to /_synapse/admin/...; this script
drives the same scenario on both servers and checks that Hearth answers every
request with the same status code and the same set of JSON keys.

Scenario, run identically on each server:
  1. register the admin "shapeadmin" through shared-secret registration
     (or log it in if it already exists from an earlier run)
  2. the admin creates "shapebob" (PUT /_synapse/admin/v2/users/...); bob logs in
  3. bob creates a public room, sends a message, reports it, uploads a file
  4. the admin creates a registration token
  5. the admin calls each admin endpoint below and records status + JSON

Shapes are compared recursively: objects by key set (recursing into keys
present on both sides), arrays by their first element (when both are
non-empty; for arrays of events the Hearth element with the same "type" is
used, since servers order state differently), scalars by JSON type class
(string / number / bool / null, where null matches anything). Error
responses must also carry the same errcode. Three tables below tune this:
ALLOWED (Synapse-only keys that mean nothing for Hearth, with reasons),
DYNAMIC_KEYS (objects keyed by data such as key IDs) and SQLITE_BOOLEANS
(fields the SQLite-backed reference returns as 0/1 instead of booleans).

Usage:
  python3 admin_shapes_check.py HEARTH_URL HEARTH_SECRET SYNAPSE_URL SYNAPSE_SECRET

Prints "OK  <method> <path>" or "DIFF <method> <path>: ..." per endpoint and a
summary line. Exit status 0 when every endpoint matches (allowed differences
and keys only Hearth has do not count), 1 otherwise, 2 on bad usage or when
the set-up steps fail.

Set ADMIN_SHAPES_DUMP=FILE to also write every recorded response to FILE.

Only the standard library is used, and only loopback addresses are contacted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Keys that only Synapse returns and that mean nothing for Hearth, by endpoint
# template, dotted key path -> reason. Everything a client could use stays a DIFF.
ALLOWED: dict[str, dict[str, str]] = {
    "GET /_synapse/admin/v1/event_reports/{id}": {
        # Synapse keeps its own bookkeeping ({"age_ts": ...}) next to the stored
        # PDU; it is not part of the signed event, and received_ts already dates the report.
        "event_json.unsigned": "Synapse-internal age_ts bookkeeping on its stored PDU",
    },
}

# Object paths whose keys are data (server names, key IDs, ...), not field
# names: their first entries are compared with each other whatever the key.
DYNAMIC_KEYS: dict[str, set[str]] = {
    # Signatures are keyed by server name, then by signing key ID.
    "GET /_synapse/admin/v1/event_reports/{id}": {"event_json.signatures", "event_json.signatures.*"},
    # Synapse puts all sessions under the key ""; another server may use device IDs.
    "GET /_synapse/admin/v1/whois/{user}": {"devices"},
}

# Fields that Synapse reads straight from a BOOLEAN column without converting:
# on SQLite (as in the reference set up by start_synapse.sh) they come out as
# 0/1, on PostgreSQL as true/false. A Hearth bool matches a Synapse 0 or 1 here.
SQLITE_BOOLEANS: dict[str, set[str]] = {
    "GET /_synapse/admin/v1/users/{user}/media": {"media[].authenticated"},
    "GET /_synapse/admin/v1/media/{server}/{media_id}": {
        "media_info.authenticated", "media_info.safe_from_quarantine",
    },
}

TIMEOUT = 30


class SetupFailed(Exception):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: they could lead off loopback."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


# No proxies from the environment: every request goes straight to loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def require_loopback(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parsed.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"refusing a server that is not on loopback: {url!r}")
    return url.rstrip("/")


def q(value: str) -> str:
    """Percent-encode one path segment (user IDs, room IDs, tokens)."""
    return urllib.parse.quote(value, safe="")


class Server:
    def __init__(self, label: str, base: str, secret: str):
        self.label = label
        self.base = require_loopback(base)
        self.secret = secret
        self.admin_token = ""
        self.server_name = ""

    def call(self, method: str, path: str, token: str | None = None, body=None,
             raw: bytes | None = None, content_type: str = "application/json"):
        """Returns (status, parsed JSON or None, raw text)."""
        data = None
        headers = {"Accept": "application/json"}
        if raw is not None:
            data = raw
            headers["Content-Type"] = content_type
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(req, timeout=TIMEOUT) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        except (urllib.error.URLError, OSError) as err:
            raise SetupFailed(f"{self.label}: {method} {path}: {err}") from err
        text = payload.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return status, parsed, text

    def expect(self, method: str, path: str, token: str | None = None, body=None, **kw) -> dict:
        """A set-up request that must succeed with a JSON object."""
        status, parsed, text = self.call(method, path, token, body, **kw)
        if status != 200 or not isinstance(parsed, dict):
            raise SetupFailed(f"{self.label}: {method} {path} -> {status} {text[:300]}")
        return parsed


def register_admin(srv: Server, username: str, password: str) -> dict:
    path = "/_synapse/admin/v1/register"
    nonce = srv.expect("GET", path)["nonce"]
    mac = hmac.new(srv.secret.encode(), digestmod=hashlib.sha1)
    mac.update("\0".join([nonce, username, password, "admin"]).encode())
    status, parsed, text = srv.call("POST", path, body={
        "nonce": nonce, "username": username, "password": password,
        "admin": True, "mac": mac.hexdigest(),
    })
    if status == 200 and isinstance(parsed, dict) and parsed.get("access_token"):
        return parsed
    if isinstance(parsed, dict) and parsed.get("errcode") == "M_USER_IN_USE":
        # Left over from an earlier run against the same server: log in instead.
        return login(srv, username, password)
    raise SetupFailed(f"{srv.label}: shared-secret registration -> {status} {text[:300]}")


def login(srv: Server, user: str, password: str) -> dict:
    resp = srv.expect("POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
    if not resp.get("access_token"):
        raise SetupFailed(f"{srv.label}: login of {user} returned no access_token: {resp}")
    return resp


def run_scenario(srv: Server) -> list[tuple[str, str, int, object, str]]:
    """Sets up the data and calls every admin endpoint.

    Returns (method, path template, status, JSON, raw text) per endpoint.
    """
    admin = register_admin(srv, "shapeadmin", "pw")
    tok = srv.admin_token = admin["access_token"]
    server = srv.server_name = admin["user_id"].split(":", 1)[1]
    bob_id = f"@shapebob:{server}"
    bob_q = q(bob_id)

    status, parsed, text = srv.call("PUT", f"/_synapse/admin/v2/users/{bob_q}", tok,
                                    {"password": "pw", "displayname": "Bob"})
    if status not in (200, 201):
        raise SetupFailed(f"{srv.label}: create shapebob -> {status} {text[:300]}")
    bob = login(srv, "shapebob", "pw")["access_token"]

    room = srv.expect("POST", "/_matrix/client/v3/createRoom", bob,
                      {"name": "Shape room", "preset": "public_chat", "visibility": "public"})["room_id"]
    room_q = q(room)
    event_id = srv.expect("PUT", f"/_matrix/client/v3/rooms/{room_q}/send/m.room.message/t1", bob,
                          {"msgtype": "m.text", "body": "hi"})["event_id"]
    srv.expect("POST", f"/_matrix/client/v3/rooms/{room_q}/report/{q(event_id)}", bob,
               {"reason": "spam", "score": -100})
    content_uri = srv.expect("POST", "/_matrix/media/v3/upload", bob,
                             raw=b"shape", content_type="text/plain")["content_uri"]
    media_server, media_id = content_uri[len("mxc://"):].split("/", 1)
    if media_server != server:
        raise SetupFailed(f"{srv.label}: upload returned {content_uri!r}, not on {server}")

    reg_token = srv.expect("POST", "/_synapse/admin/v1/registration_tokens/new", tok,
                           {"uses_allowed": 3})["token"]

    results: list[tuple[str, str, int, object, str]] = []

    def record(method: str, template: str, path: str, token: str | None = tok, body=None):
        status, parsed, text = srv.call(method, path, token, body)
        results.append((method, template, status, parsed, text))
        return status, parsed

    def not_called(method: str, template: str, why: str):
        # Status 0 marks a request that could not be made; it never matches.
        results.append((method, template, 0, None, f"not called: {why}"))

    U = "/_synapse/admin/v1/users"
    record("GET", "/_synapse/admin/v1/server_version", "/_synapse/admin/v1/server_version")
    record("GET", "/_synapse/admin/v2/users?from=0&limit=10", "/_synapse/admin/v2/users?from=0&limit=10")
    record("GET", "/_synapse/admin/v2/users/{user}", f"/_synapse/admin/v2/users/{bob_q}")
    record("GET", "/_synapse/admin/v1/whois/{user}", f"/_synapse/admin/v1/whois/{bob_q}")
    record("GET", "/_synapse/admin/v1/users/{user}/joined_rooms", f"{U}/{bob_q}/joined_rooms")
    record("GET", "/_synapse/admin/v2/users/{user}/devices", f"/_synapse/admin/v2/users/{bob_q}/devices")
    record("GET", "/_synapse/admin/v1/users/{user}/admin", f"{U}/{bob_q}/admin")

    R = "/_synapse/admin/v1/rooms"
    record("GET", R, R)
    record("GET", R + "/{room}", f"{R}/{room_q}")
    record("GET", R + "/{room}/members", f"{R}/{room_q}/members")
    record("GET", R + "/{room}/state", f"{R}/{room_q}/state")
    record("GET", R + "/{room}/block", f"{R}/{room_q}/block")

    status, reports = record("GET", "/_synapse/admin/v1/event_reports", "/_synapse/admin/v1/event_reports")
    report_list = reports.get("event_reports") if isinstance(reports, dict) else None
    report_id = None
    if isinstance(report_list, list) and report_list:
        mine = [r for r in report_list if isinstance(r, dict) and r.get("event_id") == event_id]
        report_id = (mine or report_list)[0].get("id")
    if report_id is None:
        not_called("GET", "/_synapse/admin/v1/event_reports/{id}", "no report in the list")
    else:
        record("GET", "/_synapse/admin/v1/event_reports/{id}",
               f"/_synapse/admin/v1/event_reports/{q(str(report_id))}")

    record("GET", "/_synapse/admin/v1/users/{user}/media", f"{U}/{bob_q}/media")
    record("GET", "/_synapse/admin/v1/media/{server}/{media_id}",
           f"/_synapse/admin/v1/media/{q(server)}/{q(media_id)}")
    record("GET", "/_synapse/admin/v1/room/{room}/media", f"/_synapse/admin/v1/room/{room_q}/media")
    record("GET", "/_synapse/admin/v1/registration_tokens", "/_synapse/admin/v1/registration_tokens")
    record("GET", "/_synapse/admin/v1/registration_tokens/{token}",
           f"/_synapse/admin/v1/registration_tokens/{q(reg_token)}")

    rl = "/_synapse/admin/v1/users/{user}/override_ratelimit"
    record("POST", rl, f"{U}/{bob_q}/override_ratelimit", body={"messages_per_second": 5, "burst_count": 10})
    record("GET", rl, f"{U}/{bob_q}/override_ratelimit")

    record("POST", "/_synapse/admin/v1/media/quarantine/{server}/{media_id}",
           f"/_synapse/admin/v1/media/quarantine/{q(server)}/{q(media_id)}", body={})

    # Error shapes.
    record("GET", "/_synapse/admin/v2/users/{nobody} (404)", f"/_synapse/admin/v2/users/{q('@nobody:' + server)}")
    record("GET", "/_synapse/admin/v2/users (non-admin, 403)", "/_synapse/admin/v2/users", token=bob)
    record("GET", "/_synapse/admin/v2/users?limit=-1 (400)", "/_synapse/admin/v2/users?limit=-1")

    # Room deletion last: it removes the room the calls above look at.
    status, deleted = record("DELETE", "/_synapse/admin/v2/rooms/{room}", f"/_synapse/admin/v2/rooms/{room_q}",
                             body={"purge": True})
    delete_id = deleted.get("delete_id") if isinstance(deleted, dict) else None
    status_template = "/_synapse/admin/v2/rooms/delete_status/{delete_id}"
    if not isinstance(delete_id, str) or not delete_id:
        not_called("GET", status_template, "the deletion returned no delete_id")
        return results
    path = f"/_synapse/admin/v2/rooms/delete_status/{q(delete_id)}"
    for attempt in range(100):
        if attempt:
            time.sleep(0.1)
        status, parsed, text = srv.call("GET", path, tok)
        if not (status == 200 and isinstance(parsed, dict)
                and parsed.get("status") in ("active", "scheduled", "shutting_down", "purging")):
            break
    results.append(("GET", status_template, status, parsed, text))
    return results


# --- shape comparison ---------------------------------------------------------

def type_class(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def pick_counterpart(hearth: list, synapse_first):
    """The Hearth element to compare with Synapse's first one.

    Normally Hearth's first element; for events (objects with a "type"), the
    first Hearth element of the same type (and state_key), since servers list
    room state in different orders.
    """
    first = hearth[0]
    if isinstance(synapse_first, dict) and isinstance(first, dict) and "type" in synapse_first:
        for cand in hearth:
            if (isinstance(cand, dict) and cand.get("type") == synapse_first.get("type")
                    and cand.get("state_key") == synapse_first.get("state_key")):
                return cand
        for cand in hearth:
            if isinstance(cand, dict) and cand.get("type") == synapse_first.get("type"):
                return cand
    return first


def compare(hearth, synapse, path: str, dynamic: set[str], sqlite_bools: set[str],
            out: dict[str, list[str]]) -> None:
    h_cls, s_cls = type_class(hearth), type_class(synapse)
    if h_cls == "null" or s_cls == "null":
        return
    if path in sqlite_bools and h_cls == "bool" and s_cls == "number" and synapse in (0, 1):
        return
    if h_cls != s_cls:
        out["types"].append(f"{path or '<root>'}: hearth {h_cls}, synapse {s_cls}")
        return
    if h_cls == "object":
        if path in dynamic:
            # Keys are data: compare the first entry of each side.
            if hearth and synapse:
                compare(next(iter(hearth.values())), next(iter(synapse.values())),
                        join(path, "*"), dynamic, sqlite_bools, out)
            return
        for key in synapse:
            if key not in hearth:
                out["missing"].append(join(path, key))
        for key in hearth:
            if key not in synapse:
                out["extra"].append(join(path, key))
        for key in synapse:
            if key in hearth:
                compare(hearth[key], synapse[key], join(path, key), dynamic, sqlite_bools, out)
    elif h_cls == "array":
        if hearth and synapse:
            compare(pick_counterpart(hearth, synapse[0]), synapse[0], f"{path}[]", dynamic, sqlite_bools, out)


def compare_endpoint(key: str, h, s) -> tuple[bool, str]:
    """Returns (failed, line) for one endpoint. h and s are (status, JSON, raw)."""
    (h_status, h_json, h_raw), (s_status, s_json, s_raw) = h, s
    out: dict[str, list[str]] = {"missing": [], "extra": [], "types": []}
    problems: list[str] = []
    if h_status == 0 or s_status == 0:
        problems.append("not called on " + " and ".join(
            name for name, st in (("hearth", h_status), ("synapse", s_status)) if st == 0))
    elif h_status != s_status:
        problems.append(f"status: hearth {h_status}, synapse {s_status}")
    h_is_json = h_json is not None or h_raw.strip() in ("null",)
    s_is_json = s_json is not None or s_raw.strip() in ("null",)
    if h_is_json != s_is_json:
        problems.append("body: " + ("hearth" if not h_is_json else "synapse")
                        + f" is not JSON ({(h_raw if not h_is_json else s_raw)[:80]!r})")
    compare(h_json, s_json, "", DYNAMIC_KEYS.get(key, set()), SQLITE_BOOLEANS.get(key, set()), out)
    if isinstance(h_json, dict) and isinstance(s_json, dict) and s_status >= 400:
        if h_json.get("errcode") != s_json.get("errcode"):
            problems.append(f"errcode: hearth {h_json.get('errcode')}, synapse {s_json.get('errcode')}")

    allowed = ALLOWED.get(key, {})
    real_missing = [m for m in out["missing"] if m not in allowed]
    allowed_missing = [m for m in out["missing"] if m in allowed]
    failed = bool(problems or real_missing or out["types"])
    if not failed and not out["extra"] and not allowed_missing:
        return False, f"OK  {key}"
    parts = []
    if problems:
        parts.append("; ".join(problems))
    parts.append(f"missing on hearth: {real_missing}")
    parts.append(f"extra on hearth: {out['extra']}")
    parts.append(f"type differences: {out['types']}")
    if allowed_missing:
        parts.append(f"allowed: {allowed_missing}")
    tag = "DIFF" if failed else "OK "
    return failed, f"{tag} {key}: " + "; ".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__.split("Usage:")[1].split("\n\n")[0].strip(), file=sys.stderr)
        return 2
    try:
        hearth = Server("hearth", argv[1], argv[2])
        synapse = Server("synapse", argv[3], argv[4])
    except ValueError as err:
        print(f"usage error: {err}", file=sys.stderr)
        return 2
    try:
        h_results = run_scenario(hearth)
        s_results = run_scenario(synapse)
    except SetupFailed as err:
        print(f"FAIL setup: {err}")
        return 2

    dump = os.environ.get("ADMIN_SHAPES_DUMP")
    if dump:
        with open(dump, "w") as fh:
            json.dump({name: [{"endpoint": f"{m} {t}", "status": st, "body": js if js is not None else raw}
                              for m, t, st, js, raw in res]
                       for name, res in (("hearth", h_results), ("synapse", s_results))}, fh, indent=1)

    s_by_key = {f"{m} {t}": (st, js, raw) for m, t, st, js, raw in s_results}
    failures = 0
    for method, template, status, js, raw in h_results:
        key = f"{method} {template}"
        failed, line = compare_endpoint(key, (status, js, raw), s_by_key.get(key, (0, None, "")))
        failures += failed
        print(line)
    total = len(h_results)
    print(f"{total - failures} of {total} endpoints match, {failures} differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
