// What the app knows of the account, as a pure reducer over sync responses, back-paginated
// pages and local echoes, so the rules (no gap, no duplicate, echo replaced by the real event)
// are tested without a browser.
import type { MatrixEvent } from "./matrix";

export type Membership = "join" | "invite" | "leave";

export interface Pending {
  txnId: string;
  type: string;
  content: Record<string, unknown>;
  ts: number;
  status: "sending" | "sent" | "failed";
  eventId?: string;
  /** A failure the network caused: sent again once the connection is back. */
  retryable?: boolean;
}

export interface RoomState {
  roomId: string;
  membership: Membership;
  /** Current state by type, then state key. */
  state: Record<string, Record<string, MatrixEvent>>;
  /** Chronological, without duplicates. */
  timeline: MatrixEvent[];
  pending: Pending[];
  /** Token to page back from the oldest event held; null once the start is reached. */
  prevBatch: string | null;
  unread: number;
  highlight: number;
  typing: string[];
  /** Latest public read receipt per user. */
  receipts: Record<string, string>;
  /** For invites: the stripped state the inviter shared. */
  invite?: MatrixEvent[];
}

export interface Presence {
  presence: string;
  currentlyActive: boolean;
}

export interface AppState {
  rooms: Record<string, RoomState>;
  nextBatch: string | null;
  direct: Record<string, string[]>;
  presence: Record<string, Presence>;
}

export const emptyState: AppState = { rooms: {}, nextBatch: null, direct: {}, presence: {} };

export type Action =
  | { kind: "sync"; body: SyncBody; reset?: boolean }
  | { kind: "echo"; roomId: string; pending: Pending }
  | { kind: "echoStatus"; roomId: string; txnId: string; status: Pending["status"]; eventId?: string; retryable?: boolean }
  | { kind: "backfill"; roomId: string; from: string; chunk: MatrixEvent[]; end: string | null; state: MatrixEvent[] };

interface JoinedRoom {
  state?: { events?: MatrixEvent[] };
  timeline?: { events?: MatrixEvent[]; limited?: boolean; prev_batch?: string };
  ephemeral?: { events?: { type: string; content: Record<string, unknown> }[] };
  unread_notifications?: { notification_count?: number; highlight_count?: number };
}

export interface SyncBody {
  next_batch: string;
  rooms?: {
    join?: Record<string, JoinedRoom>;
    invite?: Record<string, { invite_state?: { events?: MatrixEvent[] } }>;
    leave?: Record<string, JoinedRoom>;
  };
  account_data?: { events?: { type: string; content: Record<string, unknown> }[] };
  presence?: { events?: { sender: string; content: { presence?: string; currently_active?: boolean } }[] };
}

function newRoom(roomId: string, membership: Membership): RoomState {
  return {
    roomId,
    membership,
    state: {},
    timeline: [],
    pending: [],
    prevBatch: null,
    unread: 0,
    highlight: 0,
    typing: [],
    receipts: {},
  };
}

function withState(state: RoomState["state"], events: MatrixEvent[]): RoomState["state"] {
  let next = state;
  for (const e of events) {
    if (e.state_key === undefined) continue;
    if (next === state) next = { ...state };
    next[e.type] = { ...(next[e.type] ?? {}), [e.state_key]: e };
  }
  return next;
}

/** Applies redactions held in `events` to the events they name. */
function redact(timeline: MatrixEvent[], events: MatrixEvent[]): MatrixEvent[] {
  const targets = new Set(
    events
      .filter((e) => e.type === "m.room.redaction")
      .map((e) => e.redacts ?? (e.content.redacts as string | undefined))
      .filter((id): id is string => typeof id === "string"),
  );
  if (targets.size === 0) return timeline;
  return timeline.map((e) => (targets.has(e.event_id) ? { ...e, content: {}, unsigned: { ...e.unsigned, redacted_because: true } } : e));
}

/** Appends `events` after `timeline`, skipping any already held. */
export function appendEvents(timeline: MatrixEvent[], events: MatrixEvent[]): MatrixEvent[] {
  const seen = new Set(timeline.map((e) => e.event_id));
  const fresh = events.filter((e) => {
    if (seen.has(e.event_id)) return false;
    seen.add(e.event_id);
    return true;
  });
  return redact(fresh.length ? [...timeline, ...fresh] : timeline, events);
}

/** Drops the echoes whose real event has arrived (by transaction ID or by event ID). */
function settleEchoes(pending: Pending[], events: MatrixEvent[]): Pending[] {
  if (pending.length === 0) return pending;
  const txns = new Set(events.map((e) => e.unsigned?.transaction_id).filter(Boolean));
  const ids = new Set(events.map((e) => e.event_id));
  const left = pending.filter((p) => !txns.has(p.txnId) && !(p.eventId && ids.has(p.eventId)));
  return left.length === pending.length ? pending : left;
}

