import { useEffect, useId, useRef, useState, type ClipboardEvent, type KeyboardEvent } from "react";
import { useApp } from "./App";
import { completeShortcode, EMOJI } from "./emoji";
import { useT } from "./i18n";
import type { MatrixEvent } from "./matrix";
import { memberName, type RoomState } from "./store";

export type ComposerTarget = { kind: "reply"; event: MatrixEvent } | { kind: "edit"; event: MatrixEvent; body: string };

interface Upload {
  id: number;
  name: string;
  progress: number;
  error?: string;
}

/** Typing notices go at most this often while someone keeps typing. */
const TYPING_EVERY_MS = 20_000;

function imageSize(file: File): Promise<{ w: number; h: number } | null> {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      resolve({ w: img.naturalWidth, h: img.naturalHeight });
      URL.revokeObjectURL(url);
    };
    img.onerror = () => {
      resolve(null);
      URL.revokeObjectURL(url);
    };
    img.src = url;
  });
}

export function Composer(props: {
  room: RoomState;
  roomName: string;
  target: ComposerTarget | null;
  clearTarget(): void;
  dropped: File[];
  clearDropped(): void;
}) {
  const t = useT();
  const app = useApp();
  const { room, target } = props;
  const [text, setText] = useState("");
  const [picker, setPicker] = useState(false);
  const [uploads, setUploads] = useState<Upload[]>([]);
  // The highlighted completion; null until the arrows move it, so Enter still sends.
  const [suggestion, setSuggestion] = useState<number | null>(null);
  const [dismissed, setDismissed] = useState<number | null>(null);
  const listId = useId();
  const area = useRef<HTMLTextAreaElement>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const typingSent = useRef(0);
  const inputId = useId();
  const roomId = room.roomId;

  useEffect(() => {
    if (target?.kind === "edit") setText(target.body);
    if (target) area.current?.focus();
  }, [target]);

  const typing = (on: boolean) => {
    const now = Date.now();
    if (on && now - typingSent.current < TYPING_EVERY_MS) return;
    if (!on && typingSent.current === 0) return;
    typingSent.current = on ? now : 0;
    const body = { typing: on, timeout: 30_000 };
    void app
      .command({ type: "typing", room_id: roomId, ...body }, () =>
        app.client.call("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(app.client.userId)}`, { body }),
      )
      .catch(() => undefined);
  };

  const caret = area.current?.selectionStart ?? text.length;
  const found = completeShortcode(text.slice(0, caret));
  const completion = found && found.from !== dismissed && found.matches.length > 0 ? found : null;

  // Others stop seeing "typing" when this composer goes (another room, another screen).
  useEffect(
    () => () => {
      if (typingSent.current !== 0) {
        const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(app.client.userId)}`;
        void app.client.call("PUT", path, { body: { typing: false } }).catch(() => undefined);
      }
    },
    // Once per composer: it belongs to one room.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [],
  );

  const insert = (emoji: string, replaceFrom?: number) => {
    const el = area.current;
    const at = el?.selectionStart ?? text.length;
    const from = replaceFrom ?? at;
    const next = text.slice(0, from) + emoji + text.slice(at);
    setText(next);
    setSuggestion(null);
    requestAnimationFrame(() => {
      el?.focus();
      const pos = from + emoji.length;
      el?.setSelectionRange(pos, pos);
    });
  };

  const send = () => {
    const body = text.trim();
    if (!body) return;
    if (target?.kind === "edit") {
      app.sendMessage(roomId, "m.room.message", {
        msgtype: "m.text",
        body: `* ${body}`,
        "m.new_content": { msgtype: "m.text", body },
        "m.relates_to": { rel_type: "m.replace", event_id: target.event.event_id },
      });
    } else {
      const content: Record<string, unknown> = { msgtype: "m.text", body };
      if (target?.kind === "reply") content["m.relates_to"] = { "m.in_reply_to": { event_id: target.event.event_id } };
      app.sendMessage(roomId, "m.room.message", content);
    }
    setText("");
    props.clearTarget();
    typing(false);
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (completion && !e.nativeEvent.isComposing) {
      const n = completion.matches.length;
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        setSuggestion((s) => (s === null ? (e.key === "ArrowDown" ? 0 : n - 1) : (s + (e.key === "ArrowDown" ? 1 : n - 1)) % n));
        return;
      }
      // Tab takes the highlighted (or first) one; Enter only one chosen with the arrows.
      if (e.key === "Tab" || (e.key === "Enter" && !e.shiftKey && suggestion !== null)) {
        e.preventDefault();
        insert(completion.matches[Math.min(suggestion ?? 0, n - 1)].emoji, completion.from);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        setDismissed(completion.from);
        setSuggestion(null);
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape") {
      if (target) {
        props.clearTarget();
        setText("");
      }
      setPicker(false);
    }
  };

  const upload = async (file: File) => {
    const id = Date.now() + Math.random();
    setUploads((u) => [...u, { id, name: file.name, progress: 0 }]);
    try {
      const uri = await app.client.upload(file, file.name, (progress) => setUploads((u) => u.map((x) => (x.id === id ? { ...x, progress } : x))));
      const isImage = file.type.startsWith("image/");
      const size = isImage ? await imageSize(file) : null;
      const info: Record<string, unknown> = { mimetype: file.type || "application/octet-stream", size: file.size };
      if (size) Object.assign(info, size);
      app.sendMessage(roomId, "m.room.message", { msgtype: isImage && size ? "m.image" : "m.file", body: file.name, url: uri, info });
      setUploads((u) => u.filter((x) => x.id !== id));
    } catch (e) {
      setUploads((u) => u.map((x) => (x.id === id ? { ...x, error: e instanceof Error ? e.message : String(e) } : x)));
    }
  };

  const { dropped, clearDropped } = props;
  useEffect(() => {
    if (dropped.length === 0) return;
    for (const f of dropped) void upload(f);
    clearDropped();
    // upload is recreated every render; the dropped files are what matters.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [dropped, clearDropped]);

  const onPaste = (e: ClipboardEvent) => {
    const files = [...e.clipboardData.files];
    if (files.length) {
      e.preventDefault();
      for (const f of files) void upload(f);
    }
  };

  return (
    <div className="composer">
      {uploads.map((u) => (
        <div key={u.id} className="upload">
          <span>{t("uploading", { name: u.name })}</span>
          <progress value={u.progress} max={1} aria-label={t("uploading", { name: u.name })} />
          {u.error && (
            <span className="error" role="alert">
              {u.error}
            </span>
          )}
        </div>
      ))}
      {target && (
        <div className="target">
          <span>{target.kind === "edit" ? t("editing") : t("replyingTo", { name: memberName(room, target.event.sender) })}</span>
          <button
            type="button"
            className="link"
            onClick={() => {
              props.clearTarget();
              if (target.kind === "edit") setText("");
            }}
          >
            {t("cancel")}
          </button>
        </div>
      )}
      {completion && (
        <ul className="completions" role="listbox" id={listId} aria-label={t("emoji")}>
          {completion.matches.map((m, i) => (
            <li
              key={m.name}
              id={`${listId}-${i}`}
              role="option"
              aria-selected={i === suggestion}
              className={i === suggestion ? "selected" : ""}
              onMouseDown={(e) => {
                e.preventDefault();
                insert(m.emoji, completion.from);
              }}
            >
              {m.emoji} :{m.name}:
            </li>
          ))}
        </ul>
      )}
      {picker && (
        <div className="picker" role="dialog" aria-label={t("emoji")}>
          {EMOJI.map((e) => (
            <button
              type="button"
              key={e.name}
              className="icon"
              title={`:${e.name}:`}
              aria-label={e.name}
              onClick={() => {
                insert(e.emoji);
                setPicker(false);
              }}
            >
              {e.emoji}
            </button>
          ))}
        </div>
      )}
      <div className="composer-row">
        <button type="button" className="icon" aria-label={t("attach")} title={t("attach")} onClick={() => fileInput.current?.click()}>
          <svg width="18" height="18" viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round">
            <path d="M21 11.5 12.5 20a5 5 0 0 1-7-7l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.6 8.5a1.7 1.7 0 0 1-2.4-2.4L15.5 7.5" />
          </svg>
        </button>
        <input
          ref={fileInput}
          type="file"
          multiple
          hidden
          aria-label={t("attach")}
          onChange={(e) => {
            for (const f of e.target.files ?? []) void upload(f);
            e.target.value = "";
          }}
        />
        <label htmlFor={inputId} className="sr-only">
          {t("messageIn", { room: props.roomName })}
        </label>
        <textarea
          id={inputId}
          ref={area}
          rows={Math.min(6, Math.max(1, text.split("\n").length))}
          value={text}
          placeholder={t("messageIn", { room: props.roomName })}
          aria-autocomplete="list"
          aria-controls={completion ? listId : undefined}
          aria-activedescendant={completion && suggestion !== null ? `${listId}-${suggestion}` : undefined}
          onChange={(e) => {
            setText(e.target.value);
            setSuggestion(null);
            setDismissed(null);
            typing(e.target.value.trim() !== "");
          }}
          onKeyDown={onKey}
          onPaste={onPaste}
        />
        <button type="button" className="icon" aria-label={t("emoji")} aria-expanded={picker} onClick={() => setPicker((p) => !p)}>
          😊
        </button>
        <button type="button" className="primary" onClick={send} disabled={!text.trim()}>
          {target?.kind === "edit" ? t("save") : t("send")}
        </button>
      </div>
    </div>
  );
}
