// One live connection per tab: Hearth's WebSocket channel (docs/websocket.md) with a ticket,
// resumed from the last next_batch after every reconnection so nothing is missed or repeated;
// /sync long-polling when the socket cannot be opened at all.
import { Client, MatrixError } from "./matrix";
import type { SyncBody } from "./store";

export type LiveStatus = "connecting" | "live" | "offline" | "polling";

export interface LiveHandlers {
  /** `reset`: the stream starts over (its token was refused), so nothing held joins up with it. */
  onSync(body: SyncBody, reset: boolean): void;
  onStatus(status: LiveStatus): void;
  /** The session ended on the server (signed out elsewhere, or the account was deactivated). */
  onSignedOut(): void;
}

/** The sync filter both paths use: enough history per room to fill a screen. */
export const SYNC_FILTER = JSON.stringify({ room: { timeline: { limit: 30 } } });

/** Delay before reconnection attempt `n` (from 0): doubling from 1 s to 30 s, with jitter. */
export function backoff(n: number, random: () => number = Math.random): number {
  const base = Math.min(30_000, 1000 * 2 ** Math.min(n, 5));
  return Math.round(base * (0.75 + 0.5 * random()));
}

/** Consecutive failures to open a socket after which the tab long-polls instead. */
const SOCKET_ATTEMPTS_BEFORE_POLLING = 3;
/** A command unanswered this long means the connection is dead (sleep, a network change). */
const COMMAND_TIMEOUT_MS = 10_000;
/** The app pings this often, so that a connection that died silently is noticed. */
const PING_EVERY_MS = 30_000;
/** A socket that closes this soon after opening counts as a failed attempt. */
const SHORT_LIVED_MS = 5_000;

interface Waiting {
  resolve(result: Record<string, unknown>): void;
  reject(error: Error): void;
}

export class Live {
  private socket: WebSocket | null = null;
  private since: string | null;
  private stopped = false;
  private failures = 0;
  private everOpened = false;
  private nextId = 1;
  private waiting = new Map<number, Waiting>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private poll: AbortController | null = null;
  private pinger: ReturnType<typeof setInterval> | null = null;
  /** The next sync starts over: the last token was refused. */
  private reset = false;
  status: LiveStatus = "connecting";

  constructor(
    private readonly client: Client,
    private readonly handlers: LiveHandlers,
    since: string | null = null,
  ) {
    this.since = since;
  }

  start(): void {
    window.addEventListener("online", this.onOnline);
    void this.connect();
  }

