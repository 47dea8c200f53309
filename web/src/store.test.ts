import { describe, expect, it } from "vitest";
import type { MatrixEvent } from "./matrix";
import { emptyState, reduce, roomName, shownTimeline, type AppState, type SyncBody } from "./store";

const R = "!room:hs";
let ts = 1_000;
function msg(id: string, body: string, extra: Partial<MatrixEvent> = {}): MatrixEvent {
  ts += 1;
  return { event_id: id, type: "m.room.message", sender: "@bob:hs", origin_server_ts: ts, content: { msgtype: "m.text", body }, ...extra };
}
function member(userId: string, name: string, membership = "join"): MatrixEvent {
  return { event_id: `$m-${userId}-${membership}`, type: "m.room.member", sender: userId, state_key: userId, origin_server_ts: 1, content: { membership, displayname: name } };
}
function sync(next: string, events: MatrixEvent[], opts: { limited?: boolean; prev?: string; state?: MatrixEvent[] } = {}): SyncBody {
  return {
    next_batch: next,
    rooms: { join: { [R]: { state: { events: opts.state ?? [] }, timeline: { events, limited: opts.limited ?? false, prev_batch: opts.prev ?? "p0" } } } },
  };
}
const ids = (s: AppState) => s.rooms[R].timeline.map((e) => e.event_id);

describe("sync reducer", () => {
  it("appends new events and skips ones already held (a resumed stream may repeat)", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", [msg("$1", "a"), msg("$2", "b")]) });
    s = reduce(s, { kind: "sync", body: sync("s2", [msg("$2", "b"), msg("$3", "c")]) });
    expect(ids(s)).toEqual(["$1", "$2", "$3"]);
    expect(s.nextBatch).toBe("s2");
  });

  it("starts over after a gap and pages back from its token", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", [msg("$1", "a")], { prev: "first" }) });
    s = reduce(s, { kind: "sync", body: sync("s2", [msg("$9", "z")], { limited: true, prev: "gap" }) });
    expect(ids(s)).toEqual(["$9"]);
    expect(s.rooms[R].prevBatch).toBe("gap");
    s = reduce(s, { kind: "backfill", roomId: R, from: "gap", chunk: [msg("$8", "y"), msg("$9", "z"), msg("$7", "x")], end: "older", state: [] });
    expect(ids(s)).toEqual(["$7", "$8", "$9"]);
    expect(s.rooms[R].prevBatch).toBe("older");
    // The same page again (two requests for one token) changes nothing.
    const again = reduce(s, { kind: "backfill", roomId: R, from: "gap", chunk: [msg("$6", "w")], end: "x", state: [] });
    expect(again).toBe(s);
    s = reduce(s, { kind: "backfill", roomId: R, from: "older", chunk: [], end: "older", state: [] });
    expect(s.rooms[R].prevBatch).toBeNull();
  });

  it("ignores a page that arrives after a gap replaced the window", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", [msg("$1", "a")], { prev: "t1" }) });
    s = reduce(s, { kind: "sync", body: sync("s2", [msg("$50", "b")], { limited: true, prev: "t50" }) });
    const late = reduce(s, { kind: "backfill", roomId: R, from: "t1", chunk: [msg("$0", "old")], end: "t0", state: [] });
    expect(late).toBe(s);
    expect(s.rooms[R].prevBatch).toBe("t50");
  });

  it("starts every room over when the stream was reset, and drops sent echoes lost in a gap", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", [msg("$1", "a")]) });
    s = reduce(s, { kind: "echo", roomId: R, pending: { txnId: "t", type: "m.room.message", content: { body: "x" }, ts: 1, status: "sending" } });
    s = reduce(s, { kind: "echoStatus", roomId: R, txnId: "t", status: "sent", eventId: "$x" });
    s = reduce(s, { kind: "sync", body: sync("s9", [msg("$9", "z")], { prev: "p9" }), reset: true });
    expect(ids(s)).toEqual(["$9"]);
    expect(s.rooms[R].pending).toEqual([]);
  });

  it("replaces a local echo by its event, matched by transaction ID or by event ID", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", []) });
    s = reduce(s, { kind: "echo", roomId: R, pending: { txnId: "t1", type: "m.room.message", content: { body: "hi" }, ts: 1, status: "sending" } });
    s = reduce(s, { kind: "echo", roomId: R, pending: { txnId: "t2", type: "m.room.message", content: { body: "yo" }, ts: 2, status: "sending" } });
    s = reduce(s, { kind: "echoStatus", roomId: R, txnId: "t2", status: "sent", eventId: "$t2" });
    expect(s.rooms[R].pending.map((p) => p.status)).toEqual(["sending", "sent"]);
    s = reduce(s, { kind: "sync", body: sync("s2", [msg("$t1", "hi", { unsigned: { transaction_id: "t1" } }), msg("$t2", "yo")]) });
    expect(s.rooms[R].pending).toEqual([]);
    expect(ids(s)).toEqual(["$t1", "$t2"]);
  });

  it("drops an echo at once when its send answers after the event already came down", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", []) });
    s = reduce(s, { kind: "echo", roomId: R, pending: { txnId: "t", type: "m.room.message", content: { body: "x" }, ts: 1, status: "sending" } });
    s = reduce(s, { kind: "sync", body: sync("s2", [msg("$x", "x")]) });
    s = reduce(s, { kind: "echoStatus", roomId: R, txnId: "t", status: "sent", eventId: "$x" });
    expect(s.rooms[R].pending).toEqual([]);
  });

  it("keeps unread counts, typing, receipts, m.direct and presence", () => {
    const body: SyncBody = {
      next_batch: "s1",
      rooms: {
        join: {
          [R]: {
            timeline: { events: [msg("$1", "a")], limited: false, prev_batch: "p" },
            unread_notifications: { notification_count: 3, highlight_count: 1 },
            ephemeral: {
              events: [
                { type: "m.typing", content: { user_ids: ["@bob:hs"] } },
                { type: "m.receipt", content: { $1: { "m.read": { "@bob:hs": { ts: 5 } } } } },
              ],
            },
          },
        },
      },
      account_data: { events: [{ type: "m.direct", content: { "@bob:hs": [R] } }] },
      presence: { events: [{ sender: "@bob:hs", content: { presence: "online", currently_active: true } }] },
    };
    const s = reduce(emptyState, { kind: "sync", body });
    const room = s.rooms[R];
    expect([room.unread, room.highlight]).toEqual([3, 1]);
    expect(room.typing).toEqual(["@bob:hs"]);
    expect(room.receipts).toEqual({ "@bob:hs": "$1" });
    expect(s.direct).toEqual({ "@bob:hs": [R] });
    expect(s.presence["@bob:hs"]).toEqual({ presence: "online", currentlyActive: true });
  });

  it("applies a redaction to the event it names", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", [msg("$1", "secret")]) });
    s = reduce(s, { kind: "sync", body: sync("s2", [{ ...msg("$r", ""), type: "m.room.redaction", redacts: "$1", content: {} }]) });
    expect(s.rooms[R].timeline[0].content).toEqual({});
  });

  it("names a room by its name, else its alias, else its other members", () => {
    let s = reduce(emptyState, { kind: "sync", body: sync("s1", [], { state: [member("@me:hs", "Me"), member("@bob:hs", "Bob")] }) });
    expect(roomName(s.rooms[R], "@me:hs")).toBe("Bob");
    s = reduce(s, { kind: "sync", body: sync("s2", [{ ...msg("$n", ""), type: "m.room.name", state_key: "", content: { name: "Lounge" } }]) });
    expect(roomName(s.rooms[R], "@me:hs")).toBe("Lounge");
  });

  it("shows an invite under the inviter's name", () => {
    const invite: MatrixEvent = { ...member("@me:hs", "Me", "invite"), sender: "@bob:hs" };
    const s = reduce(emptyState, {
      kind: "sync",
      body: { next_batch: "s", rooms: { invite: { [R]: { invite_state: { events: [invite, member("@bob:hs", "Bob")] } } } } },
    });
    expect(s.rooms[R].membership).toBe("invite");
    expect(roomName(s.rooms[R], "@me:hs")).toBe("Bob");
  });
});

