import { useCallback, useContext, useEffect, useLayoutEffect, useRef, useState, type DragEvent, type ReactElement } from "react";
import { useApp } from "./App";
import { Composer, type ComposerTarget } from "./Composer";
import { I18n, useT, type T } from "./i18n";
import type { MatrixEvent } from "./matrix";
import { dayKey, isEncrypted, memberName, members, roomName, shownTimeline, stateContent, type RoomState, type Shown } from "./store";
import { AuthImage, Avatar, formatTime } from "./ui";

const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮"];
/** Messages from one sender closer together than this share one header. */
const GROUP_MS = 5 * 60 * 1000;

export function RoomView({ roomId }: { roomId: string }) {
  const t = useT();
  const app = useApp();
  const room = app.state.rooms[roomId];
  const me = app.client.userId;
  const [showMembers, setShowMembers] = useState(false);
  const [target, setTarget] = useState<ComposerTarget | null>(null);
  const [dropping, setDropping] = useState(false);
  const [dropped, setDropped] = useState<File[]>([]);

  if (!room) {
    return (
      <section className="room">
        <p className="muted">{t("connecting")}</p>
      </section>
    );
  }
  const name = roomName(room, me) || roomId;
  const encrypted = isEncrypted(room);
  const topic = stateContent(room, "m.room.topic")?.topic;

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setDropping(false);
    if (encrypted) return;
    const files = [...e.dataTransfer.files];
    if (files.length) setDropped(files);
  };

  return (
    <section
      className="room"
      aria-label={name}
      onDragOver={(e) => {
        if (e.dataTransfer.types.includes("Files")) {
          e.preventDefault();
          setDropping(true);
        }
      }}
      onDragLeave={() => setDropping(false)}
      onDrop={onDrop}
    >
      <header className="room-head">
        <a href="#/" className="icon back" aria-label={t("back")}>
          ←
        </a>
        <div className="room-title">
          <h2>
            {encrypted && (
              <span role="img" aria-label={t("encryptedRoom")} className="lock">
                🔒
              </span>
            )}
            {name}
          </h2>
          {typeof topic === "string" && topic && <p className="topic">{topic}</p>}
        </div>
        <button type="button" className="small" aria-expanded={showMembers} onClick={() => setShowMembers((v) => !v)}>
          {t("members")}
        </button>
      </header>
      <div className="room-body">
        <div className="room-main">
          {encrypted && <p className="notice">{t("encryptedNote")}</p>}
          <Timeline room={room} onReply={(e) => setTarget({ kind: "reply", event: e })} onEdit={(s) => setTarget({ kind: "edit", event: s.event, body: String(s.content.body ?? "") })} />
          <Typing room={room} />
          {!encrypted && (
            <Composer
              room={room}
              roomName={name}
              target={target}
              clearTarget={() => setTarget(null)}
              dropped={dropped}
              clearDropped={() => setDropped([])}
            />
          )}
          {dropping && <div className="drop-overlay">{t("dropHere")}</div>}
        </div>
        {showMembers && <Members room={room} />}
      </div>
    </section>
  );
}

function Typing({ room }: { room: RoomState }) {
  const t = useT();
  const app = useApp();
  const others = room.typing.filter((u) => u !== app.client.userId).map((u) => memberName(room, u));
  const text =
    others.length === 0 ? "" : others.length === 1 ? t("typing1", { a: others[0] }) : others.length === 2 ? t("typing2", { a: others[0], b: others[1] }) : t("typingMany");
  return (
    <p className="typing" aria-live="polite">
      {text}
    </p>
  );
}

