#!/usr/bin/env node
// A call as Element Call joins it, through matrix-js-sdk's MatrixRTC session: the membership
// goes out with a delayed leave (MSC4140) that the client keeps postponing. While the client is
// alive the other member sees it in the call; once its network is gone, the server sends the
// delayed leave and the other member sees the membership emptied.
//
// Usage: node matrixrtc.mjs --homeserver http://127.0.0.1:PORT
// Prints "ok <step>" per step and "N passed, M failed"; exit status 0 when all passed.
// Only loopback addresses are contacted (the LiveKit URL is never called); waits are bounded.

import { check, finish, homeserver, register, sdk, sleep, started, until, watchdog } from "./checks.mjs";

const BASE_URL = homeserver();
const timer = watchdog();
const CALL = "org.matrix.msc3401.call.member";
const DELAY_MS = 4000;

const registered = await register(BASE_URL, "alice");
const bob = await register(BASE_URL, "bob");
// Alice's client, whose network the check can cut.
let offline = false;
const fetchFn = (...args) => (offline ? Promise.reject(new Error("network gone")) : fetch(...args));
const alice = sdk.createClient({
    baseUrl: BASE_URL,
    accessToken: registered.getAccessToken(),
    userId: registered.getUserId(),
    deviceId: registered.getDeviceId(),
    fetchFn,
});
const { room_id: roomId } = await alice.createRoom({
    preset: "public_chat",
    name: "Call",
    power_level_content_override: { events: { [CALL]: 0 } },
});
await bob.joinRoom(roomId);
await started(alice);
await started(bob);

// Element Call's discovery: the transports the server is configured with.
const transports = await alice._unstable_getRTCTransports().catch((e) => e);
check(
    "the configured LiveKit transport is discovered",
    Array.isArray(transports) && transports[0]?.livekit_service_url === "https://livekit-jwt.invalid",
    JSON.stringify(transports),
);
const wellKnown = await (await fetch(`${BASE_URL}/.well-known/matrix/client`)).json();
check("and found in .well-known", wellKnown["org.matrix.msc4143.rtc_foci"]?.[0]?.type === "livekit", JSON.stringify(wellKnown));

const session = alice.matrixRTC.getRoomSession(alice.getRoom(roomId));
session.joinRoomSession([{ type: "livekit", livekit_service_url: "https://livekit.invalid" }], undefined, {
    manageMediaKeys: false,
    delayedLeaveEventDelayMs: DELAY_MS,
    delayedLeaveEventRestartMs: 500,
});
const key = `_${alice.getUserId()}_${alice.getDeviceId()}_m.call`;
// What Bob's Element shows: the call's members, from the room state his sync brings.
const bobSession = bob.matrixRTC.getRoomSession(bob.getRoom(roomId));
const inCall = () => bobSession.memberships.some((m) => m.sender === alice.getUserId());
check("the other member sees her in the call", await until(inCall, 15000), `memberships=${bobSession.memberships.length}`);
check("her client scheduled its delayed leave", await until(() => !!session.membershipManager?.delayId), `delayId=${session.membershipManager?.delayId}`);
const listing = await (
    await fetch(`${BASE_URL}/_matrix/client/unstable/org.matrix.msc4140/delayed_events`, {
        headers: { Authorization: `Bearer ${alice.getAccessToken()}` },
    })
).json();
check("the server lists it", (listing.scheduled ?? []).some((e) => e.state_key === key && e.delay === DELAY_MS), JSON.stringify(listing));
await sleep(2 * DELAY_MS);
check("alive and restarting, she stays in the call past the delay", inCall());

offline = true;
check("gone silent, the server takes her out of the call", await until(() => !inCall(), 15000), `memberships=${bobSession.memberships.length}`);
const left = bob.getRoom(roomId).currentState.getStateEvents(CALL, key);
check("her membership is the delayed leave, emptied", left && Object.keys(left.getContent()).length === 0, JSON.stringify(left?.getContent()));

alice.stopClient();
bob.stopClient();
finish(timer);
