#!/usr/bin/env python3
"""Off-the-shelf client check: drive a homeserver with matrix-nio.

matrix-nio is a widely used Python Matrix client library. This script uses it
the way a bot or client would, against a running homeserver, and stops at the
first thing that does not work:

  1. register   fresh user via the User-Interactive Auth dummy flow
  2. login      password login on a second client/device
  3. whoami     token -> user_id (and device_id)
  4. profile    set_displayname, then get_displayname and get_profile
  5. devices    list devices, delete the register-time device via UIA
                (m.login.password), check it is gone and its token is dead
  6. logout     log the login client out, check its token is dead

Usage:
  python3 nio_check.py --homeserver http://127.0.0.1:8008 [--user-prefix nio]

Prints "ok  <step> <detail>" per step and ends with "N passed, M failed".
Exit status 0 if every step passed, 1 on the first failure, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

try:
    from nio import (
        Api,
        AsyncClient,
        AsyncClientConfig,
        DeleteDevicesAuthResponse,
        DeleteDevicesResponse,
        DevicesResponse,
        LoginResponse,
        LogoutResponse,
        ProfileGetDisplayNameResponse,
        ProfileGetResponse,
        ProfileSetDisplayNameResponse,
        RegisterResponse,
        WhoamiError,
        WhoamiResponse,
    )
    from nio.responses import ErrorResponse
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"FAIL setup: matrix-nio is not importable ({exc}); "
        "run: pip install -r requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)


DISPLAY_NAME = "Nio Check"
LOGIN_DEVICE_NAME = "nio-check"
REGISTER_DEVICE_NAME = "nio-check register"


class StepFailed(Exception):
    """A step's assertion did not hold; the message says what and why."""


@dataclass
class State:
    homeserver: str
    localpart: str
    password: str
    timeout: float
    user_id: str = ""
    register_device: str = ""
    register_token: str = ""
    login_device: str = ""
    reg_client: AsyncClient | None = None
    login_client: AsyncClient | None = None
    clients: list[AsyncClient] = field(default_factory=list)

    def new_client(self, user: str = "") -> AsyncClient:
        # Fail fast instead of nio's default of retrying connection errors
        # forever; still honour a couple of 429s like a real client would.
        config = AsyncClientConfig(
            max_limit_exceeded=3,
            max_timeouts=0,
            request_timeout=self.timeout,
        )
        client = AsyncClient(self.homeserver, user=user, config=config)
        self.clients.append(client)
        return client


def check(cond: bool, message: str) -> None:
    if not cond:
        raise StepFailed(message)


async def describe(resp: Any) -> str:
    """Human-readable summary of an unexpected nio response."""
    parts = [type(resp).__name__]
    if isinstance(resp, ErrorResponse):
        parts.append(f"errcode={resp.status_code!r} error={resp.message!r}")
    transport = getattr(resp, "transport_response", None)
    if transport is not None:
        parts.append(f"HTTP {transport.status}")
        try:
            # aiohttp caches the body once nio has read it.
            body = await transport.text()
            if len(body) > 400:
                body = body[:400] + "..."
            parts.append(f"body={body}")
        except Exception:  # noqa: BLE001 - best effort diagnostics only
            pass
    return " ".join(parts)


async def expect(resp: Any, cls: type, what: str) -> Any:
    if not isinstance(resp, cls):
        raise StepFailed(f"{what}: expected {cls.__name__}, got {await describe(resp)}")
    return resp


async def expect_unknown_token(state: State, token: str, device_id: str, what: str) -> None:
    """A client holding `token` must now get 401 M_UNKNOWN_TOKEN on whoami."""
    probe = state.new_client()
    probe.restore_login(state.user_id, device_id, token)
    resp = await probe.whoami()
    if not isinstance(resp, WhoamiError):
        raise StepFailed(
            f"{what}: whoami with the old token should fail, got {await describe(resp)}"
        )
    status = resp.transport_response.status if resp.transport_response else None
    check(
        status == 401 and resp.status_code == "M_UNKNOWN_TOKEN",
        f"{what}: expected HTTP 401 M_UNKNOWN_TOKEN, got {await describe(resp)}",
    )


# --------------------------------------------------------------------------
# Steps. Each returns the detail printed after "ok  <step>".


