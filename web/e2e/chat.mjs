// End to end in real headless Chromium against a running hearth: two people register in two
// browser contexts (Alice on a desktop in English, Bạch on a 360 px phone in Vietnamese), chat
// live both ways, react, share an image (picked, pasted) and a file (dropped, downloaded), lose
// the socket and get what was sent meanwhile, change their profile, turn a room's notifications
// off, start a direct chat (names, presence), meet an encrypted room, scroll back through history; a third, whose network lets no WebSocket through, uses the
// app over long-polling, changes the password, signs out and back in. Every screen is checked with axe-core
// and for horizontal overflow at 360 px, and photographed; any browser console error fails.
//
// usage: node e2e/chat.mjs --homeserver http://127.0.0.1:PORT [--screenshots DIR]

import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { deflateSync } from "node:zlib";
import { chromium } from "playwright-core";

const { values } = parseArgs({
  options: { homeserver: { type: "string" }, screenshots: { type: "string" }, chromium: { type: "string" } },
  strict: true,
});
const base = new URL(values.homeserver ?? "");
if (!(base.hostname === "localhost" || /^127\./.test(base.hostname))) {
  console.error("usage: --homeserver http://127.0.0.1:PORT (loopback only)");
  process.exit(2);
}
const shots = values.screenshots ?? new URL("./screenshots", import.meta.url).pathname;
mkdirSync(shots, { recursive: true });
// Evaluated through the DevTools protocol: the served CSP (rightly) refuses injected script tags.
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const serverName = "localhost";
const WAIT = { timeout: 15_000 };

let passed = 0;
let failed = 0;
function check(step, ok, detail = "") {
  if (ok) passed += 1;
  else failed += 1;
  console.log(`${ok ? "PASS" : "FAIL"} ${step}${detail ? `: ${detail}` : ""}`);
}
async function step(name, f) {
  try {
    await f();
    check(name, true);
  } catch (e) {
    check(name, false, String(e?.message ?? e).split("\n").slice(0, 6).join(" | "));
  }
}

/** A valid PNG (a sunset-coloured gradient), made here so the test needs no fixture file. */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Array.from({ length: width }, (_, x) => [235, 70 + Math.round((120 * y) / height), 40 + Math.round((150 * x) / width)]);
    rows.push(Buffer.from([0, ...row.flat()]));
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

const browser = await chromium.launch({
  executablePath: values.chromium ?? process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/**
 * A person's browser. Its WebSocket goes through a route the test can cut, as a network
 * would; HTTP is untouched.
 */
async function person(name, { viewport, locale, noSockets = false }) {
  const context = await browser.newContext({ viewport, locale, baseURL: base.origin });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // User-interactive auth answers its first step with 401 by design (registration and a
    // password change start that way), and a wrong password, while a step tries one, is a 403
    // the page shows in words; Chromium logs every 4xx as a console error.
    const from = m.location()?.url ?? "";
    if (/status of 401 \(Unauthorized\)/.test(m.text()) && /\/(register|account\/password)(\?|$)/.test(from)) return;
    if (me.refusalExpected && /status of 403 \(Forbidden\)/.test(m.text())) return;
    errors.push(`console: ${m.text()}`);
  });
  const sockets = { open: [], allow: !noSockets };
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    if (!sockets.allow) {
      ws.close({ code: 4100, reason: "network down" });
      return;
    }
    const server = ws.connectToServer();
    sockets.open.push({ ws, server });
  });
  const me = {
    name,
    page,
    errors,
    refusalExpected: false,
    cut() {
      sockets.allow = false;
      for (const { ws, server } of sockets.open.splice(0)) {
        server.close({ code: 4100, reason: "network down" });
        ws.close({ code: 4100, reason: "network down" });
      }
    },
    restore() {
      sockets.allow = true;
    },
  };
  return me;
}

async function audit(p, screen) {
  const page = p.page;
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(`${p.name}: ${screen} has no serious accessibility violation`, serious.length === 0, JSON.stringify(serious));
  const width = page.viewportSize()?.width ?? 0;
  const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
  check(`${p.name}: ${screen} fits ${width} px without scrolling sideways`, scroll <= width, `scrollWidth ${scroll}`);
  await page.screenshot({ path: join(shots, `${screen}-${width <= 400 ? "phone" : "desktop"}.png`) });
}

