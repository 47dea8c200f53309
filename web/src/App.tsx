import { createContext, useCallback, useContext, useEffect, useMemo, useReducer, useRef, useState } from "react";
import { Auth } from "./Auth";
import { browserLang, I18n, translator, useT, type Lang } from "./i18n";
import { backoff, Live, type LiveStatus } from "./live";
import { Client, loginWithToken, MatrixError, newTxnId, SSO_PENDING, type Session } from "./matrix";
import { NewRoom } from "./NewRoom";
import { Profile } from "./Profile";
import { RoomList } from "./RoomList";
import { RoomView } from "./RoomView";
import { Settings, type Theme } from "./Settings";
import { emptyState, reduce, type Action, type AppState, type Pending } from "./store";

const SESSION_KEY = "hearth.session";

function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    const s = raw ? (JSON.parse(raw) as Session) : null;
    return s && s.accessToken && s.userId ? s : null;
  } catch {
    return null;
  }
}

export interface AppContext {
  client: Client;
  state: AppState;
  dispatch(action: Action): void;
  live: Live | null;
  status: LiveStatus;
  /** Sends a message with a local echo, over the socket when open, else over HTTP. */
  sendMessage(roomId: string, type: string, content: Record<string, unknown>): void;
  /** Sends an event without echo (reactions), over the socket when open, else over HTTP. */
  sendQuiet(roomId: string, type: string, content: Record<string, unknown>): Promise<string>;
  retry(roomId: string, pending: Pending): void;
  command(body: Record<string, unknown>, http: () => Promise<unknown>): Promise<unknown>;
  navigate(route: string): void;
}

export const Ctx = createContext<AppContext | null>(null);

export function useApp(): AppContext {
  const ctx = useContext(Ctx);
  if (!ctx) throw new Error("outside the app");
  return ctx;
}

function useRoute(): [string, (r: string) => void] {
  const read = () => window.location.hash.replace(/^#/, "") || "/";
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const navigate = useCallback((r: string) => {
    window.location.hash = r;
  }, []);
  return [route, navigate];
}

function applyTheme(theme: Theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const [ssoError, setSsoError] = useState<string | undefined>();
  const [langChoice, setLangChoice] = useState<Lang | "auto">(() => (localStorage.getItem("hearth.lang") as Lang | null) ?? "auto");
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem("hearth.theme") as Theme | null) ?? "system");
  const lang = langChoice === "auto" ? browserLang(navigator.languages ?? [navigator.language]) : langChoice;
  const i18n = useMemo(() => ({ lang, t: translator(lang) }), [lang]);

  useEffect(() => {
    document.documentElement.lang = lang;
  }, [lang]);
  useEffect(() => applyTheme(theme), [theme]);

  // Back from a single sign-on provider: the server appended a one-time login token. Taken only
  // when this tab started the sign-in and there is exactly one, so a link carrying someone
  // else's token cannot sign this browser into their account.
  useEffect(() => {
    const params = new URLSearchParams(window.location.search);
    const tokens = params.getAll("loginToken");
    if (tokens.length === 0) return;
    window.history.replaceState(null, "", window.location.pathname + window.location.hash);
    const started = sessionStorage.getItem(SSO_PENDING) !== null;
    sessionStorage.removeItem(SSO_PENDING);
    const token = tokens[0];
    if (!started || tokens.length !== 1) return;
    loginWithToken(token).then(
      (s) => {
        localStorage.setItem(SESSION_KEY, JSON.stringify(s));
        setSession(s);
      },
      (e) => setSsoError(e instanceof MatrixError ? e.message : String(e)),
    );
  }, []);

  const onSession = (s: Session) => {
    localStorage.setItem(SESSION_KEY, JSON.stringify(s));
    setSession(s);
  };
  const signOut = () => {
    localStorage.removeItem(SESSION_KEY);
    setSession(null);
    window.location.hash = "/";
  };

  return (
    <I18n.Provider value={i18n}>
      {session ? (
        <Main
          key={session.accessToken}
          session={session}
          onSignedOut={signOut}
          settings={{
            theme,
            setTheme: (v) => {
              localStorage.setItem("hearth.theme", v);
              setTheme(v);
            },
            lang: langChoice,
            setLang: (v) => {
              if (v === "auto") localStorage.removeItem("hearth.lang");
              else localStorage.setItem("hearth.lang", v);
              setLangChoice(v);
            },
          }}
        />
      ) : (
        <Auth onSession={onSession} initialError={ssoError} />
      )}
    </I18n.Provider>
  );
}

export interface SettingsProps {
  theme: Theme;
  setTheme(t: Theme): void;
  lang: Lang | "auto";
  setLang(l: Lang | "auto"): void;
}

