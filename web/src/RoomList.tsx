import { useId, useState } from "react";
import { useApp } from "./App";
import { useT } from "./i18n";
import { describeError } from "./Auth";
import { directPartner, withDirect, isEncrypted, lastActivity, lastMessage, memberName, roomName, stateContent, type RoomState } from "./store";
import { Avatar } from "./ui";

export function RoomList({ current }: { current: string | null }) {
  const t = useT();
  const app = useApp();
  const me = app.client.userId;
  const [query, setQuery] = useState("");
  const searchId = useId();
  const rooms = Object.values(app.state.rooms).filter((r) => r.membership !== "leave");
  const named = rooms.map((r) => ({ room: r, name: roomName(r, me) || r.roomId }));
  const q = query.trim().toLowerCase();
  const shown = q ? named.filter((n) => n.name.toLowerCase().includes(q)) : named;
  const invites = shown.filter((n) => n.room.membership === "invite");
  const joined = shown.filter((n) => n.room.membership === "join").sort((a, b) => lastActivity(b.room) - lastActivity(a.room));

  return (
    <nav className="sidebar" aria-label={t("rooms")}>
      <header className="sidebar-head">
        <span className="brand-small">{t("appName")}</span>
        <div className="toolbar">
          <button type="button" className="icon" aria-label={t("newRoom")} title={t("newRoom")} onClick={() => app.navigate("/new")}>
            +
          </button>
          <button type="button" className="icon" aria-label={t("profile")} title={t("profile")} onClick={() => app.navigate("/profile")}>
            ☺
          </button>
          <button type="button" className="icon" aria-label={t("settings")} title={t("settings")} onClick={() => app.navigate("/settings")}>
            ⚙
          </button>
        </div>
      </header>
      <div className="search">
        <label htmlFor={searchId} className="sr-only">
          {t("searchRooms")}
        </label>
        <input id={searchId} type="search" placeholder={t("searchRooms")} value={query} onChange={(e) => setQuery(e.target.value)} />
      </div>
      {invites.length > 0 && (
        <>
          <h2 className="list-title">{t("invites")}</h2>
          <ul className="rooms">
            {invites.map(({ room, name }) => (
              <InviteRow key={room.roomId} room={room} name={name} />
            ))}
          </ul>
        </>
      )}
      <h2 className="list-title">{t("rooms")}</h2>
      {joined.length === 0 ? (
        <p className="muted empty">{rooms.length === 0 ? t("noRooms") : t("noMatches")}</p>
      ) : (
        <ul className="rooms">
          {joined.map(({ room, name }) => (
            <RoomRow key={room.roomId} room={room} name={name} current={room.roomId === current} />
          ))}
        </ul>
      )}
    </nav>
  );
}

function RoomRow({ room, name, current }: { room: RoomState; name: string; current: boolean }) {
  const t = useT();
  const app = useApp();
  const me = app.client.userId;
  const last = lastMessage(room);
  const partner = directPartner(app.state, room, me);
  const presence = partner ? app.state.presence[partner]?.presence : undefined;
  const encrypted = isEncrypted(room);
  const preview = encrypted ? t("encryptedRoom") : last ? `${memberName(room, last.sender)}: ${String(last.content.body)}` : "";
  return (
    <li>
      <a
        href={`#/room/${encodeURIComponent(room.roomId)}`}
        className={`room-row${current ? " current" : ""}`}
        aria-current={current ? "page" : undefined}
      >
        <span className="avatar-wrap">
          <Avatar client={app.client} id={room.roomId} name={name} mxc={stateContent(room, "m.room.avatar")?.url} />
          {presence && <span className={`presence ${presence}`} aria-label={presence === "online" ? t("online") : presence === "unavailable" ? t("unavailable") : t("userOffline")} role="img" />}
        </span>
        <span className="room-text">
          <span className="room-name">
            {encrypted && (
              <span aria-label={t("encryptedRoom")} role="img" className="lock">
                🔒
              </span>
            )}
            {name}
          </span>
          <span className="room-preview">{preview}</span>
        </span>
        {room.unread > 0 && (
          <span className={`badge${room.highlight > 0 ? " highlight" : ""}`} aria-label={t("unread", { count: room.unread })}>
            {room.unread}
          </span>
        )}
      </a>
    </li>
  );
}

function InviteRow({ room, name }: { room: RoomState; name: string }) {
  const t = useT();
  const app = useApp();
  const me = app.client.userId;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const inviter = room.invite?.find((e) => e.type === "m.room.member" && e.state_key === me)?.sender;
  const accept = async () => {
    setBusy(true);
    setError("");
    try {
      await app.client.join(room.roomId);
      const partner = directPartner(app.state, room, me);
      if (partner) await app.client.setAccountData("m.direct", withDirect(app.state.direct, partner, room.roomId));
      app.navigate(`/room/${encodeURIComponent(room.roomId)}`);
    } catch (e) {
      setError(describeError(t, e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <li className="invite-row">
      <Avatar client={app.client} id={room.roomId} name={name} />
      <span className="room-text">
        <span className="room-name">{name}</span>
        {inviter && <span className="room-preview">{t("invitedBy", { name: memberName(room, inviter) })}</span>}
      </span>
      <span className="invite-actions">
        <button type="button" className="primary small" disabled={busy} onClick={accept}>
          {t("accept")}
        </button>
        <button type="button" className="small" disabled={busy} onClick={() => void app.client.leave(room.roomId).catch((e) => setError(describeError(t, e)))}>
          {t("decline")}
        </button>
      </span>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </li>
  );
}
