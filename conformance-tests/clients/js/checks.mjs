// What the small matrix-js-sdk checks share: the loopback guard, Node 20 support, quiet SDK
// logs, step reporting, bounded waits, registration and a started client.

import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";

/** The homeserver from --homeserver, which must be on loopback (exits 2 otherwise). */
export function homeserver() {
    const { values } = parseArgs({ options: { homeserver: { type: "string" } }, strict: true });
    let url;
    try {
        url = new URL(values.homeserver ?? "");
    } catch {
        url = null;
    }
    const host = url?.hostname ?? "";
    if (!(host === "localhost" || host === "[::1]" || /^127\./.test(host))) {
        console.error("usage: --homeserver http://127.0.0.1:PORT (loopback only)");
        process.exit(2);
    }
    return url.origin;
}

// matrix-js-sdk >= 38 calls Promise.withResolvers (ES2024), which Node 20 lacks.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve, reject;
        const promise = new this((res, rej) => ((resolve = res), (reject = rej)));
        return { promise, resolve, reject };
    };
}
// The SDK logs a lot through console; stdout is for results.
for (const level of ["log", "debug", "info", "warn", "trace"]) console[level] = () => {};

export const sdk = await import("matrix-js-sdk");

let passed = 0;
let failed = 0;
/** Reports one step. */
export function check(step, ok, detail = "") {
    if (ok) passed += 1;
    else failed += 1;
    process.stdout.write(`${ok ? "ok  " : "FAIL"} ${step}${ok ? "" : " " + detail}\n`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `fn()` holds, at most `ms`; returns whether it did. */
export async function until(fn, ms = 15000) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
        if (fn()) return true;
        await sleep(50);
    }
    return false;
}

/** A new account (UIA dummy stage) and a client for it. */
export async function register(base, name) {
    const username = `${name}_${randomBytes(4).toString("hex")}`;
    const body = { username, password: "js-check-pw" };
    const url = `${base}/_matrix/client/v3/register`;
    const { session } = await (await fetch(url, { method: "POST", body: JSON.stringify(body) })).json();
    const auth = { type: "m.login.dummy", session };
    const r = await (await fetch(url, { method: "POST", body: JSON.stringify({ ...body, auth }) })).json();
    return sdk.createClient({ baseUrl: base, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
}

/** Starts a client with thread support and waits (at most 30 s) for its first sync. */
export async function started(client, initialSyncLimit = 20) {
    const ready = new Promise((resolve) =>
        client.on(sdk.ClientEvent.Sync, (state) => state === sdk.SyncState.Prepared && resolve()),
    );
    await client.startClient({ initialSyncLimit, lazyLoadMembers: true, threadSupport: true });
    await Promise.race([ready, sleep(30000)]);
}

/** Ends the run after `ms` whatever happens. */
export function watchdog(ms = 120000) {
    return setTimeout(() => {
        process.stdout.write(`FAIL watchdog\n${passed} passed, ${failed + 1} failed\n`);
        process.exit(1);
    }, ms);
}

/** Prints the tally and exits: 0 when every step passed. */
export function finish(timer) {
    clearTimeout(timer);
    process.stdout.write(`${passed} passed, ${failed} failed\n`);
    process.exit(failed === 0 ? 0 : 1);
}