async function register(p, username, labels) {
  const page = p.page;
  await page.goto("/");
  await page.getByRole("button", { name: labels.register }).waitFor(WAIT);
  await audit(p, "sign-in");
  await page.getByRole("button", { name: labels.register }).click();
  await page.getByLabel(labels.username).fill(username);
  await page.getByText(labels.available(username)).waitFor(WAIT);
  await page.getByLabel(labels.password, { exact: true }).fill("correct horse battery");
  await page.getByLabel(labels.confirm).fill("correct horse battery");
  await audit(p, "register");
  await page.getByRole("button", { name: labels.register }).last().click();
  await page.getByRole("navigation").waitFor(WAIT);
}

const EN = {
  register: "Create account",
  username: "Username",
  password: "Password",
  confirm: "Confirm password",
  available: (n) => `${n} is available`,
};
const VI = {
  register: "Tạo tài khoản",
  username: "Tên người dùng",
  password: "Mật khẩu",
  confirm: "Nhập lại mật khẩu",
  available: (n) => `${n} chưa có ai dùng`,
};

const alice = await person("Alice", { viewport: { width: 1280, height: 800 }, locale: "en-US" });
const bach = await person("Bạch", { viewport: { width: 360, height: 740 }, locale: "vi-VN" });
const others = [];
const roomOf = (p, text) => p.page.locator(".events").getByText(text, { exact: true });