async def step_register(state: State) -> str:
    client = state.new_client()
    state.reg_client = client

    # Stage 1 of UIA: the request without "auth". nio's register() always
    # sends auth={"type": "m.login.dummy"} (plus the session if given), so
    # build the request with nio's Api.register and just drop "auth".
    method, path, data = Api.register(
        user=state.localpart,
        password=state.password,
        device_name=REGISTER_DEVICE_NAME,
    )
    body = json.loads(data)
    body.pop("auth", None)
    raw = await client.send(
        method, path, json.dumps(body), {"Content-Type": "application/json"}
    )
    text = await raw.text()
    check(
        raw.status == 401,
        f"POST /register without auth: expected HTTP 401 with UIA flows, "
        f"got HTTP {raw.status} body={text[:400]}",
    )
    try:
        uia = json.loads(text)
    except ValueError:
        raise StepFailed(f"POST /register 401 body is not JSON: {text[:400]}")
    session = uia.get("session")
    flows = uia.get("flows")
    check(
        isinstance(session, str) and session != "",
        f"UIA 401 has no string 'session': {text[:400]}",
    )
    check(
        isinstance(flows, list)
        and any(
            isinstance(f, dict) and f.get("stages") == ["m.login.dummy"] for f in flows
        ),
        f"UIA 401 offers no flow with stages ['m.login.dummy']: {text[:400]}",
    )

    # Stage 2: nio's own register(), which sends m.login.dummy + session.
    resp = await client.register(
        state.localpart,
        state.password,
        device_name=REGISTER_DEVICE_NAME,
        session_token=session,
    )
    resp = await expect(resp, RegisterResponse, "register with m.login.dummy")
    check(
        resp.user_id.startswith(f"@{state.localpart}:"),
        f"user_id {resp.user_id!r} does not match localpart {state.localpart!r}",
    )
    check(bool(resp.access_token), "register returned an empty access_token")
    check(bool(resp.device_id), "register returned an empty device_id")
    check(client.logged_in, "nio did not consider the client logged in after register")
    state.user_id = resp.user_id
    state.register_device = resp.device_id
    state.register_token = resp.access_token
    return resp.user_id


async def step_login(state: State) -> str:
    # user= is the bare localpart; nio sends it as an m.id.user identifier.
    client = state.new_client(user=state.localpart)
    state.login_client = client
    resp = await client.login(state.password, device_name=LOGIN_DEVICE_NAME)
    resp = await expect(resp, LoginResponse, "login with password")
    check(
        resp.user_id == state.user_id,
        f"login user_id {resp.user_id!r} != registered {state.user_id!r}",
    )
    check(bool(resp.device_id), "login returned an empty device_id")
    check(
        resp.device_id != state.register_device,
        f"login reused the register-time device {resp.device_id!r}; expected a new device",
    )
    check(
        resp.access_token != state.register_token,
        "login returned the same access token as register",
    )
    state.login_device = resp.device_id
    return f"{resp.user_id} device {resp.device_id}"


async def step_whoami(state: State) -> str:
    resp = await state.login_client.whoami()
    resp = await expect(resp, WhoamiResponse, "whoami")
    check(
        resp.user_id == state.user_id,
        f"whoami user_id {resp.user_id!r} != {state.user_id!r}",
    )
    # device_id is optional in whoami (added in spec v1.1), but if present
    # it must be the device the token belongs to.
    if resp.device_id is not None:
        check(
            resp.device_id == state.login_device,
            f"whoami device_id {resp.device_id!r} != login device {state.login_device!r}",
        )
    return resp.user_id


async def step_profile(state: State) -> str:
    client = state.login_client
    resp = await client.set_displayname(DISPLAY_NAME)
    await expect(resp, ProfileSetDisplayNameResponse, "set_displayname")

    resp = await client.get_displayname()
    resp = await expect(resp, ProfileGetDisplayNameResponse, "get_displayname")
    check(
        resp.displayname == DISPLAY_NAME,
        f"get_displayname returned {resp.displayname!r}, expected {DISPLAY_NAME!r}",
    )

    resp = await client.get_profile()
    resp = await expect(resp, ProfileGetResponse, "get_profile")
    check(
        resp.displayname == DISPLAY_NAME,
        f"get_profile displayname {resp.displayname!r}, expected {DISPLAY_NAME!r}",
    )
    return repr(DISPLAY_NAME)


