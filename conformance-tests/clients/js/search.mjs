#!/usr/bin/env node
// Server-side search as Element runs it, through matrix-js-sdk's searchRoomEvents (newest first,
// one event of context either side, senders' profiles) and backPaginateRoomEventsSearch: every
// match arrives once, in order, with its context and highlights; a non-member finds nothing.
//
// Usage: node search.mjs --homeserver http://127.0.0.1:PORT
// Prints "ok <step>" per step and "N passed, M failed"; exit status 0 when all passed.
// Only loopback addresses are contacted; every wait is bounded.

import { check, finish, homeserver, register, started, watchdog } from "./checks.mjs";

const BASE_URL = homeserver();
const timer = watchdog();

const alice = await register(BASE_URL, "alice");
const bob = await register(BASE_URL, "bob");
const carol = await register(BASE_URL, "carol");
await alice.setDisplayName("Alice Searcher");
const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Search" });
await bob.joinRoom(roomId);
const sent = [];
for (let n = 0; n < 23; n++) {
    await alice.sendTextMessage(roomId, `filler ${n}`);
    if (n % 2 === 0) sent.push((await alice.sendTextMessage(roomId, `the needles number ${n}`)).event_id);
}
await started(bob);

const results = await bob.searchRoomEvents({ term: "needle" });
check("a first page of matches", results.results.length === 10, `got ${results.results.length}`);
check("the count of all matches", results.count === sent.length, `count=${results.count}`);
check("the matched word is highlighted", results.highlights.includes("needles"), JSON.stringify(results.highlights));
// The newest match has nothing after it yet; the one before it has a neighbour either side.
const first = results.results[0].context;
const second = results.results[1].context;
check(
    "each result comes with its neighbours",
    first.getEvent().getId() === sent[sent.length - 1] &&
        second.getTimeline().map((e) => e.getContent().body).join("|") ===
            `filler ${2 * (sent.length - 2)}|the needles number ${2 * (sent.length - 2)}|filler ${2 * (sent.length - 2) + 1}`,
    `timeline=${second.getTimeline().map((e) => e.getContent().body)}`,
);
check(
    "and with its sender's profile",
    first.getEvent().sender?.name === "Alice Searcher" || first.getEvent().getSender() === alice.getUserId(),
    `sender=${first.getEvent().sender?.name}`,
);
let pages = 1;
while (results.next_batch && pages < 10) {
    await bob.backPaginateRoomEventsSearch(results);
    pages += 1;
}
const found = results.results.map((r) => r.context.getEvent().getId());
check("paging back finds every match once, newest first", JSON.stringify(found) === JSON.stringify([...sent].reverse()), `pages=${pages} found=${found.length}`);

const outsider = await carol.searchRoomEvents({ term: "needle" });
check("someone outside the room finds nothing", outsider.results.length === 0 && !outsider.count, `count=${outsider.count}`);

bob.stopClient();
finish(timer);
