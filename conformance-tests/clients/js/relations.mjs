#!/usr/bin/env node
// Reactions, edits and thread replies as Element makes and shows them, through matrix-js-sdk:
// one user reacts, edits and replies in a thread; another user's client (thread support on)
// sees the reaction, the edit applied to the message it displays, and the thread with its
// reply; and the SDK reads the server's bundled aggregations of the message fetched alone.
//
// Usage: node relations.mjs --homeserver http://127.0.0.1:PORT
// Prints "ok <step>" per step and "N passed, M failed"; exit status 0 when all passed.
// Only loopback addresses are contacted; every wait is bounded.

import { check, finish, homeserver, register, sdk, started, until, watchdog } from "./checks.mjs";

const BASE_URL = homeserver();
const { RelationType, EventType, MatrixEvent } = sdk;
const timer = watchdog();

const alice = await register(BASE_URL, "alice");
const bob = await register(BASE_URL, "bob");
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
await started(bob, 30);
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
finish(timer);
