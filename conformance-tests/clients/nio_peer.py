#!/usr/bin/env python3
"""A matrix-nio user on the other end of an encrypted conversation.

Used by tests/matrix_rust_sdk.rs: a matrix-rust-sdk client on sliding sync
invites this user to an encrypted room and sends a message; this user joins,
decrypts it, and answers with an encrypted message of its own, which the Rust
client must decrypt.

  1. logs in with a password on a fresh crypto store, uploads its keys
  2. prints "ready <device_id>"
  3. syncs: joins any room it is invited to; when it decrypts a message whose
     body is --expect it prints "received <body>" and sends --reply encrypted
     (querying and claiming keys as needed; devices are not verified)
  4. keeps syncing for a few seconds so that late key requests are answered,
     prints "done" and exits 0

Every wait is bounded by --timeout seconds; on running out it prints
"FAIL <why>" and exits 1. An undecryptable message is reported as
"undecryptable <session id>" and waited past (its key may still arrive).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time

try:
    from nio import (
        AsyncClient,
        AsyncClientConfig,
        InviteMemberEvent,
        LoginResponse,
        MegolmEvent,
        RoomMessageText,
        RoomSendResponse,
        SyncResponse,
    )
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL setup: matrix-nio with e2e is not importable ({exc})", flush=True)
    sys.exit(2)


def say(line: str) -> None:
    print(line, flush=True)


async def run(args: argparse.Namespace) -> int:
    store = tempfile.mkdtemp(prefix="nio-peer-")
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True, max_timeouts=0)
    client = AsyncClient(args.homeserver, user=args.user, store_path=store, config=config)
    try:
        login = await client.login(args.password, device_name="nio peer")
        if not isinstance(login, LoginResponse):
            say(f"FAIL login: {login}")
            return 1
        if client.should_upload_keys:
            await client.keys_upload()
        await client.sync(timeout=0, full_state=True)
        say(f"ready {client.device_id}")

        deadline = time.monotonic() + args.timeout
        replied_at: float | None = None
        while time.monotonic() < deadline:
            if replied_at is not None and time.monotonic() - replied_at > args.linger:
                say("done")
                return 0
            resp = await client.sync(timeout=1000)
            if not isinstance(resp, SyncResponse):
                continue
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            await client.send_to_device_messages()
            for room_id, info in resp.rooms.invite.items():
                if any(isinstance(e, InviteMemberEvent) for e in info.invite_state):
                    await client.join(room_id)
                    say(f"joined {room_id}")
            for room_id, info in resp.rooms.join.items():
                for event in info.timeline.events:
                    if isinstance(event, MegolmEvent):
                        say(f"undecryptable {event.session_id}")
                    elif (
                        isinstance(event, RoomMessageText)
                        and event.body == args.expect
                        and replied_at is None
                    ):
                        say(f"received {event.body}")
                        if client.should_query_keys:
                            await client.keys_query()
                        sent = await client.room_send(
                            room_id,
                            "m.room.message",
                            {"msgtype": "m.text", "body": args.reply},
                            ignore_unverified_devices=True,
                        )
                        if not isinstance(sent, RoomSendResponse):
                            say(f"FAIL send: {sent}")
                            return 1
                        say(f"sent {sent.event_id}")
                        replied_at = time.monotonic()
        say("FAIL timeout: " + ("no reply sent" if replied_at is None else "linger"))
        return 1
    finally:
        await client.close()
        shutil.rmtree(store, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homeserver", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--expect", required=True)
    parser.add_argument("--reply", required=True)
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--linger", type=float, default=5)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