  /** Back on a network: try at once instead of waiting out the backoff. */
  private onOnline = () => {
    if (this.stopped || this.socket || this.status === "polling" || !this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    void this.connect();
  };

  stop(): void {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    if (this.pinger) clearInterval(this.pinger);
    if (this.timer) clearTimeout(this.timer);
    this.poll?.abort();
    this.socket?.close(1000);
    this.failAll(new Error("stopped"));
  }

  /**
   * Gives up on a socket now, without waiting for its closing handshake (which a dead
   * connection never completes): its handlers are detached and the loss handled at once.
   */
  private abandon(socket: WebSocket, code: number, reason: string): void {
    const lost = socket.onclose;
    socket.onclose = null;
    socket.onmessage = null;
    socket.close(code, reason);
    lost?.call(socket, new CloseEvent("close", { code, reason }));
  }

  private setStatus(status: LiveStatus): void {
    this.status = status;
    this.handlers.onStatus(status);
  }

  private failAll(error: Error): void {
    for (const w of this.waiting.values()) w.reject(error);
    this.waiting.clear();
  }

  private async connect(): Promise<void> {
    this.timer = null;
    if (this.stopped) return;
    this.setStatus(this.everOpened ? "offline" : "connecting");
    let ticket: string;
    try {
      ticket = (await this.client.wsTicket()).ticket;
    } catch (e) {
      if (e instanceof MatrixError && e.errcode === "M_UNKNOWN_TOKEN") {
        this.handlers.onSignedOut();
        return;
      }
      this.failures += 1;
      this.retry();
      return;
    }
    if (this.stopped) return;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${window.location.host}/ws?ticket=${encodeURIComponent(ticket)}`);
    this.socket = socket;
    let acked = false;
    let ackedAt = 0;
    socket.onmessage = (message) => {
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(String(message.data)) as Record<string, unknown>;
      } catch {
        return;
      }
      if (frame.type === "ack") {
        acked = true;
        ackedAt = Date.now();
        this.everOpened = true;
        socket.send(JSON.stringify({ type: "sync", since: this.since ?? undefined, filter: JSON.parse(SYNC_FILTER) }));
        if (this.pinger) clearInterval(this.pinger);
        this.pinger = setInterval(() => void this.command({ type: "ping" }).catch(() => undefined), PING_EVERY_MS);
      } else if (frame.type === "sync") {
        this.since = String(frame.next_batch);
        this.failures = 0;
        if (this.status !== "live") this.setStatus("live");
        const reset = this.reset;
        this.reset = false;
        this.handlers.onSync(frame as unknown as SyncBody, reset);
      } else if (frame.type === "result" || frame.type === "error") {
        const w = typeof frame.id === "number" ? this.waiting.get(frame.id) : undefined;
        if (!w) {
          // An error for no command is the sync loop's, which has stopped: a session that
          // ended, or a token the server no longer knows (start over), or a failure (try again).
          if (frame.errcode === "M_UNKNOWN_TOKEN") {
            this.handlers.onSignedOut();
            return;
          }
          if (frame.errcode === "M_INVALID_PARAM" && this.since) {
            this.since = null;
            this.reset = true;
          }
          this.abandon(socket, 4101, "sync stopped");
          return;
        }
        this.waiting.delete(frame.id as number);
        if (frame.type === "result") w.resolve((frame.result ?? {}) as Record<string, unknown>);
        else w.reject(new MatrixError(400, String(frame.errcode), String(frame.error)));
      }
    };
    socket.onclose = () => {
      if (this.socket === socket) this.socket = null;
      if (this.pinger) clearInterval(this.pinger);
      this.pinger = null;
      this.failAll(new MatrixError(0, "NETWORK", "disconnected"));
      if (this.stopped) return;
      // A server that accepts and then closes at once must not be hammered every second.
      if (!acked || Date.now() - ackedAt < SHORT_LIVED_MS) this.failures += 1;
      if (!this.everOpened && this.failures >= SOCKET_ATTEMPTS_BEFORE_POLLING) {
        void this.longPoll();
        return;
      }
      this.retry();
    };
  }

  private retry(): void {
    if (this.stopped) return;
    this.setStatus(this.everOpened ? "offline" : "connecting");
    // After a connection that worked, the first attempt goes within a second or so; each
    // failure since doubles the wait.
    const delay = backoff(Math.max(0, this.failures - 1));
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  /** /sync long-polling, for networks where WebSockets do not get through. */
  private async longPoll(): Promise<void> {
    this.setStatus("polling");
    let errors = 0;
    while (!this.stopped) {
      this.poll = new AbortController();
      try {
        const body = (await this.client.sync(this.since, SYNC_FILTER, this.since ? 30_000 : 0, this.poll.signal)) as unknown as SyncBody;
        this.since = body.next_batch;
        errors = 0;
        if (this.status !== "polling") this.setStatus("polling");
        const reset = this.reset;
        this.reset = false;
        this.handlers.onSync(body, reset);
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof MatrixError && e.errcode === "M_UNKNOWN_TOKEN") {
          this.handlers.onSignedOut();
          return;
        }
        if (e instanceof MatrixError && e.errcode === "M_INVALID_PARAM" && this.since) {
          this.since = null;
          this.reset = true;
        }
        this.setStatus("offline");
        await new Promise((r) => setTimeout(r, backoff(errors)));
        errors += 1;
      }
    }
  }

  /** Runs a command over the socket; rejects at once when there is no open socket. */
  command(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || this.status !== "live") {
      return Promise.reject(new MatrixError(0, "NETWORK", "not connected"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      // No answer in time: the connection is presumed dead and dropped, which fails this and
      // every other waiting command as a network error (their callers go over HTTP instead).
      const timer = setTimeout(() => {
        if (this.waiting.has(id) && this.socket === socket) this.abandon(socket, 4102, "no answer");
      }, COMMAND_TIMEOUT_MS);
      const settle = () => clearTimeout(timer);
      this.waiting.set(id, {
        resolve: (r) => {
          settle();
          resolve(r);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      });
      socket.send(JSON.stringify({ ...body, id }));
    });
  }
}
