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
const DELAY_MS = 3000;

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

const session = alice.matrixRTC.getRoomSession(alice.getRoom(roomId));
session.joinRoomSession([{ type: "livekit", livekit_service_url: "https://livekit.invalid" }], undefined, {
    manageMediaKeys: false,
    delayedLeaveEventDelayMs: DELAY_MS,
    delayedLeaveEventRestartMs: 500,
});
const key = `_${alice.getUserId()}_${alice.getDeviceId()}_m.call`;
const membership = async () => {
    try {
        return await bob.getStateEvent(roomId, CALL, key);
    } catch {
        return null;
    }
};
let seen = null;
const poll = async (wanted, ms) => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
        seen = await membership();
        if (wanted(seen)) return true;
        await sleep(100);
    }
    return false;
};
check("the other member sees her in the call", await poll((c) => c?.application === "m.call", 15000), JSON.stringify(seen));
check("her client scheduled its delayed leave", await until(() => !!session.membershipManager?.delayId), `delayId=${session.membershipManager?.delayId}`);
const listing = await (
    await fetch(`${BASE_URL}/_matrix/client/unstable/org.matrix.msc4140/delayed_events`, {
        headers: { Authorization: `Bearer ${alice.getAccessToken()}` },
    })
).json();
check("the server lists it", (listing.scheduled ?? []).some((e) => e.state_key === key && e.delay === DELAY_MS), JSON.stringify(listing));
await sleep(2 * DELAY_MS);
check("alive and restarting, she stays in the call past the delay", (await membership())?.application === "m.call");

offline = true;
check("gone silent, the server takes her out of the call", await poll((c) => c && Object.keys(c).length === 0, 15000), JSON.stringify(seen));

alice.stopClient();
bob.stopClient();
finish(timer);
