import { useEffect, useId, useState } from "react";
import { useApp, type SettingsProps } from "./App";
import { describeError } from "./Auth";
import { useT, type Lang } from "./i18n";
import { roomName } from "./store";

export type Theme = "system" | "light" | "dark";

export function Settings(props: SettingsProps & { onSignOut(): void }) {
  const t = useT();
  const ids = { theme: useId(), lang: useId(), title: useId() };
  return (
    <div className="page">
      <a href="#/" className="icon back" aria-label={t("back")}>
        ←
      </a>
      <section className="card" aria-labelledby={ids.title}>
        <h2 id={ids.title}>{t("settings")}</h2>
        <fieldset>
          <legend id={ids.theme}>{t("theme")}</legend>
          {(["system", "light", "dark"] as Theme[]).map((theme) => (
            <label key={theme} className="check">
              <input type="radio" name="theme" checked={props.theme === theme} onChange={() => props.setTheme(theme)} />
              {theme === "system" ? t("themeSystem") : theme === "light" ? t("themeLight") : t("themeDark")}
            </label>
          ))}
        </fieldset>
        <div className="field">
          <label htmlFor={ids.lang}>{t("language")}</label>
          <select id={ids.lang} value={props.lang} onChange={(e) => props.setLang(e.target.value as Lang | "auto")}>
            <option value="auto">{t("languageAuto")}</option>
            <option value="en" lang="en">
              English
            </option>
            <option value="vi" lang="vi">
              Tiếng Việt
            </option>
          </select>
        </div>
        <button type="button" className="danger" onClick={props.onSignOut}>
          {t("signOut")}
        </button>
      </section>
      <RoomNotifications />
    </div>
  );
}

interface PushRule {
  rule_id: string;
  actions: unknown[];
}

/**
 * A room is quiet when a room push rule named after it does nothing (as Element's "mentions
 * and keywords" setting writes it): room rules come after the override rules, so mentions of
 * the user still notify.
 */
export function quietRooms(roomRules: PushRule[]): Set<string> {
  return new Set(roomRules.filter((r) => r.actions.every((a) => a === "dont_notify")).map((r) => r.rule_id));
}

function RoomNotifications() {
  const t = useT();
  const app = useApp();
  const [muted, setMuted] = useState<Set<string> | null>(null);
  const [error, setError] = useState("");
  const titleId = useId();
  const rules = "/_matrix/client/v3/pushrules/global/room/";

  useEffect(() => {
    app.client.call<{ global?: { room?: PushRule[] } }>("GET", "/_matrix/client/v3/pushrules/").then(
      (r) => setMuted(quietRooms(r.global?.room ?? [])),
      () => setMuted(new Set()),
    );
  }, [app.client]);

  const show = (roomId: string, on: boolean) =>
    setMuted((m) => {
      const next = new Set(m);
      if (on) next.delete(roomId);
      else next.add(roomId);
      return next;
    });
  // The box changes at once; a refusal puts it back and says why.
  const toggle = async (roomId: string, on: boolean) => {
    setError("");
    show(roomId, on);
    try {
      if (on) await app.client.call("DELETE", rules + encodeURIComponent(roomId));
      else await app.client.call("PUT", rules + encodeURIComponent(roomId), { body: { actions: [] } });
    } catch (e) {
      show(roomId, !on);
      setError(describeError(t, e));
    }
  };

  const rooms = Object.values(app.state.rooms).filter((r) => r.membership === "join");
  return (
    <section className="card" aria-labelledby={titleId}>
      <h2 id={titleId}>{t("notifications")}</h2>
      <p className="muted">{t("notificationsHelp")}</p>
      {muted &&
        rooms.map((room) => {
          const name = roomName(room, app.client.userId) || room.roomId;
          return (
            <label key={room.roomId} className="check">
              <input type="checkbox" checked={!muted.has(room.roomId)} onChange={(e) => void toggle(room.roomId, e.target.checked)} />
              {t("roomNotifications", { room: name })}
            </label>
          );
        })}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}