describe("shown timeline", () => {
  it("folds edits by the sender into the message and counts reactions", () => {
    const original = msg("$1", "helo");
    const edit = msg("$2", "* hello", {
      content: { msgtype: "m.text", body: "* hello", "m.new_content": { msgtype: "m.text", body: "hello" }, "m.relates_to": { rel_type: "m.replace", event_id: "$1" } },
    });
    const foreignEdit = msg("$3", "* hacked", {
      sender: "@eve:hs",
      content: { body: "* hacked", "m.new_content": { body: "hacked" }, "m.relates_to": { rel_type: "m.replace", event_id: "$1" } },
    });
    const reaction = (id: string, sender: string): MatrixEvent => ({
      event_id: id,
      type: "m.reaction",
      sender,
      origin_server_ts: 9,
      content: { "m.relates_to": { rel_type: "m.annotation", event_id: "$1", key: "👍" } },
    });
    const reply = msg("$4", "yes", { content: { body: "yes", "m.relates_to": { "m.in_reply_to": { event_id: "$1" } } } });
    const shown = shownTimeline([original, edit, foreignEdit, reaction("$5", "@a:hs"), reaction("$6", "@b:hs"), reply]);
    expect(shown.map((s) => s.event.event_id)).toEqual(["$1", "$4"]);
    expect(shown[0].content.body).toBe("hello");
    expect(shown[0].edited).toBe(true);
    expect(Object.keys(shown[0].reactions["👍"])).toEqual(["@a:hs", "@b:hs"]);
    expect(shown[1].replyTo).toBe("$1");
  });
});
