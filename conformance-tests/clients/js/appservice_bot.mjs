// A tiny echo bridge built on matrix-appservice (the HTTP layer of
// matrix-appservice-bridge), for application-service tests.
//
// matrix-appservice's AppService receives the homeserver's transactions and
// its AppServiceRegistration writes the registration file. It has no client
// side, so calls to the homeserver are plain fetch() with the as_token
// (Authorization: Bearer) and ?user_id= when acting as a ghost.
//
// Usage:
//   node appservice_bot.mjs register OUT.yaml AS_URL SERVER_NAME PREFIX
//   node appservice_bot.mjs run REGISTRATION.yaml HOMESERVER_URL SERVER_NAME PORT
//
// "run" serves 127.0.0.1:PORT until killed and prints one JSON object a line:
//   {"ready": true}                          listening, the bot's whoami worked
//   {"event": {...}, "txn": ID}              each event of a transaction
//   {"ephemeral": {type, room_id, content}}  each ephemeral event (typing, receipts,
//                                            presence; that has "sender", no room_id)
//   {"joined": ROOM, "user": BOT}            the bot accepted an invite
//   {"replied": {room_id, event_id, ghost, in_reply_to}}
//       a real user's message was echoed back ("echo: BODY") by the ghost
//       @PREFIX_<sender localpart>, as a reply to it
//   {"error": "..."}                         something failed; the bot goes on
// Set BRIDGE_HTTP_LOG=1 to log incoming requests to stderr.
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import yaml from "js-yaml";
import { AppService, AppServiceRegistration } from "matrix-appservice";

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const escapeRegex = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// AppServiceRegistration knows only the unstable ephemeral flag and drops
// empty namespaces; add the stable flag and the empty rooms list.
class Registration extends AppServiceRegistration {
  getOutput() {
    const out = super.getOutput();
    out.namespaces = { ...out.namespaces, rooms: [] };
    out.receive_ephemeral = true;
    return out;
  }
}

function register(out, asUrl, serverName, prefix) {
  const server = escapeRegex(serverName);
  const reg = new Registration(asUrl);
  reg.setId(prefix);
  reg.setHomeserverToken(AppServiceRegistration.generateToken());
  reg.setAppServiceToken(AppServiceRegistration.generateToken());
  reg.setSenderLocalpart(`${prefix}bot`);
  reg.addRegexPattern("users", `@${prefix}_.*:${server}`, true);
  reg.addRegexPattern("aliases", `#${prefix}_.*:${server}`, true);
  reg.setRateLimited(false);
  reg.pushEphemeral = true; // de.sorunome.msc2409.push_ephemeral
  reg.outputAsYaml(out);
}