function Main({ session, onSignedOut, settings }: { session: Session; onSignedOut(): void; settings: SettingsProps }) {
  const t = useT();
  const client = useMemo(() => new Client(session), [session]);
  const [state, dispatch] = useReducer(reduce, emptyState);
  const [status, setStatus] = useState<LiveStatus>("connecting");
  const [live, setLive] = useState<Live | null>(null);
  const [route, navigate] = useRoute();
  const stateRef = useRef(state);
  stateRef.current = state;

  useEffect(() => {
    const l = new Live(client, {
      onSync: (body, reset) => dispatch({ kind: "sync", body, reset }),
      onStatus: setStatus,
      onSignedOut,
    });
    setLive(l);
    l.start();
    return () => l.stop();
    // onSignedOut is stable for the life of this session.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client]);

  const command = useCallback(
    async (body: Record<string, unknown>, http: () => Promise<unknown>) => {
      try {
        if (!live) throw new MatrixError(0, "NETWORK", "not connected");
        return await live.command(body);
      } catch (e) {
        // Not sent over the socket (closed, or closed before answering): the same request over
        // HTTP, where a transaction ID makes a repeat harmless.
        if (e instanceof MatrixError && e.errcode === "NETWORK") return http();
        throw e;
      }
    },
    [live],
  );

  const deliver = useCallback(
    async (roomId: string, p: Pending) => {
      // A rate-limited send waits as long as the server asks and goes again, a few times.
      for (let attempt = 0; ; attempt++) {
        try {
          const result = (await command(
            { type: "send", room_id: roomId, event_type: p.type, content: p.content, txn_id: p.txnId },
            () => client.send(roomId, p.type, p.content, p.txnId),
          )) as { event_id?: string };
          dispatch({ kind: "echoStatus", roomId, txnId: p.txnId, status: "sent", eventId: result.event_id });
          return;
        } catch (e) {
          // Network failures and rate limits are worth waiting out; a refusal is final.
          const network = e instanceof MatrixError && e.errcode === "NETWORK";
          const limited = e instanceof MatrixError && e.errcode === "M_LIMIT_EXCEEDED";
          if (!(network || limited) || attempt >= 4) {
            dispatch({ kind: "echoStatus", roomId, txnId: p.txnId, status: "failed", retryable: network });
            return;
          }
          const asked = limited ? Number(e.body.retry_after_ms) : NaN;
          await new Promise((r) => setTimeout(r, Number.isFinite(asked) && asked > 0 ? Math.min(asked, 60_000) : backoff(attempt)));
        }
      }
    },
    [client, command],
  );

  const ctx: AppContext = {
    client,
    state,
    dispatch,
    live,
    status,
    command,
    navigate,
    sendMessage: (roomId, type, content) => {
      const pending: Pending = { txnId: newTxnId(), type, content, ts: Date.now(), status: "sending" };
      dispatch({ kind: "echo", roomId, pending });
      void deliver(roomId, pending);
    },
    sendQuiet: async (roomId, type, content) => {
      const txnId = newTxnId();
      const result = (await command(
        { type: "send", room_id: roomId, event_type: type, content, txn_id: txnId },
        () => client.send(roomId, type, content, txnId),
      )) as { event_id: string };
      return result.event_id;
    },
    retry: (roomId, p) => {
      dispatch({ kind: "echoStatus", roomId, txnId: p.txnId, status: "sending" });
      void deliver(roomId, p);
    },
  };

  // Messages that failed while offline go again once the connection is back, as Element does.
  useEffect(() => {
    if (status !== "live" && status !== "polling") return;
    for (const room of Object.values(stateRef.current.rooms)) {
      for (const p of room.pending) {
        if (p.status === "failed" && p.retryable) {
          dispatch({ kind: "echoStatus", roomId: room.roomId, txnId: p.txnId, status: "sending" });
          void deliver(room.roomId, p);
        }
      }
    }
  }, [status, deliver]);

  // A new screen takes the focus to its heading, so keyboard and screen-reader users land there
  // (on a phone the link they used is gone with the list).
  const firstRoute = useRef(true);
  useEffect(() => {
    if (firstRoute.current) {
      firstRoute.current = false;
      return;
    }
    const heading = document.querySelector<HTMLElement>("#main h2");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  }, [route]);

  const signOut = async () => {
    try {
      await client.logout();
    } catch {
      // Signed out here either way; the server forgets the session when it can.
    }
    onSignedOut();
  };

  const roomMatch = /^\/room\/(.+)$/.exec(route);
  let roomId: string | null = null;
  try {
    roomId = roomMatch ? decodeURIComponent(roomMatch[1]) : null;
  } catch {
    // A malformed address shows the home screen rather than nothing.
  }
  const view = roomId ? "room" : route === "/new" ? "new" : route === "/profile" ? "profile" : route === "/settings" ? "settings" : "home";

  return (
    <Ctx.Provider value={ctx}>
      <div className="app" data-view={view}>
        <RoomList current={roomId} />
        <main className="main" id="main">
          {view === "room" && roomId ? (
            <RoomView key={roomId} roomId={roomId} />
          ) : view === "new" ? (
            <NewRoom />
          ) : view === "profile" ? (
            <Profile />
          ) : view === "settings" ? (
            <Settings {...settings} onSignOut={signOut} />
          ) : (
            <section className="welcome">
              <h2>{t("welcome", { name: session.userId })}</h2>
              <p>{t("welcomeHelp")}</p>
            </section>
          )}
        </main>
        {status !== "live" && (
          <div className={`banner ${status}`} role="status">
            {status === "offline" ? t("offline") : status === "polling" ? t("polling") : t("connecting")}
          </div>
        )}
      </div>
    </Ctx.Provider>
  );
}
