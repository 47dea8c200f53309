#!/usr/bin/env node
// Element Web start-up check, driven by matrix-js-sdk (the SDK Element Web is
// built on), against a homeserver on loopback.
//
// Usage:
//   node element_startup.mjs --homeserver http://127.0.0.1:8008 [--user-prefix ejs] [--no-crypto] [-v]
//
// Steps (each prints "ok  <step> <detail>"; the first failure prints
// "FAIL <step>: ..." and stops):
//   versions        GET /versions (what Element asks before anything else),
//                   which must list the SDK's minimum spec version
//   auth-discovery  Element's OIDC-native probe: GET /v1/auth_metadata and the
//                   older unstable msc2965 auth_issuer; 404 M_UNRECOGNIZED means
//                   "no OIDC, use password login" and is expected
//   login-flows     GET /login lists m.login.password
//   register        two users via UIA: POST /register without auth -> 401 with a
//                   session and an m.login.dummy flow, then with the dummy stage
//   login           loginRequest (m.login.password, m.id.user identifier) for both
//   client          createClient({accessToken, userId, deviceId, fetchFn}); whoami
//   crypto-init     initRustCrypto({useIndexedDB: false}) for both
//   sync            startClient({initialSyncLimit: 20, lazyLoadMembers: true, ...}),
//                   wait for PREPARED (30 s), never ERROR
//   element-extras  calls Element makes right after the first sync: own profile,
//                   key-backup probe (GET /room_keys/version, 404 M_NOT_FOUND
//                   expected on a new account), cross-signing status, TURN
//                   servers, device list
//   cross-signing   bootstrapCrossSigning with the account password (as Element's
//                   first login does) for both; isCrossSigningReady() turns true
//   create-room     encrypted room (m.megolm.v1.aes-sha2 in initial_state)
//   invite          second user is invited and sees the invite via sync
//   join            second user joins; the first sees the join, both see the
//                   room as encrypted
//   send            sendTextMessage (encrypted by the SDK)
//   receive         second user gets the event, decryptEventIfNeeded, clear body
//   stop            both clients stop
//   http-log        over the whole run: no 4xx/5xx outside the expected ones,
//                   no network error, no sync ERROR
// Then every non-2xx request seen is listed, and "N passed, M failed".
// Without working rust crypto (wasm), or with --no-crypto, the crypto steps are
// skipped and the room is a plain one; the output says so.
//
// Every request the SDK makes goes through a recording fetchFn. Every wait is
// bounded; a global watchdog ends the run. Only loopback addresses are
// contacted. Exit status: 0 all passed, 1 a step failed, 2 bad usage or
// missing dependencies.

import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";

// ---------------------------------------------------------------- output ----

const out = (line) => process.stdout.write(line + "\n");
const err = (line) => process.stderr.write(line + "\n");

// ------------------------------------------------------------- arguments ----

let args;
try {
    args = parseArgs({
        options: {
            homeserver: { type: "string" },
            "user-prefix": { type: "string", default: "ejs" },
            verbose: { type: "boolean", short: "v", default: false },
            "no-crypto": { type: "boolean", default: false },
            "overall-timeout": { type: "string", default: "240" },
        },
        strict: true,
    }).values;
} catch (e) {
    err(`usage: node element_startup.mjs --homeserver http://127.0.0.1:PORT [--user-prefix P] [--no-crypto] [-v]\n${e.message}`);
    process.exit(2);
}
if (!args.homeserver) {
    err("usage: node element_startup.mjs --homeserver http://127.0.0.1:PORT [--user-prefix P] [--no-crypto] [-v]");
    process.exit(2);
}
const VERBOSE = args.verbose;