async def list_device_ids(client: AsyncClient, what: str) -> dict[str, Any]:
    try:
        resp = await client.devices()
    except KeyError as exc:
        # nio's Device.from_dict indexes display_name, last_seen_ip and
        # last_seen_ts directly; the spec makes them optional.
        raise StepFailed(
            f"{what}: nio could not parse a device entry, missing key {exc}; "
            "nio needs device_id, display_name, last_seen_ip, last_seen_ts on "
            "every device (null is accepted)"
        )
    if not isinstance(resp, DevicesResponse):
        detail = await describe(resp)
        transport = getattr(resp, "transport_response", None)
        if transport is not None and transport.status == 200:
            detail += (
                " (nio's schema requires device_id, display_name, last_seen_ip"
                " and last_seen_ts on every device; null is accepted)"
            )
        raise StepFailed(f"{what}: expected DevicesResponse, got {detail}")
    return {d.id: d for d in resp.devices}


async def step_devices(state: State) -> str:
    client = state.login_client
    devices = await list_device_ids(client, "devices")
    for dev in (state.register_device, state.login_device):
        check(dev in devices, f"devices() does not list {dev!r}; got {sorted(devices)}")
    login_name = devices[state.login_device].display_name
    check(
        login_name == LOGIN_DEVICE_NAME,
        f"login device display_name {login_name!r}, expected {LOGIN_DEVICE_NAME!r}",
    )

    # UIA stage 1: no auth -> 401 with a session (nio turns the 401 into a
    # DeleteDevicesAuthResponse; it requires session, flows AND params).
    target = [state.register_device]
    resp = await client.delete_devices(target)
    resp = await expect(
        resp,
        DeleteDevicesAuthResponse,
        "delete_devices without auth (expected HTTP 401 with session, flows, params)",
    )
    check(
        any("m.login.password" in (f.get("stages") or []) for f in resp.flows),
        f"delete_devices UIA offers no m.login.password flow: {resp.flows}",
    )

    # UIA stage 2: the password, with the session from stage 1.
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": state.user_id},
        "password": state.password,
        "session": resp.session,
    }
    resp = await client.delete_devices(target, auth)
    await expect(resp, DeleteDevicesResponse, "delete_devices with m.login.password")

    devices = await list_device_ids(client, "devices after delete")
    check(
        state.register_device not in devices,
        f"deleted device {state.register_device!r} is still listed: {sorted(devices)}",
    )
    check(
        state.login_device in devices,
        f"login device {state.login_device!r} vanished too: {sorted(devices)}",
    )
    await expect_unknown_token(
        state, state.register_token, state.register_device, "deleted device's token"
    )
    return f"deleted {state.register_device}, its token is rejected"


async def step_logout(state: State) -> str:
    client = state.login_client
    token = client.access_token
    resp = await client.logout()
    await expect(resp, LogoutResponse, "logout")
    check(not client.logged_in, "nio still considers the client logged in after logout")
    await expect_unknown_token(state, token, state.login_device, "logged-out token")
    return f"device {state.login_device}, its token is rejected"


STEPS = [
    ("register", step_register),
    ("login", step_login),
    ("whoami", step_whoami),
    ("profile", step_profile),
    ("devices", step_devices),
    ("logout", step_logout),
]


async def run(args: argparse.Namespace) -> int:
    state = State(
        homeserver=args.homeserver.rstrip("/"),
        localpart=f"{args.user_prefix}_{secrets.token_hex(4)}",
        password="pw-" + secrets.token_hex(12),
        timeout=args.timeout,
    )
    passed = failed = 0
    try:
        for name, step in STEPS:
            try:
                detail = await step(state)
            except StepFailed as exc:
                print(f"FAIL {name}: {exc}", flush=True)
                failed = 1
                break
            except Exception as exc:  # noqa: BLE001 - report, don't traceback
                print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
                failed = 1
                break
            print(f"ok  {name} {detail}", flush=True)
            passed += 1
    finally:
        for client in state.clients:
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                pass
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--homeserver", required=True, help="base URL, e.g. http://127.0.0.1:8008"
    )
    parser.add_argument(
        "--user-prefix", default="nio", help="localpart prefix for the test user"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="per-request timeout in seconds"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="nio debug logs")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # nio logs a schema warning for every expected error response (e.g.
        # the 401s this script provokes); failures are reported with the
        # raw body anyway.
        logging.getLogger("nio.responses").setLevel(logging.ERROR)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
