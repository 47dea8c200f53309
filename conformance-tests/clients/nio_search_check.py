#!/usr/bin/env python3
"""Server-side search through matrix-nio: a bot's way of looking things up.

matrix-nio has no search method of its own, so the search goes through its authenticated
transport (AsyncClient.send) while everything else is nio's own API:

  1. setup    two users log in with nio; one creates a room and sends 15 messages with
              room_send, 10 of them with the word searched for
  2. search   POST /search finds exactly those 10, newest first, with count and highlights
  3. paging   four at a time through next_batch, every match once, in the same order
  4. outsider the other user, not in the room, finds nothing

Usage: python3 nio_search_check.py --homeserver http://127.0.0.1:8008
Prints "ok  <step>" per step and ends with "N passed, M failed"; exit status 0 when all
passed. Only the given loopback homeserver is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import urllib.request

from nio import AsyncClient, RoomCreateResponse, RoomSendResponse

PASSED = 0
FAILED = 0


def report(ok: bool, step: str, detail: str = "") -> None:
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
    print(f"{'ok  ' if ok else 'FAIL'} {step}{'' if ok else ' ' + detail}", flush=True)


def register(base: str, name: str) -> dict:
    """A fresh account through the dummy UIA stage."""
    body = {"username": f"{name}_{secrets.token_hex(4)}", "password": "nio-search-pw"}
    url = f"{base}/_matrix/client/v3/register"

    def post(payload: dict) -> tuple[int, dict]:
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    _, challenge = post(body)
    _, done = post({**body, "auth": {"type": "m.login.dummy", "session": challenge["session"]}})
    return done


def client_for(base: str, account: dict) -> AsyncClient:
    client = AsyncClient(base, account["user_id"], device_id=account["device_id"])
    client.access_token = account["access_token"]
    client.user_id = account["user_id"]
    return client


async def search(client: AsyncClient, criteria: dict, next_batch: str | None = None) -> dict:
    path = "/_matrix/client/v3/search"
    if next_batch:
        path += f"?next_batch={next_batch}"
    body = json.dumps({"search_categories": {"room_events": criteria}})
    headers = {"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"}
    resp = await client.send("POST", path, body, headers=headers)
    data = await resp.json()
    if resp.status != 200:
        raise RuntimeError(f"search answered {resp.status}: {data}")
    return data["search_categories"]["room_events"]


async def run(base: str) -> int:
    alice = client_for(base, register(base, "nio_alice"))
    carol = client_for(base, register(base, "nio_carol"))
    try:
        created = await alice.room_create(name="nio search")
        ok = isinstance(created, RoomCreateResponse)
        sent = []
        for n in range(15):
            word = "haystack" if n % 3 == 0 else "needle"
            reply = await alice.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": f"{word} {n}"})
            ok = ok and isinstance(reply, RoomSendResponse)
            if word == "needle":
                sent.append(reply.event_id)
        report(ok and len(sent) == 10, "setup", f"room={created}")

        found = await search(alice, {"search_term": "needle", "order_by": "recent"})
        ids = [r["result"]["event_id"] for r in found["results"]]
        report(
            ids == list(reversed(sent)) and found["count"] == 10 and "needle" in found["highlights"],
            "search",
            json.dumps({"ids": ids, "count": found.get("count"), "highlights": found.get("highlights")}),
        )

        paged, token, pages = [], None, 0
        while pages < 10:
            page = await search(alice, {"search_term": "needle", "order_by": "recent", "filter": {"limit": 4}}, token)
            paged += [r["result"]["event_id"] for r in page["results"]]
            pages += 1
            token = page.get("next_batch")
            if not token:
                break
        report(paged == list(reversed(sent)) and pages == 3, "paging", f"pages={pages} found={len(paged)}")

        outside = await search(carol, {"search_term": "needle"})
        report(outside["results"] == [] and outside["count"] == 0, "outsider", json.dumps(outside))
    finally:
        await alice.close()
        await carol.close()
    print(f"{PASSED} passed, {FAILED} failed")
    return 0 if FAILED == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homeserver", required=True)
    args = parser.parse_args()
    host = args.homeserver.split("//", 1)[-1].split(":")[0].split("/")[0]
    if not (host.startswith("127.") or host in ("localhost", "[::1]")):
        print("usage: --homeserver http://127.0.0.1:PORT (loopback only)", file=sys.stderr)
        return 2
    return asyncio.run(run(args.homeserver))


if __name__ == "__main__":
    sys.exit(main())
