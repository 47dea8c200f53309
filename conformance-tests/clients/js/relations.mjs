#!/usr/bin/env node
// Reactions, edits and thread replies as Element makes and shows them, through matrix-js-sdk:
// one user reacts, edits and replies in a thread; another user's client (thread support on)
// sees the reaction, the edit applied to the message it displays, and the thread with its
// reply; and the SDK reads the server's bundled aggregations of the message fetched alone.
//
// Usage: node relations.mjs --homeserver http://127.0.0.1:PORT
// Prints "ok <step>" per step and "N passed, M failed"; exit status 0 when all passed.
// Only loopback addresses are contacted; every wait is bounded.

import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";

const { values: args } = parseArgs({ options: { homeserver: { type: "string" } }, strict: true });
const base = new URL(args.homeserver ?? "");
if (base.hostname !== "localhost" && !/^127\./.test(base.hostname) && base.hostname !== "[::1]") {
    console.error("refusing a non-loopback homeserver");
    process.exit(2);
}
const BASE_URL = base.origin;

// matrix-js-sdk >= 38 calls Promise.withResolvers (ES2024), which Node 20 lacks.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve, reject;
        const promise = new this((res, rej) => ((resolve = res), (reject = rej)));
        return { promise, resolve, reject };
    };
}
for (const level of ["log", "debug", "info", "warn", "trace"]) console[level] = () => {};

const sdk = await import("matrix-js-sdk");
const { createClient, ClientEvent, SyncState, RelationType, EventType, MatrixEvent } = sdk;

let passed = 0;
let failed = 0;
const check = (step, ok, detail = "") => {
    if (ok) passed += 1;
    else failed += 1;
    process.stdout.write(`${ok ? "ok  " : "FAIL"} ${step}${ok ? "" : " " + detail}\n`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, ms = 15000) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
        if (fn()) return true;
        await sleep(50);
    }
    return false;
}

async function register(name) {
    const username = `${name}_${randomBytes(4).toString("hex")}`;
    const body = { username, password: "relations-pw" };
    const url = `${BASE_URL}/_matrix/client/v3/register`;
    const { session } = await (await fetch(url, { method: "POST", body: JSON.stringify(body) })).json();
    const done = await fetch(url, { method: "POST", body: JSON.stringify({ ...body, auth: { type: "m.login.dummy", session } }) });
    const r = await done.json();
    return createClient({ baseUrl: BASE_URL, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
}

async function started(client) {
    const ready = new Promise((resolve) => client.on(ClientEvent.Sync, (s) => s === SyncState.Prepared && resolve()));
    await client.startClient({ initialSyncLimit: 30, threadSupport: true });
    await Promise.race([ready, sleep(30000)]);
}

const watchdog = setTimeout(() => {
    process.stdout.write(`FAIL watchdog\n${passed} passed, ${failed + 1} failed\n`);
    process.exit(1);
}, 120000);

const alice = await register("alice");
const bob = await register("bob");
const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Relations" });
await bob.joinRoom(roomId);
const original = await alice.sendTextMessage(roomId, "hello");
await alice.sendEvent(roomId, EventType.Reaction, {
    "m.relates_to": { rel_type: RelationType.Annotation, event_id: original.event_id, key: "👍" },
});
await alice.sendMessage(roomId, {
    msgtype: "m.text",
    body: "* hello, world",
    "m.new_content": { msgtype: "m.text", body: "hello, world" },
    "m.relates_to": { rel_type: RelationType.Replace, event_id: original.event_id },
});
await alice.sendMessage(roomId, {
    msgtype: "m.text",
    body: "a reply in the thread",
    "m.relates_to": { rel_type: RelationType.Thread, event_id: original.event_id },
});

// Bob's client starts afterwards: everything arrives in its first sync, as when someone opens
// Element and catches up.
await started(bob);
const room = () => bob.getRoom(roomId);
const event = () => room()?.findEventById(original.event_id);
check("the message reached the client", await until(() => !!event()));
check("the edit is applied", await until(() => event()?.getContent()?.body === "hello, world"), JSON.stringify(event()?.getContent()));
const annotations = () =>
    room()?.getUnfilteredTimelineSet()?.relations?.getChildEventsForEvent(original.event_id, RelationType.Annotation, EventType.Reaction);
check("the reaction is aggregated", await until(() => (annotations()?.getSortedAnnotationsByKey() ?? []).some(([key]) => key === "👍")));
const thread = () => room()?.getThread(original.event_id);
check("the thread is known with its reply", await until(() => (thread()?.length ?? 0) === 1), `length=${thread()?.length}`);

// The server's own bundle, as the SDK reads it from an event fetched alone (GET /event).
const fetched = new MatrixEvent(await bob.fetchRoomEvent(roomId, original.event_id));
const replace = fetched.getServerAggregatedRelation(RelationType.Replace);
check("the server bundles the edit", replace?.content?.["m.new_content"]?.body === "hello, world", JSON.stringify(replace));
const summary = fetched.getServerAggregatedRelation(RelationType.Thread);
check("the server bundles the thread summary", summary?.count === 1 && summary?.latest_event?.content?.body === "a reply in the thread", JSON.stringify(summary));

alice.stopClient();
bob.stopClient();
clearTimeout(watchdog);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);
