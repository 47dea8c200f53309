// The Client-Server API calls the app makes, on the origin that served it.

export interface Session {
  userId: string;
  accessToken: string;
  deviceId: string;
}

export interface MatrixEvent {
  event_id: string;
  type: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  state_key?: string;
  unsigned?: { transaction_id?: string; redacted_because?: unknown; [k: string]: unknown };
  redacts?: string;
  room_id?: string;
}

/** A Matrix error answer (or a network failure, with status 0). */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export interface IdentityProvider {
  id: string;
  name: string;
}

export interface LoginFlows {
  password: boolean;
  sso: IdentityProvider[];
}

const C = "/_matrix/client/v3";

function enc(s: string): string {
  return encodeURIComponent(s);
}

let txnCounter = 0;
/** A transaction ID unique to this tab; the same ID makes a retried send idempotent. */
export function newTxnId(): string {
  txnCounter += 1;
  return `hw${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}${txnCounter}`;
}

export async function request<T = Record<string, unknown>>(
  method: string,
  path: string,
  opts: { body?: unknown; token?: string; query?: Record<string, string | number | undefined>; signal?: AbortSignal } = {},
): Promise<T> {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(opts.query ?? {})) {
    if (v !== undefined) url.searchParams.set(k, String(v));
  }
  const headers: Record<string, string> = {};
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: opts.signal,
    });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new MatrixError(0, "NETWORK", "network");
  }
  let body: Record<string, unknown> = {};
  try {
    body = (await response.json()) as Record<string, unknown>;
  } catch {
    body = {};
  }
  if (!response.ok) {
    throw new MatrixError(
      response.status,
      typeof body.errcode === "string" ? body.errcode : "M_UNKNOWN",
      typeof body.error === "string" ? body.error : response.statusText,
      body,
    );
  }
  return body as T;
}

export async function loginFlows(): Promise<LoginFlows> {
  const body = await request<{ flows: { type: string; identity_providers?: IdentityProvider[] }[] }>("GET", `${C}/login`);
  const flows = body.flows ?? [];
  return {
    password: flows.some((f) => f.type === "m.login.password"),
    sso: flows.find((f) => f.type === "m.login.sso")?.identity_providers ?? [],
  };
}

/** Set while a single sign-on this tab started is under way. */
export const SSO_PENDING = "hearth.sso";

export function ssoRedirectUrl(idp: string): string {
  // The server allowlists this return address under its public_baseurl (src/web_client.rs,
  // SSO_RETURN), so its own client skips the page that asks whether to trust an application
  // when the app is opened at that address (elsewhere, that page is shown first).
  const back = `${window.location.origin}/?via=sso`;
  return `${C}/login/sso/redirect/${enc(idp)}?redirectUrl=${enc(back)}`;
}

function toSession(body: { user_id: string; access_token: string; device_id: string }): Session {
  return { userId: body.user_id, accessToken: body.access_token, deviceId: body.device_id };
}

const DEVICE_NAME = "Hearth Web";

export async function loginWithPassword(user: string, password: string): Promise<Session> {
  const body = await request<{ user_id: string; access_token: string; device_id: string }>("POST", `${C}/login`, {
    body: {
      type: "m.login.password",
      identifier: { type: "m.id.user", user },
      password,
      initial_device_display_name: DEVICE_NAME,
    },
  });
  return toSession(body);
}

export async function loginWithToken(token: string): Promise<Session> {
  const body = await request<{ user_id: string; access_token: string; device_id: string }>("POST", `${C}/login`, {
    body: { type: "m.login.token", token, initial_device_display_name: DEVICE_NAME },
  });
  return toSession(body);
}

export async function usernameAvailable(username: string): Promise<boolean> {
  try {
    await request("GET", `${C}/register/available`, { query: { username } });
    return true;
  } catch (e) {
    if (e instanceof MatrixError && e.errcode === "M_USER_IN_USE") return false;
    throw e;
  }
}

/** Thrown when the server's registration needs a stage this form cannot do, or a token it lacks. */
export class RegistrationNeeds extends Error {
  constructor(readonly stage: string) {
    super(stage);
  }
}