function dayLabel(t: T, ts: number, lang: string): string {
  const today = new Date();
  const yesterday = new Date(today.getTime() - 86_400_000);
  if (dayKey(ts) === dayKey(today.getTime())) return t("today");
  if (dayKey(ts) === dayKey(yesterday.getTime())) return t("yesterday");
  return new Date(ts).toLocaleDateString(lang, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
}

function Timeline({ room, onReply, onEdit }: { room: RoomState; onReply(e: MatrixEvent): void; onEdit(s: Shown): void }) {
  const t = useT();
  const { lang } = useContext(I18n);
  const app = useApp();
  const me = app.client.userId;
  const scroller = useRef<HTMLDivElement>(null);
  const [loading, setLoading] = useState(false);
  const stick = useRef(true);
  const restore = useRef<number | null>(null);
  const shown = shownTimeline(room.timeline);
  const last = room.timeline[room.timeline.length - 1];

  // One request per token at a time (a ref: scrolling and the fill-the-screen effect may both
  // ask before a render), and after a failure no automatic retry for a while.
  const inFlight = useRef<string | null>(null);
  const failedAt = useRef(0);
  const loadOlder = useCallback(
    async (byUser: boolean) => {
      const from = room.prevBatch;
      if (!from || inFlight.current === from) return;
      if (!byUser && Date.now() - failedAt.current < 10_000) return;
      inFlight.current = from;
      setLoading(true);
      try {
        const page = await app.client.messages(room.roomId, from, 30);
        const el = scroller.current;
        restore.current = el ? el.scrollHeight - el.scrollTop : null;
        app.dispatch({ kind: "backfill", roomId: room.roomId, from, chunk: page.chunk ?? [], end: page.end ?? null, state: page.state ?? [] });
      } catch {
        failedAt.current = Date.now();
      } finally {
        inFlight.current = null;
        setLoading(false);
      }
    },
    [app, room.prevBatch, room.roomId],
  );

  // Keep the view where it was when older messages are put above it, and at the bottom when
  // new ones arrive while the reader is there.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (restore.current !== null) {
      el.scrollTop = el.scrollHeight - restore.current;
      restore.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  });

  // A short first page leaves nothing to scroll: fill the screen.
  useEffect(() => {
    const el = scroller.current;
    if (el && el.scrollHeight <= el.clientHeight + 40 && room.prevBatch && !loading) void loadOlder(false);
  }, [room.timeline.length, room.prevBatch, loading, loadOlder]);

  // Read receipt for the latest event while the room is on screen (and once the tab is shown
  // again, for what arrived while it was hidden).
  const sentReceipt = useRef<string | null>(null);
  const [visible, setVisible] = useState(() => document.visibilityState === "visible");
  useEffect(() => {
    const on = () => setVisible(document.visibilityState === "visible");
    document.addEventListener("visibilitychange", on);
    return () => document.removeEventListener("visibilitychange", on);
  }, []);
  useEffect(() => {
    if (!visible || !last || last.sender === me || sentReceipt.current === last.event_id) return;
    sentReceipt.current = last.event_id;
    void app
      .command({ type: "receipt", room_id: room.roomId, event_id: last.event_id }, () =>
        app.client.call("POST", `/_matrix/client/v3/rooms/${encodeURIComponent(room.roomId)}/receipt/m.read/${encodeURIComponent(last.event_id)}`, { body: {} }),
      )
      .catch(() => {
        sentReceipt.current = null;
      });
  }, [app, last, me, room.roomId, visible]);

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    if (el.scrollTop < 80) void loadOlder(true);
  };

  // Who has read up to each event (others than me and the sender).
  const seen = new Map<string, string[]>();
  for (const [userId, eventId] of Object.entries(room.receipts)) {
    if (userId === me) continue;
    seen.set(eventId, [...(seen.get(eventId) ?? []), userId]);
  }
  const byId = new Map(room.timeline.map((e) => [e.event_id, e]));

  const items: ReactElement[] = [];
  let prev: MatrixEvent | null = null;
  for (const s of shown) {
    const e = s.event;
    if (!prev || dayKey(prev.origin_server_ts) !== dayKey(e.origin_server_ts)) {
      items.push(
        <li key={`day-${e.event_id}`} className="day">
          {dayLabel(t, e.origin_server_ts, lang)}
        </li>,
      );
      prev = null;
    }
    const continued = prev !== null && prev.sender === e.sender && prev.type === "m.room.message" && e.origin_server_ts - prev.origin_server_ts < GROUP_MS;
    const readers = (seen.get(e.event_id) ?? []).filter((u) => u !== e.sender);
    items.push(
      <EventLine
        key={e.event_id}
        room={room}
        shown={s}
        continued={continued}
        replied={s.replyTo ? byId.get(s.replyTo) : undefined}
        readers={readers}
        readOnly={isEncrypted(room)}
        onReply={onReply}
        onEdit={onEdit}
      />,
    );
    prev = e;
  }
  for (const p of room.pending) {
    if (p.type !== "m.room.message") continue;
    items.push(
      <li key={p.txnId} className={`event message pending ${p.status}`} data-txn={p.txnId}>
        <div className="body">
          <Body client={app.client} content={p.content} t={t} />
          <span className="status">
            {p.status === "failed" ? (
              <>
                {t("failed")}{" "}
                <button type="button" className="link" onClick={() => app.retry(room.roomId, p)}>
                  {t("retry")}
                </button>
              </>
            ) : p.status === "sending" ? (
              t("sending")
            ) : null}
          </span>
        </div>
      </li>,
    );
  }

  return (
    <div className="timeline" ref={scroller} onScroll={onScroll} tabIndex={0} aria-label={t("message")}>
      <p className="muted history-edge">{loading ? t("loadingHistory") : room.prevBatch ? "" : t("startOfRoom")}</p>
      <ol className="events">{items}</ol>
    </div>
  );
}

