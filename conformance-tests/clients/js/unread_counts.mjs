#!/usr/bin/env node
// Unread counts as Element shows them, read through matrix-js-sdk (the SDK Element Web is built
// on): a room's badge after messages, a mention's highlight, a read receipt clearing both, and a
// thread reply counted in its thread.
//
// Usage: node unread_counts.mjs --homeserver http://127.0.0.1:PORT
// Prints "ok <step>" per step and "N passed, M failed"; exit status 0 when all passed.
// Only loopback addresses are contacted; every wait is bounded.

import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";

const { values: args } = parseArgs({ options: { homeserver: { type: "string" } }, strict: true });
const base = new URL(args.homeserver ?? "");
if (!["127.0.0.1", "localhost", "[::1]"].includes(base.hostname) && !/^127\./.test(base.hostname)) {
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
// The SDK logs a lot through console; keep stdout for results.
for (const level of ["log", "debug", "info", "warn", "trace"]) console[level] = () => {};

const sdk = await import("matrix-js-sdk");
const { createClient, ClientEvent, NotificationCountType, SyncState } = sdk;

let passed = 0;
let failed = 0;
const check = (step, ok, detail = "") => {
    if (ok) {
        passed += 1;
        process.stdout.write(`ok   ${step}\n`);
    } else {
        failed += 1;
        process.stdout.write(`FAIL ${step} ${detail}\n`);
    }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = 15000) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
        if (fn()) return true;
        await sleep(50);
    }
    return false;
}

async function register(name) {
    const username = `${name}_${randomBytes(4).toString("hex")}`;
    const body = { username, password: "unread-pw", initial_device_display_name: "js" };
    const url = `${BASE_URL}/_matrix/client/v3/register`;
    const first = await fetch(url, { method: "POST", body: JSON.stringify(body) });
    const { session } = await first.json();
    const done = await fetch(url, {
        method: "POST",
        body: JSON.stringify({ ...body, auth: { type: "m.login.dummy", session } }),
    });
    const r = await done.json();
    return createClient({ baseUrl: BASE_URL, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
}

async function started(client) {
    const ready = new Promise((resolve) => {
        client.on(ClientEvent.Sync, (state) => state === SyncState.Prepared && resolve());
    });
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: true, threadSupport: true });
    await Promise.race([ready, sleep(30000)]);
}

const watchdog = setTimeout(() => {
    process.stdout.write(`FAIL watchdog\n${passed} passed, ${failed + 1} failed\n`);
    process.exit(1);
}, 120000);

const alice = await register("alice");
const bob = await register("bob");
const { room_id: roomId } = await bob.createRoom({ preset: "public_chat", name: "Badges" });
await alice.joinRoom(roomId);
await started(alice);
const room = () => alice.getRoom(roomId);
const total = () => room()?.getUnreadNotificationCount(NotificationCountType.Total) ?? -1;
const highlight = () => room()?.getUnreadNotificationCount(NotificationCountType.Highlight) ?? -1;

await bob.sendTextMessage(roomId, "one");
await bob.sendTextMessage(roomId, "two");
check("two messages count 2", await until("2", () => total() === 2), `total=${total()}`);
check("no highlight yet", highlight() === 0, `highlight=${highlight()}`);

const mention = await bob.sendMessage(roomId, {
    msgtype: "m.text",
    body: "alice: ping",
    "m.mentions": { user_ids: [alice.getUserId()] },
});
check("a mention highlights", await until("h1", () => highlight() === 1 && total() === 3), `total=${total()} highlight=${highlight()}`);

const event = await until("event", () => !!room()?.findEventById(mention.event_id));
check("the mention reached the client", event);
await alice.sendReadReceipt(room().findEventById(mention.event_id));
check("a read receipt clears both", await until("0", () => total() === 0 && highlight() === 0), `total=${total()} highlight=${highlight()}`);

const root = await bob.sendTextMessage(roomId, "thread root");
await until("root", () => !!room()?.findEventById(root.event_id));
await alice.sendReadReceipt(room().findEventById(root.event_id));
await bob.sendMessage(roomId, {
    msgtype: "m.text",
    body: "in the thread",
    "m.relates_to": { rel_type: "m.thread", event_id: root.event_id },
});
const inThread = () => room()?.getThreadUnreadNotificationCount(root.event_id, NotificationCountType.Total) ?? -1;
check("a thread reply counts in its thread", await until("t1", () => inThread() === 1), `thread=${inThread()}`);

alice.stopClient();
bob.stopClient();
clearTimeout(watchdog);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);
