import { useEffect, useId, useState, type FormEvent } from "react";
import { useT, type T } from "./i18n";
import {
  loginFlows,
  loginWithPassword,
  MatrixError,
  register,
  RegistrationNeeds,
  request,
  SSO_PENDING,
  ssoRedirectUrl,
  usernameAvailable,
  type IdentityProvider,
  type Session,
} from "./matrix";

/** An error in words a person can act on. */
export function describeError(t: T, e: unknown, context: "login" | "register" | "other" = "other"): string {
  if (e instanceof RegistrationNeeds) return t("registrationUnsupported", { stage: e.stage });
  if (!(e instanceof MatrixError)) return t("errGeneric", { message: String((e as Error)?.message ?? e) });
  switch (e.errcode) {
    case "NETWORK":
      return t("errNetwork");
    case "M_FORBIDDEN":
      return context === "login" ? t("errWrongPassword") : t("errGeneric", { message: e.message });
    case "M_USER_IN_USE":
      return t("errUserInUse");
    case "M_INVALID_USERNAME":
      return t("errInvalidUsername");
    case "M_WEAK_PASSWORD":
      return t("errWeakPassword");
    case "M_LIMIT_EXCEEDED":
      return t("errLimit");
    case "M_USER_DEACTIVATED":
      return t("errDeactivated");
    default:
      if (context === "register" && e.status === 401) return t("errTokenInvalid");
      return t("errGeneric", { message: e.message });
  }
}

/** A labelled text input, required unless told otherwise. */
export function Field(props: {
  label: string;
  type?: string;
  value: string;
  onChange(v: string): void;
  autoComplete?: string;
  describedBy?: string;
  required?: boolean;
  placeholder?: string;
}) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <input
        id={id}
        type={props.type ?? "text"}
        value={props.value}
        autoComplete={props.autoComplete}
        aria-describedby={props.describedBy}
        placeholder={props.placeholder}
        required={props.required ?? true}
        onChange={(e) => props.onChange(e.target.value)}
      />
    </div>
  );
}

export function Auth({ onSession, initialError }: { onSession(s: Session): void; initialError?: string }) {
  const t = useT();
  const [mode, setMode] = useState<"login" | "register">("login");
  const [providers, setProviders] = useState<IdentityProvider[]>([]);
  useEffect(() => {
    loginFlows().then((f) => setProviders(f.sso), () => setProviders([]));
  }, []);
  return (
    <main className="auth">
      <h1 className="brand">{t("appName")}</h1>
      {mode === "login" ? (
        <Login onSession={onSession} providers={providers} initialError={initialError} onRegister={() => setMode("register")} />
      ) : (
        <Register onSession={onSession} onLogin={() => setMode("login")} />
      )}
    </main>
  );
}

function Login(props: { onSession(s: Session): void; providers: IdentityProvider[]; initialError?: string; onRegister(): void }) {
  const t = useT();
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(props.initialError ?? "");
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      props.onSession(await loginWithPassword(user.trim(), password));
    } catch (err) {
      setError(describeError(t, err, "login"));
      setBusy(false);
    }
  };
  return (
    <section className="card" aria-labelledby="login-title">
      <h2 id="login-title">{t("signInTitle")}</h2>
      <form onSubmit={submit}>
        <Field label={t("username")} value={user} onChange={setUser} autoComplete="username" />
        <Field label={t("password")} type="password" value={password} onChange={setPassword} autoComplete="current-password" />
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {t("signIn")}
        </button>
      </form>
      {props.providers.length > 0 && (
        <div className="sso">
          <p className="muted">{t("or")}</p>
          {props.providers.map((p) => (
            // The marker lets the app take a login token only from a sign-in this tab started.
            <a key={p.id} className="button" href={ssoRedirectUrl(p.id)} onClick={() => sessionStorage.setItem(SSO_PENDING, "1")}>
              {t("continueWith", { name: p.name })}
            </a>
          ))}
        </div>
      )}
      <p>
        {t("noAccount")}{" "}
        <button type="button" className="link" onClick={props.onRegister}>
          {t("register")}
        </button>
      </p>
    </section>
  );
}

/** What the server's registration asks for, learnt from an empty first request. */
async function registrationNeeds(): Promise<"open" | "token" | "closed"> {
  try {
    await request("POST", "/_matrix/client/v3/register", { body: {} });
    return "open";
  } catch (e) {
    if (e instanceof MatrixError && e.status === 401 && Array.isArray(e.body.flows)) {
      const flows = e.body.flows as { stages: string[] }[];
      return flows.every((f) => f.stages.includes("m.login.registration_token")) ? "token" : "open";
    }
    if (e instanceof MatrixError && e.errcode === "M_FORBIDDEN") return "closed";
    return "open";
  }
}

function Register(props: { onSession(s: Session): void; onLogin(): void }) {
  const t = useT();
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [token, setToken] = useState("");
  const [needs, setNeeds] = useState<"open" | "token" | "closed">("open");
  const [availability, setAvailability] = useState<"" | "checking" | "available" | "taken" | "invalid">("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const hintId = useId();

  useEffect(() => {
    void registrationNeeds().then(setNeeds);
  }, []);

  // Availability while typing, once the typing pauses.
  useEffect(() => {
    const name = user.trim();
    if (!name) {
      setAvailability("");
      return;
    }
    setAvailability("checking");
    let current = true;
    const timer = setTimeout(() => {
      usernameAvailable(name).then(
        (ok) => current && setAvailability(ok ? "available" : "taken"),
        (e) => current && setAvailability(e instanceof MatrixError && e.errcode === "M_INVALID_USERNAME" ? "invalid" : ""),
      );
    }, 350);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [user]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (password !== confirm) {
      setError(t("passwordsDiffer"));
      return;
    }
    setBusy(true);
    setError("");
    try {
      props.onSession(await register(user.trim(), password, token.trim()));
    } catch (err) {
      if (err instanceof RegistrationNeeds && err.stage === "m.login.registration_token") setNeeds("token");
      setError(err instanceof RegistrationNeeds && err.stage === "m.login.registration_token" ? t("registrationTokenHelp") : describeError(t, err, "register"));
      setBusy(false);
    }
  };

  const hint =
    availability === "checking"
      ? t("checking")
      : availability === "available"
        ? t("available", { name: user.trim() })
        : availability === "taken"
          ? t("taken", { name: user.trim() })
          : availability === "invalid"
            ? t("errInvalidUsername")
            : "";

  return (
    <section className="card" aria-labelledby="register-title">
      <h2 id="register-title">{t("registerTitle")}</h2>
      {needs === "closed" ? (
        <p role="alert">{t("registrationClosed")}</p>
      ) : (
        <form onSubmit={submit}>
          <Field label={t("username")} value={user} onChange={setUser} autoComplete="username" describedBy={hintId} />
          <p id={hintId} className={`hint ${availability}`} aria-live="polite">
            {hint}
          </p>
          <Field label={t("password")} type="password" value={password} onChange={setPassword} autoComplete="new-password" />
          <Field label={t("confirmPassword")} type="password" value={confirm} onChange={setConfirm} autoComplete="new-password" />
          {needs === "token" && (
            <>
              <Field label={t("registrationToken")} value={token} onChange={setToken} />
              <p className="muted">{t("registrationTokenHelp")}</p>
            </>
          )}
          {error && (
            <p className="error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" className="primary" disabled={busy || availability === "taken"}>
            {t("register")}
          </button>
        </form>
      )}
      <p>
        {t("haveAccount")}{" "}
        <button type="button" className="link" onClick={props.onLogin}>
          {t("signIn")}
        </button>
      </p>
    </section>
  );
}
