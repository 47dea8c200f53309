// Cold load of the app from a running hearth: a fresh browser context (empty cache) per run,
// timed from the start of navigation to the sign-in form's first paint; prints JSON with the
// medians of the runs and the bytes of script fetched. Not a test: numbers for the README.
//
// usage: node e2e/cold-load.mjs --homeserver http://127.0.0.1:PORT [--runs 7]

import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values } = parseArgs({ options: { homeserver: { type: "string" }, runs: { type: "string" } }, strict: true });
const base = new URL(values.homeserver ?? "");
if (!(base.hostname === "localhost" || /^127\./.test(base.hostname))) {
  console.error("usage: --homeserver http://127.0.0.1:PORT (loopback only)");
  process.exit(2);
}
const runs = Math.min(50, Number(values.runs ?? 7));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const times = [];
let script = null;
try {
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.goto(base.origin);
    await page.getByRole("button", { name: "Sign in" }).waitFor({ state: "visible", timeout: 30_000 });
    // Measured inside the page from the start of navigation: the first paint of content (the
    // sign-in form, which React renders at start) and the navigation's own milestones.
    times.push(
      await page.evaluate(() => {
        const nav = performance.getEntriesByType("navigation")[0];
        const fcp = performance.getEntriesByName("first-contentful-paint")[0];
        return { fcp: Math.round(fcp?.startTime ?? -1), domInteractive: Math.round(nav.domInteractive), load: Math.round(nav.loadEventEnd) };
      }),
    );
    script ??= await page.evaluate(() =>
      performance
        .getEntriesByType("resource")
        .filter((r) => r.initiatorType === "script" || r.name.endsWith(".js"))
        .map((r) => ({ name: new URL(r.name).pathname, transferred: r.transferSize, decoded: r.decodedBodySize })),
    );
    await context.close();
  }
} finally {
  await browser.close();
}
const median = (key) => times.map((t) => t[key]).sort((a, b) => a - b)[Math.floor(times.length / 2)];
console.log(
  JSON.stringify({ runs, median_ms: { first_contentful_paint: median("fcp"), dom_interactive: median("domInteractive"), load: median("load") }, script }, null, 2),
);