function applyJoined(prev: RoomState | undefined, roomId: string, r: JoinedRoom, membership: Membership, reset: boolean): RoomState {
  const room = prev ? { ...prev, membership } : newRoom(roomId, membership);
  delete room.invite;
  const timelineEvents = r.timeline?.events ?? [];
  room.state = withState(withState(room.state, r.state?.events ?? []), timelineEvents);
  if (r.timeline?.limited || !prev || reset) {
    // A gap: what was held no longer joins up with what follows; page back from here instead.
    room.timeline = appendEvents([], timelineEvents);
    room.prevBatch = r.timeline?.prev_batch ?? null;
    // A sent echo whose event fell into the gap is in the history now, not at the bottom.
    room.pending = room.pending.filter((p) => !p.eventId);
  } else {
    room.timeline = appendEvents(room.timeline, timelineEvents);
  }
  room.pending = settleEchoes(room.pending, timelineEvents);
  if (r.unread_notifications) {
    room.unread = r.unread_notifications.notification_count ?? 0;
    room.highlight = r.unread_notifications.highlight_count ?? 0;
  }
  for (const e of r.ephemeral?.events ?? []) {
    if (e.type === "m.typing") {
      const ids = e.content.user_ids;
      room.typing = Array.isArray(ids) ? ids.filter((x): x is string => typeof x === "string") : [];
    } else if (e.type === "m.receipt") {
      const receipts = { ...room.receipts };
      for (const [eventId, byType] of Object.entries(e.content)) {
        const read = (byType as Record<string, Record<string, unknown>>)["m.read"] ?? {};
        for (const userId of Object.keys(read)) receipts[userId] = eventId;
      }
      room.receipts = receipts;
    }
  }
  return room;
}

export function reduce(state: AppState, action: Action): AppState {
  switch (action.kind) {
    case "sync": {
      const body = action.body;
      const rooms = { ...state.rooms };
      const reset = action.reset ?? false;
      for (const [roomId, r] of Object.entries(body.rooms?.join ?? {})) rooms[roomId] = applyJoined(rooms[roomId], roomId, r, "join", reset);
      for (const [roomId, r] of Object.entries(body.rooms?.leave ?? {})) rooms[roomId] = applyJoined(rooms[roomId], roomId, r, "leave", reset);
      for (const [roomId, r] of Object.entries(body.rooms?.invite ?? {})) {
        const room = { ...(rooms[roomId] ?? newRoom(roomId, "invite")), membership: "invite" as Membership };
        room.invite = r.invite_state?.events ?? [];
        room.state = withState(room.state, room.invite);
        rooms[roomId] = room;
      }
      let direct = state.direct;
      for (const e of body.account_data?.events ?? []) {
        if (e.type === "m.direct") direct = e.content as Record<string, string[]>;
      }
      let presence = state.presence;
      for (const e of body.presence?.events ?? []) {
        presence = {
          ...presence,
          [e.sender]: { presence: e.content.presence ?? "offline", currentlyActive: Boolean(e.content.currently_active) },
        };
      }
      return { rooms, nextBatch: body.next_batch, direct, presence };
    }
    case "echo": {
      const room = state.rooms[action.roomId];
      if (!room) return state;
      return { ...state, rooms: { ...state.rooms, [room.roomId]: { ...room, pending: [...room.pending, action.pending] } } };
    }
    case "echoStatus": {
      const room = state.rooms[action.roomId];
      if (!room) return state;
      // The real event may already have come down the sync: then the echo is gone for good.
      if (action.eventId && room.timeline.some((e) => e.event_id === action.eventId)) {
        return { ...state, rooms: { ...state.rooms, [room.roomId]: { ...room, pending: room.pending.filter((p) => p.txnId !== action.txnId) } } };
      }
      const pending = room.pending.map((p) =>
        p.txnId === action.txnId ? { ...p, status: action.status, eventId: action.eventId ?? p.eventId, retryable: action.retryable } : p,
      );
      return { ...state, rooms: { ...state.rooms, [room.roomId]: { ...room, pending } } };
    }
    case "backfill": {
      const room = state.rooms[action.roomId];
      // A page asked for before a gap replaced the window belongs to a history no longer shown.
      if (!room || room.prevBatch !== action.from) return state;
      const older = [...action.chunk].reverse();
      const held = new Set(room.timeline.map((e) => e.event_id));
      const fresh = older.filter((e) => !held.has(e.event_id));
      const timeline = redact([...fresh, ...room.timeline], action.chunk);
      // Members of older events, for names and avatars, without overriding the current state.
      const stateMap = { ...room.state };
      for (const e of action.state) {
        if (e.state_key === undefined) continue;
        const byKey = stateMap[e.type] ?? {};
        if (!byKey[e.state_key]) stateMap[e.type] = { ...byKey, [e.state_key]: e };
      }
      // No events and no way further back (or the same token again): the start is reached.
      const end = action.chunk.length === 0 && (action.end === null || action.end === action.from) ? null : action.end;
      return {
        ...state,
        rooms: {
          ...state.rooms,
          [room.roomId]: { ...room, timeline, prevBatch: end, state: stateMap, pending: settleEchoes(room.pending, action.chunk) },
        },
      };
    }
  }
}

// Derived views.

export function stateContent(room: RoomState, type: string, key = ""): Record<string, unknown> | undefined {
  return room.state[type]?.[key]?.content;
}