function isLoopbackHost(hostname) {
    const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
    return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

let BASE_URL;
try {
    const u = new URL(args.homeserver);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme must be http or https");
    if (!isLoopbackHost(u.hostname)) throw new Error(`refusing non-loopback host ${u.hostname}`);
    BASE_URL = u.origin + u.pathname.replace(/\/+$/, "");
} catch (e) {
    err(`bad --homeserver: ${e.message}`);
    process.exit(2);
}

// -------------------------------------------------- SDK log capture ---------
// The SDK and the wasm crypto log through console.*; keep that off stdout
// (echoed to stderr with -v) and remember warnings/errors for a failure report.

const sdkLog = [];
const SDK_LOG_KEEP = 400;
const realConsole = { ...console };
function captureConsole(level) {
    return (...parts) => {
        const text = parts
            .map((p) => {
                if (typeof p === "string") return p;
                if (p instanceof Error) return `${p.name}: ${p.message}`;
                try {
                    return JSON.stringify(p);
                } catch {
                    return String(p);
                }
            })
            .join(" ");
        sdkLog.push({ level, text, t: Date.now() });
        if (sdkLog.length > SDK_LOG_KEEP) sdkLog.shift();
        if (VERBOSE) realConsole.error(`[sdk ${level}] ${text}`);
    };
}
for (const level of ["log", "debug", "info", "warn", "error", "trace"]) {
    console[level] = captureConsole(level);
}

// ------------------------------------------------- Node 20 compatibility ----
// matrix-js-sdk >= 38 targets Node 22 and calls Promise.withResolvers (ES2024),
// which Node 20 lacks. It is the only such API the SDK needs; add it if missing.

let polyfilled = [];
if (typeof Promise.withResolvers !== "function") {
    Object.defineProperty(Promise, "withResolvers", {
        configurable: true,
        writable: true,
        value: function withResolvers() {
            let resolve;
            let reject;
            const promise = new this((res, rej) => {
                resolve = res;
                reject = rej;
            });
            return { promise, resolve, reject };
        },
    });
    polyfilled.push("Promise.withResolvers");
}

// ------------------------------------------------------------- load SDK ----

let sdk;
try {
    sdk = await import("matrix-js-sdk");
} catch (e) {
    err(`cannot load matrix-js-sdk (run "npm ci" in this folder): ${e.message}`);
    process.exit(2);
}
const { createClient, ClientEvent, RoomEvent, SyncState, MatrixError, Method } = sdk;
let SDK_VERSION = "?";
try {
    const { readFile } = await import("node:fs/promises");
    const pkgUrl = new URL("./node_modules/matrix-js-sdk/package.json", import.meta.url);
    SDK_VERSION = JSON.parse(await readFile(pkgUrl, "utf8")).version;
} catch {
    /* version is informational only */
}

// ------------------------------------------------------ request recording ---

/** @type {Array<{n:number, who:string, method:string, path:string, status:number|string, errcode?:string, body?:string, step:string, expected?:string, ms:number}>} */
const requests = [];
let currentStep = "start";
let stopping = false;
let reqCounter = 0;

// Non-2xx answers that Element's start-up expects and handles.
const EXPECTED = [
    {
        why: "UIA first leg (session + flows)",
        test: (r, body) =>
            r.method === "POST" &&
            /\/_matrix\/client\/(v3|r0)\/register$/.test(r.path) &&
            r.status === 401 &&
            body &&
            typeof body.session === "string" &&
            Array.isArray(body.flows),
    },
    {
        why: "no OIDC-native auth (Element falls back to password login)",
        test: (r, body) =>
            r.method === "GET" &&
            (/\/_matrix\/client\/v1\/auth_metadata$/.test(r.path) ||
                /\/_matrix\/client\/unstable\/org\.matrix\.msc2965\/auth_(issuer|metadata)$/.test(r.path)) &&
            r.status === 404 &&
            body?.errcode === "M_UNRECOGNIZED",
    },
    {
        // The SDK polls this at startClient (MSC4143, MatrixRTC calls); a 404
        // means "not supported" and is cached for a day.
        why: "no MatrixRTC transports (MSC4143 probe)",
        test: (r, body) =>
            r.method === "GET" &&
            /\/_matrix\/client\/(v1|unstable\/org\.matrix\.msc4143)\/rtc\/transports$/.test(r.path) &&
            r.status === 404 &&
            body?.errcode === "M_UNRECOGNIZED",
    },
    {
        why: "no key backup yet",
        test: (r, body) =>
            r.method === "GET" &&
            /\/_matrix\/client\/(v3|r0|unstable)\/room_keys\/version$/.test(r.path) &&
            r.status === 404 &&
            body?.errcode === "M_NOT_FOUND",
    },
];

function classify(r, bodyText) {
    let body = null;
    try {
        body = bodyText ? JSON.parse(bodyText) : null;
    } catch {
        body = null;
    }
    if (body && typeof body.errcode === "string") r.errcode = body.errcode;
    for (const rule of EXPECTED) {
        if (rule.test(r, body)) {
            r.expected = rule.why;
            return;
        }
    }
}

function describeResource(resource, init) {
    let url;
    let method = (init?.method || "GET").toUpperCase();
    if (resource instanceof URL) url = resource;
    else if (typeof resource === "string") url = new URL(resource);
    else {
        url = new URL(resource.url);
        method = (init?.method || resource.method || "GET").toUpperCase();
    }
    return { url, method };
}

const realFetch = globalThis.fetch.bind(globalThis);

function recordingFetch(who) {
    return async (resource, init) => {
        const { url, method } = describeResource(resource, init);
        const r = {
            n: ++reqCounter,
            who,
            method,
            path: decodeURIComponent(url.pathname),
            query: url.search,
            status: "pending",
            step: currentStep,
            ms: 0,
        };
        requests.push(r);
        if (!isLoopbackHost(url.hostname)) {
            r.status = "refused";
            r.body = `non-loopback URL ${url.origin} not contacted`;
            throw new TypeError(r.body);
        }
        const t0 = Date.now();
        let res;
        try {
            res = await realFetch(resource, init);
        } catch (e) {
            r.ms = Date.now() - t0;
            const aborted = e?.name === "AbortError" || e?.name === "TimeoutError";
            r.status = aborted ? "aborted" : "network-error";
            r.body = `${e?.name}: ${e?.message}${e?.cause ? ` (${e.cause.code || e.cause.message})` : ""}`;
            if (aborted && (stopping || /\/sync$/.test(r.path))) r.expected = "aborted by the SDK";
            throw e;
        }
        r.ms = Date.now() - t0;
        r.status = res.status;
        if (res.status >= 300) {
            let text = "";
            try {
                text = await res.clone().text();
            } catch (e) {
                text = `<unreadable body: ${e.message}>`;
            }
            r.body = text.length > 800 ? text.slice(0, 800) + "..." : text;
            classify(r, text);
        }
        if (VERBOSE) err(`[http ${who}] ${method} ${r.path}${url.search ? "?…" : ""} -> ${r.status} (${r.ms} ms)`);
        return res;
    };
}

// Anything that bypasses fetchFn (e.g. .well-known discovery) still goes
// through the loopback guard and is recorded.
globalThis.fetch = recordingFetch("global");

const isProblem = (r) =>
    r.status === "network-error" ||
    r.status === "refused" ||
    (r.status === "aborted" && !r.expected) ||
    (typeof r.status === "number" && r.status >= 400 && !r.expected);

const isNon2xx = (r) => typeof r.status !== "number" || r.status < 200 || r.status >= 300;

function formatRequest(r, withBody) {
    let s = `#${r.n} [${r.who}] ${r.method} ${r.path}`;
    if (withBody && r.query) s += r.query.length > 200 ? r.query.slice(0, 200) + "..." : r.query;
    s += ` -> ${r.status}`;
    if (r.errcode) s += ` ${r.errcode}`;
    s += ` (sent during ${r.step})`;
    if (r.expected) s += ` expected: ${r.expected}`;
    if (withBody && r.body !== undefined) s += ` body=${r.body.replace(/\s+/g, " ")}`;
    return s;
}

let problemCursor = 0;
/** Unexpected failed requests since the previous call. */
function newProblems() {
    const found = [];
    for (let i = problemCursor; i < requests.length; i++) {
        if (requests[i].status === "pending") break;
        if (isProblem(requests[i])) found.push(requests[i]);
        problemCursor = i + 1;
    }
    return found;
}

// ---------------------------------------------------------------- helpers ---

class StepFailure extends Error {}

function fail(message) {
    throw new StepFailure(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new StepFailure(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    try {
        return await Promise.race([promise, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

async function waitFor(predicate, ms, what, intervalMs = 100) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await predicate();
        if (v) return v;
        if (Date.now() >= deadline) fail(`timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`);
        await sleep(intervalMs);
    }
}

function describeError(e) {
    if (e instanceof MatrixError || (e && e.httpStatus !== undefined)) {
        const data = e.data ? JSON.stringify(e.data) : "";
        return `HTTP ${e.httpStatus} ${e.errcode ?? ""} ${data}`.trim();
    }
    if (e instanceof Error) return `${e.name}: ${e.message}`;
    return String(e);
}

// ----------------------------------------------------------------- steps ----

let passed = 0;
let failed = 0;
const syncErrors = [];
const clients = [];

async function step(name, fn) {
    currentStep = name;
    let detail;
    try {
        detail = await fn();
    } catch (e) {
        // let requests that were in flight when the error surfaced settle
        await sleep(50);
        const problems = newProblems();
        let msg = e instanceof StepFailure ? e.message : describeError(e);
        if (problems.length) msg += "\n  failing requests:\n    " + problems.map((r) => formatRequest(r, true)).join("\n    ");
        throw Object.assign(new StepFailure(msg), { step: name });
    }
    const problems = newProblems();
    if (problems.length) {
        throw Object.assign(
            new StepFailure(
                `unexpected non-2xx / failed requests:\n    ${problems.map((r) => formatRequest(r, true)).join("\n    ")}`,
            ),
            { step: name },
        );
    }
    if (syncErrors.length) {
        throw Object.assign(new StepFailure(`sync ERROR: ${syncErrors.join("; ")}`), { step: name });
    }
    passed++;
    out(`ok  ${name}${detail ? " " + detail : ""}`);
}

// ------------------------------------------------------------------- run ----

const tag = randomBytes(4).toString("hex");
const users = [
    { name: "alice", localpart: `${args["user-prefix"]}_alice_${tag}`, password: `pw-${randomBytes(9).toString("hex")}` },
    { name: "bob", localpart: `${args["user-prefix"]}_bob_${tag}`, password: `pw-${randomBytes(9).toString("hex")}` },
];
const [alice, bob] = users;
const anon = createClient({ baseUrl: BASE_URL, fetchFn: recordingFetch("anon") });

let cryptoOn = false;
let cryptoSkipReason = "";
let roomId;
let sentEventId;
const MESSAGE = `hello from element-startup ${tag}`;

const overallMs = Math.max(30, Number(args["overall-timeout"]) || 240) * 1000;
const watchdog = setTimeout(() => {
    out(`FAIL ${currentStep}: overall timeout of ${overallMs / 1000} s reached`);
    printNon2xx();
    out(`${passed} passed, 1 failed`);
    process.exit(1);
}, overallMs);
watchdog.unref();

function printNon2xx() {
    const non2xx = requests.filter(isNon2xx);
    out(`non-2xx requests (${non2xx.length} of ${requests.length}):`);
    for (const r of non2xx) out(`  ${formatRequest(r, !r.expected)}`);
}

async function main() {
    if (VERBOSE) err(`matrix-js-sdk ${SDK_VERSION}, node ${process.version}, polyfills: ${polyfilled.join(", ") || "none"}`);

    await step("versions", async () => {
        const v = await anon.getVersions();
        if (!Array.isArray(v.versions) || v.versions.length === 0) fail(`no versions in ${JSON.stringify(v)}`);
        // Element warns that the homeserver is too old unless this holds.
        if (!(await anon.isVersionSupported(sdk.MINIMUM_MATRIX_VERSION)))
            fail(`versions ${JSON.stringify(v.versions)} lack ${sdk.MINIMUM_MATRIX_VERSION}, the SDK's minimum`);
        // Element's post-login flow opens its cross-signing set-up for a new account only when
        // this flag is advertised; without it the account's devices all stay unverified.
        if (!(await anon.doesServerSupportUnstableFeature("org.matrix.e2e_cross_signing")))
            fail(`unstable_features ${JSON.stringify(v.unstable_features)} lack org.matrix.e2e_cross_signing`);
        return `${v.versions.length} versions, latest ${v.versions[v.versions.length - 1]} (matrix-js-sdk ${SDK_VERSION}, node ${process.version}${polyfilled.length ? `, polyfilled ${polyfilled.join(",")}` : ""})`;
    });

    await step("auth-discovery", async () => {
        const results = [];
        // Stable MSC2965 endpoint, as the SDK's getAuthMetadata() asks it.
        try {
            const md = await anon.getAuthMetadata();
            results.push(`auth_metadata: issuer ${md.issuer}`);
        } catch (e) {
            if (e?.httpStatus === 404 && e?.errcode === "M_UNRECOGNIZED") results.push("auth_metadata 404 M_UNRECOGNIZED");
            else fail(`GET /_matrix/client/v1/auth_metadata: ${describeError(e)} (Element expects 200 metadata or 404 M_UNRECOGNIZED)`);
        }
        // Older Element releases probe the unstable auth_issuer endpoint.
        try {
            const r = await anon.http.request(Method.Get, "/auth_issuer", undefined, undefined, {
                prefix: "/_matrix/client/unstable/org.matrix.msc2965",
            });
            results.push(`auth_issuer: ${JSON.stringify(r)}`);
        } catch (e) {
            if (e?.httpStatus === 404 && e?.errcode === "M_UNRECOGNIZED") results.push("auth_issuer 404 M_UNRECOGNIZED");
            else fail(`GET /_matrix/client/unstable/org.matrix.msc2965/auth_issuer: ${describeError(e)} (Element expects 404 M_UNRECOGNIZED)`);
        }
        return results.join(", ");
    });

    await step("login-flows", async () => {
        const flows = await anon.loginFlows();
        const types = (flows.flows || []).map((f) => f.type);
        if (!types.includes("m.login.password")) fail(`m.login.password not offered: ${JSON.stringify(flows)}`);
        return types.join(",");
    });

    await step("register", async () => {
        const done = [];
        for (const u of users) {
            const body = {
                username: u.localpart,
                password: u.password,
                initial_device_display_name: "element-startup register",
            };
            let session;
            try {
                const r = await anon.registerRequest(body);
                fail(`POST /register without auth succeeded (${JSON.stringify(r)}); expected 401 UIA`);
            } catch (e) {
                if (e instanceof StepFailure) throw e;
                if (e?.httpStatus !== 401) fail(`POST /register without auth: ${describeError(e)}; expected 401 UIA`);
                session = e.data?.session;
                const flows = e.data?.flows || [];
                if (typeof session !== "string" || !session) fail(`401 without session: ${JSON.stringify(e.data)}`);
                if (!flows.some((f) => Array.isArray(f.stages) && f.stages.length === 1 && f.stages[0] === "m.login.dummy"))
                    fail(`no single-stage m.login.dummy flow: ${JSON.stringify(e.data)}`);
            }
            const r = await anon.registerRequest({ ...body, auth: { type: "m.login.dummy", session } });
            if (!r.user_id || !r.user_id.startsWith(`@${u.localpart}:`)) fail(`register response: ${JSON.stringify(r)}`);
            u.userId = r.user_id;
            done.push(r.user_id);
        }
        return done.join(" ");
    });

    await step("login", async () => {
        const done = [];
        for (const u of users) {
            const r = await anon.loginRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: u.localpart },
                password: u.password,
                initial_device_display_name: "element-startup (matrix-js-sdk)",
            });
            if (r.user_id !== u.userId || !r.access_token || !r.device_id) fail(`login response: ${JSON.stringify(r)}`);
            u.accessToken = r.access_token;
            u.deviceId = r.device_id;
            done.push(`${r.user_id}/${r.device_id}`);
        }
        return done.join(" ");
    });

    await step("client", async () => {
        const done = [];
        for (const u of users) {
            u.client = createClient({
                baseUrl: BASE_URL,
                accessToken: u.accessToken,
                userId: u.userId,
                deviceId: u.deviceId,
                fetchFn: recordingFetch(u.name),
                timelineSupport: true,
            });
            clients.push(u.client);
            u.client.on(ClientEvent.Sync, (state, _prev, data) => {
                u.syncStates = u.syncStates || [];
                u.syncStates.push(state);
                if (state === SyncState.Error) {
                    syncErrors.push(`${u.name}: ${describeError(data?.error)}`);
                }
            });
            const who = await u.client.whoami();
            if (who.user_id !== u.userId) fail(`whoami: ${JSON.stringify(who)}`);
            if (who.device_id !== undefined && who.device_id !== u.deviceId) fail(`whoami device: ${JSON.stringify(who)}`);
            done.push(`${u.name}=${who.user_id}`);
        }
        return `whoami ${done.join(" ")}`;
    });

    await step("crypto-init", async () => {
        if (args["no-crypto"]) {
            cryptoSkipReason = "--no-crypto given";
            return "SKIPPED: --no-crypto given; continuing without E2EE";
        }
        try {
            for (const u of users) await u.client.initRustCrypto({ useIndexedDB: false });
        } catch (e) {
            const problems = requests.filter(isProblem);
            if (problems.length) throw e; // a server failure, not a missing wasm runtime
            cryptoSkipReason = describeError(e);
            return `SKIPPED: rust crypto does not run here (${cryptoSkipReason}); continuing without E2EE`;
        }
        cryptoOn = true;
        for (const u of users) {
            const crypto = u.client.getCrypto();
            // Element leaves this at its default (false): send to unverified devices too.
            crypto.globalBlacklistUnverifiedDevices = false;
        }
        const keys = await alice.client.getCrypto().getOwnDeviceKeys();
        return `rust crypto (wasm) up, ${alice.name} ed25519 ${keys.ed25519.slice(0, 8)}…`;
    });

    await step("sync", async () => {
        const t0 = Date.now();
        const prepared = users.map(
            (u) =>
                new Promise((resolve, reject) => {
                    const onSync = (state, _prev, data) => {
                        if (state === SyncState.Prepared) {
                            u.client.off(ClientEvent.Sync, onSync);
                            resolve();
                        } else if (state === SyncState.Error) {
                            u.client.off(ClientEvent.Sync, onSync);
                            reject(new StepFailure(`${u.name} sync state ERROR: ${describeError(data?.error)}`));
                        }
                    };
                    u.client.on(ClientEvent.Sync, onSync);
                }),
        );
        for (const u of users) {
            await u.client.startClient({
                initialSyncLimit: 20,
                lazyLoadMembers: true,
                pendingEventOrdering: "detached",
                threadSupport: true,
            });
        }
        await withTimeout(Promise.all(prepared), 30_000, "sync state PREPARED");
        return `PREPARED in ${Date.now() - t0} ms (${users.map((u) => `${u.name}: ${u.syncStates.join(">")}`).join(", ")})`;
    });

    await step("element-extras", async () => {
        const notes = [];
        for (const u of users) {
            const c = u.client;
            const profile = await c.getProfileInfo(u.userId); // OwnProfileStore
            if (u === alice) notes.push(`profile displayname=${JSON.stringify(profile.displayname ?? null)}`);
            await c.turnServer(); // Element in a browser (WebRTC) polls this
            const devices = await c.getDevices(); // session manager / DeviceListener
            if (!devices.devices?.some((d) => d.device_id === u.deviceId))
                fail(`GET /devices for ${u.name} lacks the login device ${u.deviceId}: ${JSON.stringify(devices)}`);
            if (cryptoOn) {
                const crypto = c.getCrypto();
                const backup = await crypto.getKeyBackupInfo(); // key-backup toast: GET /room_keys/version
                const status = await crypto.getCrossSigningStatus();
                if (u === alice)
                    notes.push(
                        `backup=${backup ? backup.version : "none"} crossSigning(publicKeysOnDevice=${status.publicKeysOnDevice})`,
                    );
            }
        }
        return notes.join(" ");
    });

    if (cryptoOn) {
        await step("cross-signing", async () => {
            for (const u of users) {
                const crypto = u.client.getCrypto();
                await withTimeout(
                    crypto.bootstrapCrossSigning({
                        authUploadDeviceSigningKeys: async (makeRequest) => {
                            await makeRequest({
                                type: "m.login.password",
                                identifier: { type: "m.id.user", user: u.userId },
                                password: u.password,
                            });
                        },
                    }),
                    20_000,
                    `${u.name} bootstrapCrossSigning`,
                );
            }
            for (const u of users) {
                await waitFor(() => u.client.getCrypto().isCrossSigningReady(), 15_000, `${u.name} isCrossSigningReady()`, 250);
            }
            const v = await alice.client.getCrypto().getDeviceVerificationStatus(alice.userId, alice.deviceId);
            if (!v?.signedByOwner) fail(`alice's device is not signed by her self-signing key: ${JSON.stringify(v)}`);
            return "both users cross-signing ready, own device signed by owner";
        });
    }

    await step("create-room", async () => {
        const initialState = cryptoOn
            ? [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
            : [];
        const r = await alice.client.createRoom({
            name: `element-startup ${tag}`,
            preset: "private_chat",
            visibility: "private",
            initial_state: initialState,
        });
        if (!r.room_id) fail(`createRoom: ${JSON.stringify(r)}`);
        roomId = r.room_id;
        await waitFor(() => alice.client.getRoom(roomId), 15_000, "the new room in alice's sync");
        if (cryptoOn) {
            await waitFor(
                () => alice.client.getCrypto().isEncryptionEnabledInRoom(roomId),
                10_000,
                "alice's client to see m.room.encryption",
            );
        }
        return `${roomId}${cryptoOn ? " encrypted (m.megolm.v1.aes-sha2)" : " (plain: crypto skipped)"}`;
    });

    await step("invite", async () => {
        await alice.client.invite(roomId, bob.userId);
        await waitFor(
            () => bob.client.getRoom(roomId)?.getMyMembership() === "invite",
            15_000,
            "bob's sync to show the invite",
        );
        return `${bob.userId} invited`;
    });

    await step("join", async () => {
        await bob.client.joinRoom(roomId);
        await waitFor(
            () => bob.client.getRoom(roomId)?.getMyMembership() === "join",
            15_000,
            "bob's sync to show the room as joined",
        );
        await waitFor(
            () => alice.client.getRoom(roomId)?.getMember(bob.userId)?.membership === "join",
            15_000,
            "alice's sync to show bob joined",
        );
        if (cryptoOn) {
            await waitFor(
                () => bob.client.getCrypto().isEncryptionEnabledInRoom(roomId),
                10_000,
                "bob's client to see the room as encrypted",
            );
        }
        const members = alice.client.getRoom(roomId).getJoinedMembers().map((m) => m.userId);
        return `joined members seen by alice: ${members.length}`;
    });

    await step("send", async () => {
        // Watch bob's Room.timeline from before the send on.
        bob.seen = new Map();
        bob.client.on(RoomEvent.Timeline, (event, room) => {
            if (room?.roomId === roomId && event.getSender() === alice.userId) bob.seen.set(event.getId(), event);
        });
        const r = await withTimeout(alice.client.sendTextMessage(roomId, MESSAGE), 30_000, "sendTextMessage");
        if (!r?.event_id) fail(`sendTextMessage: ${JSON.stringify(r)}`);
        sentEventId = r.event_id;
        // Element greys a message out until its remote echo comes back in the
        // sender's own /sync; wait for that echo to land in the live timeline.
        const room = alice.client.getRoom(roomId);
        const echo = await waitFor(
            () => {
                const ev = room?.getLiveTimeline().getEvents().find((e) => e.getId() === sentEventId);
                return ev && !ev.status ? ev : null;
            },
            15_000,
            "the remote echo of the message in alice's /sync",
        );
        const wire = echo.getWireType();
        if (cryptoOn && wire !== "m.room.encrypted") fail(`alice's event went out as ${wire}, not m.room.encrypted`);
        return `${sentEventId} as ${wire}, remote echo seen by sender`;
    });

    await step("receive", async () => {
        const event = await waitFor(
            () => bob.seen.get(sentEventId),
            20_000,
            () => `bob's Room.timeline event ${sentEventId} (seen from alice: ${[...bob.seen.keys()].join(",") || "none"})`,
        );
        if (cryptoOn) {
            if (!event.isEncrypted()) fail(`bob received ${event.getWireType()} in clear; expected m.room.encrypted`);
            await withTimeout(bob.client.decryptEventIfNeeded(event), 10_000, "decryptEventIfNeeded");
            // The room key may arrive by to-device after the event; the SDK
            // retries decryption when it does.
            await waitFor(
                () => event.getType() === "m.room.message" && !event.isDecryptionFailure(),
                15_000,
                () => `decryption (last state: type ${event.getType()}, ${event.decryptionFailureReason ?? "no failure reason"}, ${JSON.stringify(event.getContent()).slice(0, 200)})`,
                200,
            );
        }
        const content = event.getContent();
        if (content.msgtype !== "m.text" || content.body !== MESSAGE)
            fail(`bob's clear content ${JSON.stringify(content)}; expected m.text ${JSON.stringify(MESSAGE)}`);
        let shield = "";
        if (cryptoOn) {
            // What Element draws next to the message. RED here (e.g. sender
            // device not signed by its owner, as /keys/query tells it) is an
            // error indicator in Element's timeline.
            const info = await bob.client.getCrypto().getEncryptionInfoForEvent(event);
            if (info) {
                const colour = ["NONE", "GREY", "RED"][info.shieldColour] ?? String(info.shieldColour);
                const reasons = ["UNKNOWN", "UNVERIFIED_IDENTITY", "UNSIGNED_DEVICE", "UNKNOWN_DEVICE", "AUTHENTICITY_NOT_GUARANTEED", "MISMATCHED_SENDER_KEY", "SENT_IN_CLEAR", "VERIFICATION_VIOLATION", "MISMATCHED_SENDER"];
                const reason = info.shieldReason === null || info.shieldReason === undefined ? "" : `/${reasons[info.shieldReason] ?? info.shieldReason}`;
                shield = `, shield ${colour}${reason}`;
                if (colour === "RED") fail(`bob's client shows a red shield on the message${reason}`);
            }
        }
        return `${cryptoOn ? "decrypted" : "plain"} body ${JSON.stringify(content.body)}${shield}`;
    });

    await step("stop", async () => {
        stopping = true;
        for (const u of users) u.client.stopClient();
        await sleep(300);
        return "both clients stopped";
    });

    await step("http-log", async () => {
        const problems = requests.filter(isProblem);
        if (problems.length)
            fail(`unexpected non-2xx / failed requests:\n    ${problems.map((r) => formatRequest(r, true)).join("\n    ")}`);
        const pending = requests.filter((r) => r.status === "pending");
        const expected = requests.filter((r) => r.expected);
        return `${requests.length} requests, ${expected.length} expected non-2xx, ${pending.length} still pending, 0 unexpected${cryptoOn ? "" : " (crypto skipped: " + cryptoSkipReason + ")"}`;
    });
}

let exitCode = 0;
try {
    await main();
} catch (e) {
    failed = 1;
    exitCode = 1;
    const stepName = e.step || currentStep;
    const msg = e instanceof StepFailure ? e.message : describeError(e) + (e?.stack ? "\n" + e.stack : "");
    out(`FAIL ${stepName}: ${msg}`);
    const recent = sdkLog.filter((l) => l.level === "error" || l.level === "warn").slice(-15);
    if (recent.length) {
        err("last SDK warnings/errors:");
        for (const l of recent) err(`  [${l.level}] ${l.text.slice(0, 500)}`);
    }
} finally {
    stopping = true;
    for (const c of clients) {
        try {
            c.stopClient();
        } catch {
            /* already stopped */
        }
    }
}
// let the requests that stopClient() aborted settle before listing them
await waitFor(() => !requests.some((r) => r.status === "pending"), 1000, "", 50).catch(() => {});
for (const r of requests) if (r.status === "pending") r.status = "no answer before exit";
printNon2xx();
out(`${passed} passed, ${failed} failed`);
// The clients are stopped, but matrix-js-sdk leaves timers behind after
// stopClient(): per-request timeout signals (up to 110 s) and the 6-hourly
// capabilities poll. Waiting for them would only stall; stdout/stderr are
// synchronous on pipes and files, so exit now.
process.exit(exitCode);
