import { useEffect, useId, useState, type FormEvent, type ReactNode } from "react";
import { useApp } from "./App";
import { describeError, Field } from "./Auth";
import { useT } from "./i18n";
import { withDirect } from "./store";

type PublicRoom = { room_id: string; name?: string; topic?: string; canonical_alias?: string; num_joined_members: number };

function Section(props: { title: string; children: ReactNode }) {
  const id = useId();
  return (
    <section className="card" aria-labelledby={id}>
      <h2 id={id}>{props.title}</h2>
      {props.children}
    </section>
  );
}

/** Runs a form action, showing its error in words. */
function useAction(): [boolean, string, (f: () => Promise<void>) => (e: FormEvent) => void] {
  const t = useT();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const run = (f: () => Promise<void>) => (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    f().then(
      () => setBusy(false),
      (err) => {
        setError(describeError(t, err));
        setBusy(false);
      },
    );
  };
  return [busy, error, run];
}

export function NewRoom() {
  const t = useT();
  const app = useApp();
  const open = (roomId: string) => app.navigate(`/room/${encodeURIComponent(roomId)}`);

  const [name, setName] = useState("");
  const [topic, setTopic] = useState("");
  const [isPublic, setPublic] = useState(false);
  const [creating, createError, runCreate] = useAction();
  const [dmUser, setDmUser] = useState("");
  const [dming, dmError, runDm] = useAction();
  const [alias, setAlias] = useState("");
  const [joining, joinError, runJoin] = useAction();
  const [directory, setDirectory] = useState<PublicRoom[] | null>(null);
  const publicId = useId();

  useEffect(() => {
    app.client.publicRooms().then(
      (r) => setDirectory(r.chunk ?? []),
      () => setDirectory([]),
    );
  }, [app.client]);

  const create = runCreate(async () => {
    const body: Record<string, unknown> = { name: name.trim(), preset: isPublic ? "public_chat" : "private_chat" };
    if (topic.trim()) body.topic = topic.trim();
    if (isPublic) body.visibility = "public";
    open((await app.client.createRoom(body)).room_id);
  });

  const startDm = runDm(async () => {
    const user = dmUser.trim();
    const { room_id } = await app.client.createRoom({ is_direct: true, invite: [user], preset: "trusted_private_chat" });
    await app.client.setAccountData("m.direct", withDirect(app.state.direct, user, room_id));
    open(room_id);
  });

  const join = runJoin(async () => {
    open((await app.client.join(alias.trim())).room_id);
  });

  const error = (text: string) =>
    text && (
      <p className="error" role="alert">
        {text}
      </p>
    );

  return (
    <div className="page">
      <a href="#/" className="icon back" aria-label={t("back")}>
        ←
      </a>
      <Section title={t("createRoom")}>
        <form onSubmit={create}>
          <Field label={t("roomName")} value={name} onChange={setName} />
          <Field label={t("topic")} value={topic} onChange={setTopic} required={false} />
          <div className="check">
            <input id={publicId} type="checkbox" checked={isPublic} onChange={(e) => setPublic(e.target.checked)} />
            <label htmlFor={publicId}>{t("publicRoom")}</label>
          </div>
          {error(createError)}
          <button type="submit" className="primary" disabled={creating}>
            {t("create")}
          </button>
        </form>
      </Section>
      <Section title={t("directChat")}>
        <form onSubmit={startDm}>
          <Field label={t("userId")} value={dmUser} onChange={setDmUser} placeholder="@name:server" />
          {error(dmError)}
          <button type="submit" className="primary" disabled={dming}>
            {t("start")}
          </button>
        </form>
      </Section>
      <Section title={t("joinRoom")}>
        <form onSubmit={join}>
          <Field label={t("aliasOrId")} value={alias} onChange={setAlias} placeholder="#room:server" />
          {error(joinError)}
          <button type="submit" className="primary" disabled={joining}>
            {t("join")}
          </button>
        </form>
      </Section>
      <Section title={t("directory")}>
        {directory === null ? (
          <p className="muted">{t("connecting")}</p>
        ) : directory.length === 0 ? (
          <p className="muted">{t("noPublicRooms")}</p>
        ) : (
          <ul className="directory">
            {directory.map((r) => (
              <li key={r.room_id}>
                <div>
                  <strong>{r.name ?? r.canonical_alias ?? r.room_id}</strong>
                  <span className="muted"> · {t("membersCount", { count: r.num_joined_members })}</span>
                  {r.topic && <p className="muted">{r.topic}</p>}
                </div>
                <button
                  type="button"
                  className="small"
                  onClick={() => {
                    void app.client.join(r.room_id).then(({ room_id }) => open(room_id));
                  }}
                >
                  {t("join")}
                </button>
              </li>
            ))}
          </ul>
        )}
      </Section>
    </div>
  );
}
