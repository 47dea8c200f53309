// Single sign-on in real headless Chromium: the sign-in screen's provider button goes to the
// identity provider (a stand-in on loopback, started by the test) and back, and the app is
// signed in with the login token it is handed, which leaves the address bar; a token in a link
// the tab did not start a sign-in for is ignored.
//
// usage: node e2e/sso.mjs --homeserver http://127.0.0.1:PORT --provider NAME --user-id @u:server

import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values } = parseArgs({
  options: { homeserver: { type: "string" }, provider: { type: "string" }, "user-id": { type: "string" } },
  strict: true,
});
const base = new URL(values.homeserver ?? "");
if (!(base.hostname === "localhost" || /^127\./.test(base.hostname)) || !values.provider || !values["user-id"]) {
  console.error("usage: --homeserver http://127.0.0.1:PORT (loopback only) --provider NAME --user-id @u:server");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = 0;
try {
  const context = await browser.newContext({ baseURL: base.origin, locale: "en-US" });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  // A link carrying a login token this tab did not ask for is not taken (login CSRF).
  let tokenLogins = 0;
  page.on("request", (r) => {
    if (r.method() === "POST" && r.url().endsWith("/_matrix/client/v3/login") && (r.postData() ?? "").includes("m.login.token")) tokenLogins += 1;
  });
  await page.goto("/?loginToken=someone-elses");
  await page.getByRole("link", { name: `Continue with ${values.provider}` }).waitFor({ timeout: 15_000 });
  const forgedIgnored = tokenLogins === 0 && !page.url().includes("loginToken");
  await page.getByRole("link", { name: `Continue with ${values.provider}` }).click();
  await page.getByRole("navigation").waitFor({ timeout: 15_000 });
  await page.getByText(`Welcome, ${values["user-id"]}`).waitFor({ timeout: 15_000 });
  const url = new URL(page.url());
  const checks = [
    ["a token the tab did not ask for is ignored", forgedIgnored],
    ["signed in as the provider's user, with one token login", tokenLogins === 1, `${tokenLogins} token logins`],
    ["the login token is gone from the address", !url.search.includes("loginToken")],
    ["no console errors", errors.length === 0, errors.join(" | ")],
  ];
  for (const [name, ok, detail] of checks) {
    if (!ok) failed += 1;
    console.log(`${ok ? "PASS" : "FAIL"} ${name}${!ok && detail ? `: ${detail}` : ""}`);
  }
} catch (e) {
  failed += 1;
  console.log(`FAIL ${String(e?.message ?? e).split("\n")[0]}`);
} finally {
  await browser.close();
}
console.log(failed === 0 ? "sso passed" : `sso failed (${failed})`);
process.exit(failed === 0 ? 0 : 1);
