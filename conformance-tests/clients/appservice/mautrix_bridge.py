#!/usr/bin/env python3
"""A tiny echo bridge built on mautrix-python, for application-service tests.

It exercises a homeserver's application-service support the way a real
mautrix bridge does: mautrix's AppService receives the homeserver's
transactions, and its IntentAPI (over AppServiceAPI, i.e. the as_token plus
?user_id=) acts as the bridge bot and as ghost users.

Usage:
  mautrix_bridge.py register OUT.yaml AS_URL SERVER_NAME PREFIX
      Write a registration file (fresh random tokens, exclusive user and alias
      namespaces @PREFIX_.* / #PREFIX_.*, bot @PREFIXbot, ephemeral events on).
  mautrix_bridge.py run REGISTRATION.yaml HOMESERVER_URL SERVER_NAME PORT
      Serve 127.0.0.1:PORT until killed, printing one JSON object per line:
        {"ready": true}                         listening, bot's whoami worked
        {"event": {...}, "txn": ID}             each event of a transaction
        {"ephemeral": {type, room_id, content}} each ephemeral event (typing, receipts,
                                                presence; that has "sender", no room_id)
        {"joined": ROOM, "user": BOT}           the bot accepted an invite
        {"replied": {room_id, event_id, ghost, in_reply_to}}
            a message from a real user was echoed back ("echo: BODY") by the
            ghost @PREFIX_<sender localpart>, as a reply to it
        {"error": "..."}                        something failed; the bridge goes on
      BRIDGE_LOG_LEVEL=DEBUG logs mautrix's requests to stderr.
"""

import asyncio
import json
import logging
import os
import re
import secrets
import sys

from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.types import EventType, Membership, MessageType, TextMessageEventContent
from ruamel.yaml import YAML


def emit(obj):
    print(json.dumps(obj), flush=True)


def register(out, as_url, server_name, prefix):
    server = re.escape(server_name)
    registration = {
        "id": prefix,
        "url": as_url,
        "as_token": secrets.token_hex(32),
        "hs_token": secrets.token_hex(32),
        "sender_localpart": f"{prefix}bot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@{prefix}_.*:{server}"}],
            "aliases": [{"exclusive": True, "regex": f"#{prefix}_.*:{server}"}],
            "rooms": [],
        },
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
    }
    with open(out, "w") as f:
        YAML().dump(registration, f)


class MemoryASStateStore(MemoryStateStore, ASStateStore):
    """mautrix's in-memory state store (the default one writes mx-state.json to the cwd)."""

    def __init__(self):
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


class EchoBridge(AppService):
    async def handle_transaction(self, txn_id, *, events, extra_data, ephemeral=None, **kwargs):
        # Print the raw transaction contents first, in order, then let mautrix
        # dispatch them to the handlers (which run as background tasks).
        for raw in events:
            content = raw.get("content") or {}
            event = {k: raw.get(k) for k in ("event_id", "room_id", "type", "sender")}
            if "state_key" in raw:
                event["state_key"] = raw["state_key"]
            if "body" in content:
                event["body"] = content["body"]
            if raw.get("type") == "m.room.member":
                event["membership"] = content.get("membership")
            emit({"event": event, "txn": txn_id})
        for raw in ephemeral or []:
            keys = ("type", "room_id", "sender", "content")  # presence has a sender, no room_id
            emit({"ephemeral": {k: raw[k] for k in keys if k in raw}})
        return await super().handle_transaction(
            txn_id, events=events, extra_data=extra_data, ephemeral=ephemeral, **kwargs
        )


async def run(reg_path, hs_url, server_name, port):
    with open(reg_path) as f:
        reg = YAML(typ="safe").load(f)
    prefix = reg["id"]
    ghost_re = re.compile(f"@{re.escape(prefix)}_.*:{re.escape(server_name)}")
    appserv = EchoBridge(
        server=hs_url,
        domain=server_name,
        as_token=reg["as_token"],
        hs_token=reg["hs_token"],
        bot_localpart=reg["sender_localpart"],
        id=reg["id"],
        state_store=MemoryASStateStore(),
        ephemeral_events=True,
    )
    bot_mxid = appserv.bot_mxid
    # mautrix runs each handler as its own task; echo messages one at a time
    # so replies go out in the order the messages came (as bridges queue per room).
    echo_lock = asyncio.Lock()

    @appserv.matrix_event_handler
    async def on_event(evt):
        try:
            if (
                evt.type == EventType.ROOM_MEMBER
                and evt.state_key == bot_mxid
                and evt.content.membership == Membership.INVITE
            ):
                await appserv.intent.join_room_by_id(evt.room_id)
                emit({"joined": evt.room_id, "user": bot_mxid})
            elif (
                evt.type == EventType.ROOM_MESSAGE
                and evt.sender != bot_mxid
                and not ghost_re.fullmatch(evt.sender)
            ):
                async with echo_lock:
                    await echo(evt)
        except Exception as e:
            cause = f" ({e.__cause__})" if e.__cause__ else ""
            emit({"error": f"{evt.type} {evt.event_id}: {type(e).__name__}: {e}{cause}"})

    async def echo(evt):
        localpart = evt.sender[1:].split(":", 1)[0]
        ghost = appserv.intent.user(f"@{prefix}_{localpart}:{server_name}")
        await ghost.ensure_registered()  # POST /register, m.login.application_service
        await ghost.set_displayname(f"{localpart} (bridged)")
        await ghost.ensure_joined(evt.room_id)  # joins; the bot invites it if it must
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=f"echo: {evt.content.body}")
        content.set_reply(evt.event_id)
        event_id = await ghost.send_message_event(evt.room_id, EventType.ROOM_MESSAGE, content)
        emit(
            {
                "replied": {
                    "room_id": evt.room_id,
                    "event_id": event_id,
                    "ghost": ghost.mxid,
                    "in_reply_to": evt.event_id,
                }
            }
        )

    try:
        await appserv.start(host="127.0.0.1", port=port)
        await appserv.intent.whoami()  # GET /account/whoami?user_id=<bot>
    except Exception as e:
        emit({"error": f"start-up: {type(e).__name__}: {e}"})
        sys.exit(1)
    appserv.ready = True
    emit({"ready": True})
    await asyncio.Event().wait()  # until killed


def main(argv):
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("BRIDGE_LOG_LEVEL", "WARNING"))
    if len(argv) == 6 and argv[1] == "register":
        register(*argv[2:])
    elif len(argv) == 6 and argv[1] == "run":
        asyncio.run(run(argv[2], argv[3], argv[4], int(argv[5])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