async function run(regPath, hsUrl, serverName, port) {
  const reg = AppServiceRegistration.fromObject(yaml.load(fs.readFileSync(regPath, "utf8")));
  const prefix = reg.getId();
  const asToken = reg.getAppServiceToken();
  const botId = `@${reg.getSenderLocalpart()}:${serverName}`;
  const registeredGhosts = new Set();
  // Echo messages one at a time, so replies go out in the order the messages
  // came (as bridges queue per room).
  let echoQueue = Promise.resolve();

  // One client-server API call as the bot, or as `userId` (a ghost).
  async function call(method, path, { userId, body } = {}) {
    const url = new URL(hsUrl.replace(/\/$/, "") + path);
    if (userId) url.searchParams.set("user_id", userId);
    const res = await fetch(url, {
      method,
      headers: { Authorization: `Bearer ${asToken}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error(`${method} ${url.pathname} -> ${res.status} ${json.errcode}: ${json.error}`);
      err.errcode = json.errcode;
      throw err;
    }
    return json;
  }
  const enc = encodeURIComponent;

  async function ensureRegistered(ghost, localpart) {
    if (registeredGhosts.has(ghost)) return;
    try {
      await call("POST", "/_matrix/client/v3/register", {
        body: { type: "m.login.application_service", username: localpart, inhibit_login: true },
      });
    } catch (e) {
      if (e.errcode !== "M_USER_IN_USE") throw e;
    }
    registeredGhosts.add(ghost);
  }

  async function ensureJoined(ghost, roomId) {
    const join = () => call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/join`, { userId: ghost, body: {} });
    try {
      await join();
    } catch (e) {
      if (e.errcode !== "M_FORBIDDEN") throw e;
      await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { body: { user_id: ghost } });
      await join();
    }
  }

  async function echo(event) {
    const localpart = event.sender.slice(1).split(":")[0];
    const ghostLocalpart = `${prefix}_${localpart}`;
    const ghost = `@${ghostLocalpart}:${serverName}`;
    await ensureRegistered(ghost, ghostLocalpart);
    await call("PUT", `/_matrix/client/v3/profile/${enc(ghost)}/displayname`, {
      userId: ghost,
      body: { displayname: `${localpart} (bridged)` },
    });
    await ensureJoined(ghost, event.room_id);
    const txnId = `echo-${Date.now()}-${randomBytes(4).toString("hex")}`;
    const { event_id } = await call(
      "PUT",
      `/_matrix/client/v3/rooms/${enc(event.room_id)}/send/m.room.message/${txnId}`,
      {
        userId: ghost,
        body: {
          msgtype: "m.text",
          body: `echo: ${event.content.body}`,
          "m.relates_to": { "m.in_reply_to": { event_id: event.event_id } },
        },
      },
    );
    emit({ replied: { room_id: event.room_id, event_id, ghost, in_reply_to: event.event_id } });
  }

  const as = new AppService({ homeserverToken: reg.getHomeserverToken() });
  // matrix-appservice does not pass the transaction ID to its event listeners;
  // an Express param hook sees it just before the events are emitted.
  let currentTxn = null;
  as.expressApp.param("txnId", (req, res, next, txnId) => {
    currentTxn = txnId;
    next();
  });
  if (process.env.BRIDGE_HTTP_LOG) as.on("http-log", (line) => console.error(line));

  as.on("event", (event) => {
    const content = event.content ?? {};
    const summary = {
      event_id: event.event_id,
      room_id: event.room_id,
      type: event.type,
      sender: event.sender,
    };
    if (event.state_key !== undefined) summary.state_key = event.state_key;
    if (content.body !== undefined) summary.body = content.body;
    if (event.type === "m.room.member") summary.membership = content.membership;
    emit({ event: summary, txn: currentTxn });

    const fail = (e) => emit({ error: `${event.type} ${event.event_id}: ${e.message}` });
    if (event.type === "m.room.member" && event.state_key === botId && content.membership === "invite") {
      call("POST", `/_matrix/client/v3/rooms/${enc(event.room_id)}/join`, { body: {} })
        .then(() => emit({ joined: event.room_id, user: botId }), fail);
    } else if (
      event.type === "m.room.message" &&
      event.sender !== botId &&
      !reg.isUserMatch(event.sender, true)
    ) {
      echoQueue = echoQueue.then(() => echo(event)).catch(fail);
    }
  });
  as.on("ephemeral", (event) => {
    // Presence has a sender and no room_id.
    const { type, room_id, sender, content } = event;
    emit({ ephemeral: { type, room_id, sender, content } });
  });

  try {
    await as.listen(port, "127.0.0.1");
    await call("GET", "/_matrix/client/v3/account/whoami");
  } catch (e) {
    emit({ error: `start-up: ${e.message}` });
    process.exit(1);
  }
  emit({ ready: true });
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "register" && args.length === 4) {
  register(...args);
} else if (cmd === "run" && args.length === 4) {
  await run(args[0], args[1], args[2], Number(args[3]));
} else {
  console.error("usage: appservice_bot.mjs register OUT.yaml AS_URL SERVER_NAME PREFIX\n" +
    "       appservice_bot.mjs run REGISTRATION.yaml HOMESERVER_URL SERVER_NAME PORT");
  process.exit(2);
}