function Body({ client, content, t }: { client: ReturnType<typeof useApp>["client"]; content: Record<string, unknown>; t: T }) {
  const body = typeof content.body === "string" ? content.body : "";
  const url = typeof content.url === "string" ? content.url : undefined;
  if (content.msgtype === "m.image" && url) {
    return <AuthImage client={client} mxc={url} width={320} height={240} alt={body} className="thumb" />;
  }
  if ((content.msgtype === "m.file" || content.msgtype === "m.video" || content.msgtype === "m.audio") && url) {
    const download = async () => {
      const blob = await client.media(url);
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = body || "file";
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    };
    return (
      <button type="button" className="file" onClick={() => void download()}>
        📎 {t("download", { name: body })}
      </button>
    );
  }
  if (content.msgtype === "m.emote") return <p className="text emote">* {body}</p>;
  return <p className="text">{body}</p>;
}

function stateLine(t: T, room: RoomState, e: MatrixEvent): string {
  const name = memberName(room, e.sender);
  const target = e.state_key ? memberName(room, e.state_key) : "";
  const c = e.content;
  switch (e.type) {
    case "m.room.member": {
      const prevContent = (e.unsigned?.prev_content ?? {}) as Record<string, unknown>;
      const after = c.membership;
      const before = prevContent.membership;
      const subject = typeof c.displayname === "string" && c.displayname ? c.displayname : target;
      if (after === "join" && before === "join") {
        if (c.displayname !== prevContent.displayname) return t("changedName", { name: String(prevContent.displayname ?? target), newName: subject });
        return t("changedAvatar", { name: subject });
      }
      if (after === "join") return t("joined", { name: subject });
      if (after === "invite") return t("invitedUser", { name, target: subject });
      if (after === "ban") return t("banned", { name, target });
      if (after === "leave") return e.sender === e.state_key ? t("left", { name: target }) : t("kicked", { name, target });
      return t("unknownEvent", { name, type: e.type });
    }
    case "m.room.name":
      return t("roomNamed", { name, room: String(c.name ?? "") });
    case "m.room.topic":
      return t("topicSet", { name, topic: String(c.topic ?? "") });
    case "m.room.create":
      return t("roomCreated", { name });
    case "m.room.encrypted":
      return `🔒 ${t("encryptedMessage")}`;
    default:
      return t("unknownEvent", { name, type: e.type });
  }
}

/** State the timeline does not need to mention: room set-up noise. */
const QUIET = new Set(["m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.canonical_alias", "m.room.avatar", "m.room.encryption"]);