interface UiaBody {
  session?: string;
  flows?: { stages: string[] }[];
  completed?: string[];
}

/** Picks the flow whose stages this app can complete, preferring one without a token. */
export function pickFlow(flows: { stages: string[] }[], haveToken: boolean): string[] | null {
  const doable = (stages: string[]) =>
    stages.every((s) => s === "m.login.dummy" || (s === "m.login.registration_token" && haveToken));
  const candidates = flows.filter((f) => doable(f.stages));
  if (candidates.length === 0) return null;
  candidates.sort((a, b) => a.stages.length - b.stages.length);
  return candidates[0].stages;
}

export async function register(username: string, password: string, token: string): Promise<Session> {
  const base = { username, password, initial_device_display_name: DEVICE_NAME };
  let auth: Record<string, unknown> | undefined;
  for (let round = 0; round < 5; round++) {
    try {
      const body = await request<{ user_id: string; access_token: string; device_id: string }>("POST", `${C}/register`, {
        body: auth ? { ...base, auth } : base,
      });
      return toSession(body);
    } catch (e) {
      if (!(e instanceof MatrixError) || e.status !== 401 || !e.body.flows) throw e;
      const uia = e.body as UiaBody;
      const flow = pickFlow(uia.flows ?? [], token !== "");
      if (!flow) {
        const needsToken = (uia.flows ?? []).some((f) => f.stages.includes("m.login.registration_token"));
        throw new RegistrationNeeds(needsToken ? "m.login.registration_token" : (uia.flows?.[0]?.stages[0] ?? "unknown"));
      }
      const next = flow.find((s) => !(uia.completed ?? []).includes(s));
      if (!next) throw e;
      auth =
        next === "m.login.registration_token"
          ? { type: next, token, session: uia.session }
          : { type: next, session: uia.session };
    }
  }
  throw new MatrixError(0, "M_UNKNOWN", "registration did not finish");
}

/** Calls an endpoint behind user-interactive auth, answering the password stage. */
async function withPassword<T>(session: Session, method: string, path: string, body: Record<string, unknown>, password: string): Promise<T> {
  try {
    return await request<T>(method, path, { token: session.accessToken, body });
  } catch (e) {
    if (!(e instanceof MatrixError) || e.status !== 401 || !e.body.flows) throw e;
    const auth = {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: session.userId },
      password,
      session: (e.body as UiaBody).session,
    };
    return request<T>(method, path, { token: session.accessToken, body: { ...body, auth } });
  }
}

/** The API as one signed-in user. */
export class Client {
  constructor(readonly session: Session) {}

  get userId(): string {
    return this.session.userId;
  }

  call<T = Record<string, unknown>>(
    method: string,
    path: string,
    opts: { body?: unknown; query?: Record<string, string | number | undefined>; signal?: AbortSignal } = {},
  ): Promise<T> {
    return request<T>(method, path, { ...opts, token: this.session.accessToken });
  }

  logout(): Promise<unknown> {
    return this.call("POST", `${C}/logout`, { body: {} });
  }

  wsTicket(): Promise<{ ticket: string }> {
    return this.call("POST", "/_matrix/client/unstable/io.hearth/ws_ticket", { body: {} });
  }

  sync(since: string | null, filter: string, timeout: number, signal?: AbortSignal): Promise<Record<string, unknown>> {
    return this.call("GET", `${C}/sync`, { query: { since: since ?? undefined, filter, timeout }, signal });
  }

  send(roomId: string, type: string, content: unknown, txnId: string): Promise<{ event_id: string }> {
    return this.call("PUT", `${C}/rooms/${enc(roomId)}/send/${enc(type)}/${enc(txnId)}`, { body: content });
  }

  redact(roomId: string, eventId: string, txnId: string): Promise<{ event_id: string }> {
    return this.call("PUT", `${C}/rooms/${enc(roomId)}/redact/${enc(eventId)}/${enc(txnId)}`, { body: {} });
  }

  messages(roomId: string, from: string | null, limit: number): Promise<{ chunk: MatrixEvent[]; end?: string; state?: MatrixEvent[] }> {
    return this.call("GET", `${C}/rooms/${enc(roomId)}/messages`, {
      query: { dir: "b", from: from ?? undefined, limit },
    });
  }