try {
  await step("Alice registers (desktop, English)", () => register(alice, "alice", EN));
  await step("Bạch registers (phone, Vietnamese)", () => register(bach, "bach", VI));
  await audit(alice, "home");
  await audit(bach, "home");

  await step("Alice creates a room and invites Bạch", async () => {
    const page = alice.page;
    await page.getByRole("button", { name: "New room or chat" }).click();
    await page.getByLabel("Room name").waitFor(WAIT);
    await audit(alice, "new-room");
    await page.getByLabel("Room name").fill("Lounge");
    await page.getByRole("button", { name: "Create", exact: true }).click();
    await page.getByRole("heading", { name: "Lounge" }).waitFor(WAIT);
    await page.getByRole("button", { name: "Members" }).click();
    await page.getByLabel("User ID to invite (@name:server)").fill(`@bach:${serverName}`);
    await page.getByRole("button", { name: "Invite", exact: true }).click();
    await page.locator(".members").getByText("bach").waitFor(WAIT);
    await audit(alice, "members");
    await page.getByRole("button", { name: "Members" }).click();
  });

  await step("Bạch sees the invite live and accepts it", async () => {
    const page = bach.page;
    await page.getByRole("button", { name: "Đồng ý" }).waitFor(WAIT);
    await page.getByRole("button", { name: "Phòng hoặc cuộc trò chuyện mới" }).click();
    await page.getByLabel("Tên phòng").waitFor(WAIT);
    await audit(bach, "new-room");
    await page.getByRole("link", { name: "Quay lại" }).click();
    await page.getByRole("button", { name: "Đồng ý" }).click();
    await page.getByRole("heading", { name: "Lounge" }).waitFor(WAIT);
    await page.getByRole("button", { name: "Thành viên" }).click();
    await page.locator(".members").getByText("alice").waitFor(WAIT);
    await audit(bach, "members");
    await page.getByRole("button", { name: "Thành viên" }).click();
  });

  await step("Alice's message appears on Bạch's phone without a reload", async () => {
    await alice.page.getByPlaceholder("Message Lounge").fill("Hello Bạch!");
    await alice.page.keyboard.press("Enter");
    await roomOf(bach, "Hello Bạch!").waitFor(WAIT);
  });

  await step("Bạch's reply appears on Alice's screen without a reload", async () => {
    await bach.page.getByPlaceholder("Nhắn vào Lounge").fill("Chào Alice!");
    await bach.page.getByRole("button", { name: "Gửi" }).click();
    await roomOf(alice, "Chào Alice!").waitFor(WAIT);
  });
  await audit(alice, "room");
  await audit(bach, "room");

  await step("Alice reacts and Bạch sees the reaction", async () => {
    const line = alice.page.locator(".event.message", { hasText: "Chào Alice!" });
    await line.hover();
    await line.getByRole("button", { name: "React with 👍" }).click();
    await bach.page.locator(".event.message", { hasText: "Chào Alice!" }).locator(".reaction", { hasText: "👍 1" }).waitFor(WAIT);
  });

  await step("Alice shares an image and Bạch sees its thumbnail", async () => {
    await alice.page.locator('input[type="file"]').first().setInputFiles({ name: "sunset.png", mimeType: "image/png", buffer: png(240, 140) });
    const thumb = bach.page.locator("img.thumb[alt='sunset.png']");
    await thumb.waitFor(WAIT);
    await bach.page.waitForFunction(() => {
      const img = document.querySelector("img.thumb[alt='sunset.png']");
      return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0;
    }, null, WAIT);
  });

  await step("Bạch drops a file on the room, Alice downloads it through authenticated media", async () => {
    const dropped = await bach.page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["minutes of the meeting"], "minutes.txt", { type: "text/plain" }));
      return dt;
    });
    await bach.page.dispatchEvent(".room", "drop", { dataTransfer: dropped });
    const button = alice.page.getByRole("button", { name: "📎 Download minutes.txt" });
    await button.waitFor(WAIT);
    const [download] = await Promise.all([alice.page.waitForEvent("download", WAIT), button.click()]);
    const path = await download.path();
    const text = readFileSync(path, "utf8");
    if (text !== "minutes of the meeting") throw new Error(`downloaded ${JSON.stringify(text)}`);
  });

  await step("Alice pastes an image into the composer and Bạch sees it", async () => {
    const bytes = [...png(64, 40)];
    await alice.page.getByPlaceholder("Message Lounge").focus();
    await alice.page.evaluate((data) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(data)], "pasted.png", { type: "image/png" }));
      document.activeElement?.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    }, bytes);
    await bach.page.locator("img.thumb[alt='pasted.png']").waitFor(WAIT);
  });

  await audit(alice, "conversation");
  await audit(bach, "conversation");

  await step("Bạch's socket is cut: an offline banner, and what was sent meanwhile arrives once, in order", async () => {
    bach.cut();
    await bach.page.getByText("Mất kết nối. Đang kết nối lại…").waitFor(WAIT);
    for (const n of [1, 2, 3]) {
      await alice.page.getByPlaceholder("Message Lounge").fill(`while you were away ${n}`);
      await alice.page.keyboard.press("Enter");
      await roomOf(alice, `while you were away ${n}`).waitFor(WAIT);
    }
    // Sending while the socket is down goes over HTTP instead.
    await bach.page.getByPlaceholder("Nhắn vào Lounge").fill("sent while cut off");
    await bach.page.keyboard.press("Enter");
    await roomOf(alice, "sent while cut off").waitFor(WAIT);
    bach.restore();
    await roomOf(bach, "while you were away 3").waitFor({ timeout: 40_000 });
    await bach.page.getByText("Mất kết nối. Đang kết nối lại…").waitFor({ state: "detached", ...WAIT });
    const texts = await bach.page.locator(".events .text").allTextContents();
    const away = texts.filter((t) => t.startsWith("while you were away"));
    if (JSON.stringify(away) !== JSON.stringify(["while you were away 1", "while you were away 2", "while you were away 3"])) {
      throw new Error(`after reconnection: ${JSON.stringify(away)}`);
    }
    if (texts.filter((t) => t === "sent while cut off").length !== 1) throw new Error(`own message: ${JSON.stringify(texts)}`);
  });

  await step("live again after reconnection", async () => {
    await alice.page.getByPlaceholder("Message Lounge").fill("welcome back");
    await alice.page.keyboard.press("Enter");
    await roomOf(bach, "welcome back").waitFor(WAIT);
  });

  await step("Bạch changes his display name and avatar, and Alice sees both", async () => {
    const page = bach.page;
    await page.goto("/#/profile");
    await page.getByLabel("Tên hiển thị").waitFor(WAIT);
    await audit(bach, "profile");
    await page.getByLabel("Tên hiển thị").fill("Bạch Tuyết");
    await page.getByLabel("Chọn ảnh").setInputFiles({ name: "me.png", mimeType: "image/png", buffer: png(96, 96) });
    await page.getByRole("img", { name: "Xem trước ảnh đại diện mới" }).waitFor(WAIT);
    await page.getByRole("button", { name: "Lưu" }).click();
    await page.getByText("Đã lưu.").waitFor(WAIT);
    await alice.page.locator(".events").getByText("Bạch Tuyết", { exact: false }).first().waitFor(WAIT);
    // The new avatar beside his messages, fetched through authenticated media.
    await alice.page.waitForFunction(() => {
      const line = [...document.querySelectorAll(".event.message")].find((l) => l.textContent?.includes("Chào Alice!"));
      const img = line?.querySelector(".sender img.avatar");
      return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0;
    }, null, WAIT);
  });

  await step("Alice's profile and sessions on the desktop", async () => {
    await alice.page.goto("/#/profile");
    await alice.page.getByLabel("Display name").waitFor(WAIT);
    await alice.page.getByText("This session").waitFor(WAIT);
    await audit(alice, "profile");
  });

  await step("Bạch turns the room's notifications off, and the server keeps it", async () => {
    const page = bach.page;
    await page.goto("/#/settings");
    const box = page.getByLabel("Thông báo của Lounge");
    await box.waitFor(WAIT);
    if (!(await box.isChecked())) throw new Error("notifications start on");
    await box.uncheck();
    await page.waitForResponse((r) => r.url().includes("/pushrules/global/room/") && r.request().method() === "PUT", WAIT).catch(() => undefined);
    await page.reload();
    await page.getByLabel("Thông báo của Lounge").waitFor(WAIT);
    await page.waitForFunction(() => {
      const box = [...document.querySelectorAll("label.check")].find((l) => l.textContent?.includes("Lounge"))?.querySelector("input");
      return box instanceof HTMLInputElement && !box.checked;
    }, null, WAIT);
  });

  await step("settings in both languages and both themes", async () => {
    await alice.page.goto("/#/settings");
    await alice.page.getByLabel("Language").waitFor(WAIT);
    await audit(alice, "settings");
    await bach.page.goto("/#/settings");
    await bach.page.getByLabel("Ngôn ngữ").waitFor(WAIT);
    await audit(bach, "settings");
    await alice.page.getByLabel("Language").selectOption("vi");
    await alice.page.getByLabel("Ngôn ngữ").waitFor(WAIT);
    await alice.page.getByLabel("Ngôn ngữ").selectOption("auto");
    await alice.page.getByLabel("Language").waitFor(WAIT);
    const background = () => alice.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await alice.page.getByLabel("Dark").check();
    if ((await background()) !== "rgb(21, 23, 27)") throw new Error(`dark theme: ${await background()}`);
    await audit(alice, "settings-dark");
    await alice.page.getByLabel("Light").check();
    if ((await background()) !== "rgb(255, 255, 255)") throw new Error(`light theme: ${await background()}`);
    await alice.page.getByLabel("Same as the system").check();
  });

  await step("Alice starts a direct chat; Bạch accepts; each sees the other's name and presence", async () => {
    await alice.page.goto("/#/new");
    await alice.page.getByLabel("User ID (@name:server)").fill(`@bach:${serverName}`);
    await alice.page.getByRole("button", { name: "Start", exact: true }).click();
    await alice.page.getByRole("heading", { name: "Bạch Tuyết" }).waitFor(WAIT);
    await bach.page.goto("/#/");
    const invite = bach.page.locator(".invite-row", { hasText: "alice" });
    await invite.getByRole("button", { name: "Đồng ý" }).click();
    await bach.page.getByRole("heading", { name: "alice" }).waitFor(WAIT);
    await bach.page.goto("/#/");
    // The partner's presence on the direct chat's row: both have a socket open, so online.
    await bach.page.locator(".room-row", { hasText: "alice" }).getByRole("img", { name: "đang trực tuyến" }).waitFor(WAIT);
    await alice.page.locator(".room-row", { hasText: "Bạch Tuyết" }).getByRole("img", { name: "online" }).waitFor(WAIT);
  });

  await step("an encrypted room is listed with a lock and says to use an encryption-capable client", async () => {
    const token = await alice.page.evaluate(() => JSON.parse(localStorage.getItem("hearth.session") ?? "{}").accessToken);
    const r = await fetch(`${base.origin}/_matrix/client/v3/createRoom`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "Secrets", initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] }),
    });
    if (!r.ok) throw new Error(`createRoom: ${r.status}`);
    const row = alice.page.locator(".room-row", { hasText: "Secrets" });
    await row.getByRole("img", { name: "Encrypted room" }).waitFor(WAIT);
    await row.click();
    await alice.page.getByText("This room is end-to-end encrypted.", { exact: false }).waitFor(WAIT);
    if (await alice.page.getByPlaceholder("Message Secrets").count()) throw new Error("a composer in an encrypted room");
  });

  await step("a long history pages back as Bạch scrolls up", async () => {
    const token = await alice.page.evaluate(() => JSON.parse(localStorage.getItem("hearth.session") ?? "{}").accessToken);
    await alice.page.goto("/#/");
    const href = await alice.page.locator(".room-row", { hasText: "Lounge" }).getAttribute("href");
    const roomId = decodeURIComponent(href.replace("#/room/", ""));
    for (let i = 1; i <= 70; i++) {
      const r = await fetch(`${base.origin}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/h${i}`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ msgtype: "m.text", body: `history ${i}` }),
      });
      if (!r.ok) throw new Error(`send ${i}: ${r.status}`);
    }
    const page = bach.page;
    await page.goto(`/#/room/${encodeURIComponent(roomId)}`);
    await page.reload();
    await roomOf(bach, "history 70").waitFor(WAIT);
    const first = roomOf(bach, "Hello Bạch!");
    for (let i = 0; i < 20 && !(await first.count()); i++) {
      await page.locator(".timeline").evaluate((el) => {
        el.scrollTop = 0;
        el.dispatchEvent(new Event("scroll"));
      });
      await page.waitForTimeout(300);
    }
    await first.waitFor(WAIT);
    const texts = await page.locator(".events .text").allTextContents();
    const history = texts.filter((t) => t.startsWith("history "));
    const expected = Array.from({ length: 70 }, (_, i) => `history ${i + 1}`);
    if (JSON.stringify(history) !== JSON.stringify(expected)) throw new Error(`history out of order or repeated: ${history.length} lines`);
  });

  await step("where no WebSocket gets through, the app long-polls /sync and still works", async () => {
    const chi = await person("Chi", { viewport: { width: 1024, height: 700 }, locale: "en-GB", noSockets: true });
    others.push(chi);
    await register(chi, "chi", EN);
    await chi.page.getByText("Live updates over long-polling (WebSocket unavailable).").waitFor(WAIT);
    await chi.page.getByRole("button", { name: "New room or chat" }).click();
    await chi.page.getByLabel("Room name").fill("Notes");
    await chi.page.getByRole("button", { name: "Create", exact: true }).click();
    await chi.page.getByRole("heading", { name: "Notes" }).waitFor(WAIT);
    await chi.page.getByPlaceholder("Message Notes").fill("over plain HTTP");
    await chi.page.keyboard.press("Enter");
    // The echo is replaced by the event as the long-poll brings it back.
    await chi.page.locator(".event.message[data-event-id]", { hasText: "over plain HTTP" }).waitFor(WAIT);
    await chi.page.locator(".pending").waitFor({ state: "detached", ...WAIT });
  });

  await step("Chi changes the password, signs out, and signs in with the new one", async () => {
    const chi = others[0];
    const page = chi.page;
    await page.goto("/#/profile");
    await page.getByLabel("Current password").fill("correct horse battery");
    await page.getByLabel("New password").fill("a new horse battery");
    await page.getByRole("button", { name: "Change password" }).click();
    await page.getByText("Password changed.").waitFor(WAIT);
    await page.goto("/#/settings");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in to Hearth" }).waitFor(WAIT);
    await page.getByLabel("Username").fill("chi");
    await page.getByLabel("Password").fill("correct horse battery");
    chi.refusalExpected = true;
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Wrong username or password.").waitFor(WAIT);
    chi.refusalExpected = false;
    await page.getByLabel("Password").fill("a new horse battery");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("navigation").getByText("Notes").waitFor(WAIT);
  });

  await step("no console errors in any browser", async () => {
    const all = [...alice.errors, ...bach.errors, ...others.flatMap((p) => p.errors)];
    if (all.length) throw new Error(all.slice(0, 5).join(" | "));
  });
} finally {
  await browser.close();
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
