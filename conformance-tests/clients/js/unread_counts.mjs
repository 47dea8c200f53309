#!/usr/bin/env node
// Unread counts as Element shows them, read through matrix-js-sdk (the SDK Element Web is built
// on): a room's badge after messages, a mention's highlight, a read receipt clearing both, and a
// thread reply counted in its thread.
//
// Usage: node unread_counts.mjs --homeserver http://127.0.0.1:PORT
// Prints "ok <step>" per step and "N passed, M failed"; exit status 0 when all passed.
// Only loopback addresses are contacted; every wait is bounded.

import { check, finish, homeserver, register, sdk, started, until, watchdog } from "./checks.mjs";

const BASE_URL = homeserver();
const { NotificationCountType } = sdk;
const timer = watchdog();

const alice = await register(BASE_URL, "alice");
const bob = await register(BASE_URL, "bob");
const { room_id: roomId } = await bob.createRoom({ preset: "public_chat", name: "Badges" });
await alice.joinRoom(roomId);
await started(alice);
const room = () => alice.getRoom(roomId);
const total = () => room()?.getUnreadNotificationCount(NotificationCountType.Total) ?? -1;
const highlight = () => room()?.getUnreadNotificationCount(NotificationCountType.Highlight) ?? -1;

await bob.sendTextMessage(roomId, "one");
await bob.sendTextMessage(roomId, "two");
check("two messages count 2", await until(() => total() === 2), `total=${total()}`);
check("no highlight yet", highlight() === 0, `highlight=${highlight()}`);

const mention = await bob.sendMessage(roomId, {
    msgtype: "m.text",
    body: "alice: ping",
    "m.mentions": { user_ids: [alice.getUserId()] },
});
check("a mention highlights", await until(() => highlight() === 1 && total() === 3), `total=${total()} highlight=${highlight()}`);

const event = await until(() => !!room()?.findEventById(mention.event_id));
check("the mention reached the client", event);
await alice.sendReadReceipt(room().findEventById(mention.event_id));
check("a read receipt clears both", await until(() => total() === 0 && highlight() === 0), `total=${total()} highlight=${highlight()}`);

const root = await bob.sendTextMessage(roomId, "thread root");
await until(() => !!room()?.findEventById(root.event_id));
await alice.sendReadReceipt(room().findEventById(root.event_id));
await bob.sendMessage(roomId, {
    msgtype: "m.text",
    body: "in the thread",
    "m.relates_to": { rel_type: "m.thread", event_id: root.event_id },
});
const inThread = () => room()?.getThreadUnreadNotificationCount(root.event_id, NotificationCountType.Total) ?? -1;
check("a thread reply counts in its thread", await until(() => inThread() === 1), `thread=${inThread()}`);

alice.stopClient();
bob.stopClient();
finish(timer);