  createRoom(body: Record<string, unknown>): Promise<{ room_id: string }> {
    return this.call("POST", `${C}/createRoom`, { body });
  }

  join(roomIdOrAlias: string): Promise<{ room_id: string }> {
    return this.call("POST", `${C}/join/${enc(roomIdOrAlias)}`, { body: {} });
  }

  leave(roomId: string): Promise<unknown> {
    return this.call("POST", `${C}/rooms/${enc(roomId)}/leave`, { body: {} });
  }

  invite(roomId: string, userId: string): Promise<unknown> {
    return this.call("POST", `${C}/rooms/${enc(roomId)}/invite`, { body: { user_id: userId } });
  }

  publicRooms(): Promise<{ chunk: { room_id: string; name?: string; topic?: string; canonical_alias?: string; num_joined_members: number }[] }> {
    return this.call("GET", `${C}/publicRooms`, { query: { limit: 50 } });
  }

  profile(userId: string): Promise<{ displayname?: string; avatar_url?: string }> {
    return this.call("GET", `${C}/profile/${enc(userId)}`);
  }

  setDisplayName(name: string): Promise<unknown> {
    return this.call("PUT", `${C}/profile/${enc(this.userId)}/displayname`, { body: { displayname: name } });
  }

  setAvatarUrl(url: string): Promise<unknown> {
    return this.call("PUT", `${C}/profile/${enc(this.userId)}/avatar_url`, { body: { avatar_url: url } });
  }

  setAccountData(type: string, content: unknown): Promise<unknown> {
    return this.call("PUT", `${C}/user/${enc(this.userId)}/account_data/${enc(type)}`, { body: content });
  }

  devices(): Promise<{ devices: { device_id: string; display_name?: string; last_seen_ts?: number; last_seen_ip?: string }[] }> {
    return this.call("GET", `${C}/devices`);
  }

  deleteDevices(ids: string[], password: string): Promise<unknown> {
    return withPassword(this.session, "POST", `${C}/delete_devices`, { devices: ids }, password);
  }

  changePassword(oldPassword: string, newPassword: string): Promise<unknown> {
    return withPassword(this.session, "POST", `${C}/account/password`, { new_password: newPassword, logout_devices: false }, oldPassword);
  }

  /** Uploads a file, reporting progress (0..1); resolves to its mxc:// URI. */
  upload(file: Blob, name: string, onProgress: (fraction: number) => void): Promise<string> {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/_matrix/media/v3/upload?filename=${enc(name)}`);
      xhr.setRequestHeader("Authorization", `Bearer ${this.session.accessToken}`);
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      };
      xhr.onload = () => {
        try {
          const body = JSON.parse(xhr.responseText) as Record<string, unknown>;
          if (xhr.status === 200 && typeof body.content_uri === "string") resolve(body.content_uri);
          else reject(new MatrixError(xhr.status, String(body.errcode ?? "M_UNKNOWN"), String(body.error ?? "upload failed"), body));
        } catch {
          reject(new MatrixError(xhr.status, "M_UNKNOWN", "upload failed"));
        }
      };
      xhr.onerror = () => reject(new MatrixError(0, "NETWORK", "network"));
      xhr.send(file);
    });
  }

  /** Fetches authenticated media as a blob (thumbnail when a size is given). */
  async media(mxc: string, size?: { width: number; height: number }): Promise<Blob> {
    const m = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc);
    if (!m) throw new MatrixError(400, "M_INVALID_PARAM", "bad mxc");
    const path = size
      ? `/_matrix/client/v1/media/thumbnail/${enc(m[1])}/${enc(m[2])}?width=${size.width}&height=${size.height}&method=scale`
      : `/_matrix/client/v1/media/download/${enc(m[1])}/${enc(m[2])}`;
    const response = await fetch(path, { headers: { Authorization: `Bearer ${this.session.accessToken}` } });
    if (!response.ok) throw new MatrixError(response.status, "M_NOT_FOUND", "media");
    return response.blob();
  }
}