function EventLine(props: {
  room: RoomState;
  shown: Shown;
  continued: boolean;
  replied?: MatrixEvent;
  readers: string[];
  /** An encrypted room: this client sends nothing into it (no reactions, no redactions). */
  readOnly: boolean;
  onReply(e: MatrixEvent): void;
  onEdit(s: Shown): void;
}) {
  const t = useT();
  const { lang } = useContext(I18n);
  const app = useApp();
  const { room, shown, continued, replied, readers, readOnly } = props;
  const e = shown.event;
  const me = app.client.userId;
  const time = formatTime(e.origin_server_ts, lang);
  const seen = readers.length > 0 && (
    <span className="seen" title={t("seenBy", { names: readers.map((u) => memberName(room, u)).join(", ") })}>
      {t("seenBy", { names: readers.map((u) => memberName(room, u)).join(", ") })}
    </span>
  );

  if (e.type !== "m.room.message") {
    if (QUIET.has(e.type)) return null;
    return (
      <li className="event state" data-event-id={e.event_id}>
        <span>{stateLine(t, room, e)}</span> <time>{time}</time>
        {seen}
      </li>
    );
  }
  const redacted = Boolean(e.unsigned?.redacted_because) || Object.keys(e.content).length === 0;
  const senderName = memberName(room, e.sender);
  const toggle = async (key: string) => {
    const mine = shown.reactions[key]?.[me];
    if (mine) await app.client.redact(room.roomId, mine, `r${Date.now()}`);
    else await app.sendQuiet(room.roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: e.event_id, key } });
  };
  return (
    // Focusable, so that its actions (shown on hover or focus) can be reached from the keyboard.
    <li className={`event message${continued ? " continued" : ""}`} data-event-id={e.event_id} tabIndex={0}>
      {!continued && (
        <div className="sender">
          <Avatar client={app.client} id={e.sender} name={senderName} mxc={stateContent(room, "m.room.member", e.sender)?.avatar_url} />
          <strong>{senderName}</strong> <time>{time}</time>
        </div>
      )}
      <div className="body">
        {replied && (
          <blockquote className="reply-quote">
            <strong>{memberName(room, replied.sender)}</strong> {String(replied.content.body ?? "")}
          </blockquote>
        )}
        {redacted ? <p className="text muted">{t("deleted")}</p> : <Body client={app.client} content={shown.content} t={t} />}
        {shown.edited && <span className="muted edited">{t("edited")}</span>}
        {Object.keys(shown.reactions).length > 0 && (
          <div className="reactions">
            {Object.entries(shown.reactions).map(([key, users]) => (
              <button
                type="button"
                key={key}
                className={`reaction${users[me] ? " mine" : ""}`}
                aria-pressed={Boolean(users[me])}
                title={Object.keys(users).map((u) => memberName(room, u)).join(", ")}
                disabled={readOnly}
                onClick={() => void toggle(key)}
              >
                {key} {Object.keys(users).length}
              </button>
            ))}
          </div>
        )}
        {seen}
      </div>
      {!redacted && !readOnly && (
        <div className="actions">
          {QUICK_REACTIONS.map((emoji) => (
            <button type="button" key={emoji} className="icon" aria-label={t("react", { emoji })} onClick={() => void toggle(emoji)}>
              {emoji}
            </button>
          ))}
          <button type="button" className="small" onClick={() => props.onReply(e)}>
            {t("reply")}
          </button>
          {e.sender === me && (
            <>
              <button type="button" className="small" onClick={() => props.onEdit(shown)}>
                {t("edit")}
              </button>
              <button type="button" className="small" onClick={() => void app.client.redact(room.roomId, e.event_id, `d${Date.now()}`)}>
                {t("delete")}
              </button>
            </>
          )}
        </div>
      )}
    </li>
  );
}

function Members({ room }: { room: RoomState }) {
  const t = useT();
  const app = useApp();
  const [user, setUser] = useState("");
  const [error, setError] = useState("");
  const joined = members(room, "join");
  const invited = members(room, "invite");
  const invite = async () => {
    setError("");
    try {
      await app.client.invite(room.roomId, user.trim());
      setUser("");
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  const row = (u: string) => {
    const presence = app.state.presence[u]?.presence;
    return (
      <li key={u} className="member">
        <Avatar client={app.client} id={u} name={memberName(room, u)} mxc={stateContent(room, "m.room.member", u)?.avatar_url} size={24} />
        <span>{memberName(room, u)}</span>
        {presence && <span className={`presence-dot ${presence}`} aria-label={presence === "online" ? t("online") : t("userOffline")} role="img" />}
      </li>
    );
  };
  return (
    <aside className="members" aria-label={t("members")}>
      <h3>{t("membersCount", { count: joined.length })}</h3>
      <ul>{joined.map(row)}</ul>
      {invited.length > 0 && (
        <>
          <h3>{t("invited")}</h3>
          <ul>{invited.map(row)}</ul>
        </>
      )}
      <form
        className="invite-form"
        onSubmit={(e) => {
          e.preventDefault();
          void invite();
        }}
      >
        <label htmlFor="invite-user">{t("inviteUser")}</label>
        <input id="invite-user" value={user} onChange={(e) => setUser(e.target.value)} placeholder="@name:server" />
        <button type="submit" className="small" disabled={!user.trim()}>
          {t("invite")}
        </button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </form>
      <button
        type="button"
        className="small danger"
        onClick={() => {
          void app.client.leave(room.roomId).then(() => app.navigate("/"));
        }}
      >
        {t("leave")}
      </button>
    </aside>
  );
}