export function memberName(room: RoomState | undefined, userId: string): string {
  const name = room ? stateContent(room, "m.room.member", userId)?.displayname : undefined;
  if (typeof name === "string" && name.trim() !== "") return name;
  return userId.replace(/^@/, "").split(":")[0];
}

export function members(room: RoomState, membership: string): string[] {
  return Object.entries(room.state["m.room.member"] ?? {})
    .filter(([, e]) => e.content.membership === membership)
    .map(([userId]) => userId)
    .sort();
}

export function roomName(room: RoomState, me: string): string {
  const name = stateContent(room, "m.room.name")?.name;
  if (typeof name === "string" && name.trim() !== "") return name;
  const alias = stateContent(room, "m.room.canonical_alias")?.alias;
  if (typeof alias === "string") return alias;
  const others = [...members(room, "join"), ...members(room, "invite")].filter((u) => u !== me);
  if (others.length === 0 && room.membership === "invite") {
    const inviter = room.invite?.find((e) => e.type === "m.room.member" && e.state_key === me)?.sender;
    if (inviter) return memberName(room, inviter);
  }
  if (others.length === 0) return "";
  return others.slice(0, 3).map((u) => memberName(room, u)).join(", ");
}

export function isEncrypted(room: RoomState): boolean {
  return room.state["m.room.encryption"]?.[""] !== undefined;
}

/** The other user of a direct chat, when the room is one. */
export function directPartner(state: AppState, room: RoomState, me: string): string | null {
  for (const [userId, ids] of Object.entries(state.direct)) {
    if (Array.isArray(ids) && ids.includes(room.roomId)) return userId;
  }
  if (room.membership === "invite") {
    const mine = room.invite?.find((e) => e.type === "m.room.member" && e.state_key === me);
    if (mine?.content.is_direct) return mine.sender;
  }
  return null;
}

/** `m.direct` with `roomId` listed under `userId` (once). */
export function withDirect(direct: Record<string, string[]>, userId: string, roomId: string): Record<string, string[]> {
  const rooms = Array.isArray(direct[userId]) ? direct[userId] : [];
  return rooms.includes(roomId) ? direct : { ...direct, [userId]: [...rooms, roomId] };
}

export function lastMessage(room: RoomState): MatrixEvent | undefined {
  for (let i = room.timeline.length - 1; i >= 0; i--) {
    const e = room.timeline[i];
    if (e.type === "m.room.message" && !isEdit(e) && typeof e.content.body === "string") return e;
  }
  return undefined;
}

export function lastActivity(room: RoomState): number {
  return room.timeline.length ? room.timeline[room.timeline.length - 1].origin_server_ts : 0;
}

function relatesTo(e: MatrixEvent): Record<string, unknown> | undefined {
  const r = e.content["m.relates_to"];
  return r && typeof r === "object" ? (r as Record<string, unknown>) : undefined;
}

export function isEdit(e: MatrixEvent): boolean {
  return relatesTo(e)?.rel_type === "m.replace";
}

export interface Shown {
  event: MatrixEvent;
  /** The body after the latest edit by the original sender. */
  content: Record<string, unknown>;
  edited: boolean;
  /** Reaction key -> users who reacted, with the reaction's own event ID for each. */
  reactions: Record<string, Record<string, string>>;
  replyTo?: string;
}

/**
 * The timeline as shown: edits folded into what they edit, reactions counted on what they
 * annotate; neither appears as a line of its own.
 */
export function shownTimeline(timeline: MatrixEvent[]): Shown[] {
  const edits = new Map<string, MatrixEvent>();
  const reactions = new Map<string, Record<string, Record<string, string>>>();
  const byId = new Map(timeline.map((e) => [e.event_id, e]));
  for (const e of timeline) {
    const rel = relatesTo(e);
    const target = typeof rel?.event_id === "string" ? rel.event_id : undefined;
    if (!target) continue;
    if (e.type === "m.room.message" && rel?.rel_type === "m.replace") {
      const original = byId.get(target);
      if (original && original.sender === e.sender) edits.set(target, e);
    } else if (e.type === "m.reaction" && rel?.rel_type === "m.annotation" && typeof rel.key === "string") {
      const byKey = reactions.get(target) ?? {};
      byKey[rel.key] = { ...(byKey[rel.key] ?? {}), [e.sender]: e.event_id };
      reactions.set(target, byKey);
    }
  }
  const out: Shown[] = [];
  for (const e of timeline) {
    if (e.type === "m.reaction" || isEdit(e) || e.type === "m.room.redaction") continue;
    const edit = edits.get(e.event_id);
    const newContent = edit?.content["m.new_content"];
    const inReply = (relatesTo(e)?.["m.in_reply_to"] as Record<string, unknown> | undefined)?.event_id;
    out.push({
      event: e,
      content: newContent && typeof newContent === "object" ? (newContent as Record<string, unknown>) : e.content,
      edited: Boolean(edit),
      reactions: reactions.get(e.event_id) ?? {},
      replyTo: typeof inReply === "string" ? inReply : undefined,
    });
  }
  return out;
}

/** Local calendar day of a timestamp, for day separators. */
export function dayKey(ts: number): string {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}
