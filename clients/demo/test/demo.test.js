// The chat demo in a real Chromium (Debian's, driven by playwright-core) against a real
// herald with HERALD_DEMO=1: two users chat, see each other typing and reading, live through
// a server restart with nothing lost or doubled. Screenshots go to test-output/.
//
// The herald is started with clients/js/test/herald.ts (the JS client's own test harness),
// compiled here with esbuild so that this package needs nothing of clients/js installed.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

import { buildSync } from "esbuild";
import { chromium } from "playwright-core";

const demo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const root = path.resolve(demo, "../..");
const output = path.join(demo, "test-output");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

process.env.HERALD_BIN ??= path.join(root, "target/debug/herald");
const scratch = mkdtempSync(path.join(tmpdir(), "demo-herald-test-"));
buildSync({
  entryPoints: [path.join(root, "clients/js/test/herald.ts")],
  outfile: path.join(scratch, "herald.js"),
  bundle: true,
  platform: "node",
  format: "esm",
  logLevel: "warning",
});
const { Herald } = await import(pathToFileURL(path.join(scratch, "herald.js")).href);

let browser;
const servers = [];

before(async () => {
  mkdirSync(output, { recursive: true });
  // Playwright makes each browser a fresh user-data-dir of its own and removes it after.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
});

after(async () => {
  await browser?.close();
  for (const herald of servers) await herald.stop();
  rmSync(scratch, { recursive: true, force: true });
});

async function startHerald(env) {
  const herald = await Herald.start(env);
  servers.push(herald);
  return herald;
}

/** A page signed in as demo user `uid`, waiting until the demo group is open. */
async function signIn(herald, uid) {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.errors = errors;
  await page.goto(`${herald.url}/demo/?uid=${uid}`);
  await page.locator("#groups li", { hasText: "demo" }).waitFor();
  return page;
}

/** The messages the page shows: [msgid, text], in order, and the ones still pending. */
async function rendered(page) {
  return page.evaluate(() => ({
    shown: [...document.querySelectorAll("#messages li[data-msgid]")].map((li) => [
      Number(li.dataset.msgid),
      li.querySelector(".text").textContent,
    ]),
    pending: document.querySelectorAll("#messages li.pending").length,
  }));
}

function demoToken(herald, body) {
  return fetch(`${herald.url}/demo/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function send(page, text) {
  await page.locator("#text").fill(text);
  await page.locator("#text").press("Enter");
}

test("the committed herald-client.js is built from clients/js as it is now", () => {
  const fresh = path.join(scratch, "herald-client.js");
  execFileSync("sh", [path.join(demo, "build.sh"), fresh], { stdio: "inherit" });
  assert.equal(
    readFileSync(fresh, "utf8"),
    readFileSync(path.join(demo, "herald-client.js"), "utf8"),
    "clients/demo/herald-client.js is stale: run sh clients/demo/build.sh and commit it",
  );
});

test("without HERALD_DEMO there is no demo: /demo/ and its token route are 404", async () => {
  const herald = await startHerald({});
  assert.equal((await fetch(`${herald.url}/demo/`)).status, 404);
  assert.equal((await fetch(`${herald.url}/demo/demo.js`)).status, 404);
  assert.equal((await demoToken(herald, { uid: 1 })).status, 404);
  await herald.kill();
});

test("two users chat in Chromium, see typing and read marks, and live through a restart", async () => {
  const herald = await startHerald({ HERALD_DEMO: "1" });
  assert.equal((await demoToken(herald, { uid: 9 })).status, 400); // demo users are 1–4

  const ann = await signIn(herald, 1);
  const bob = await signIn(herald, 2);

  // Presence: each sees the other online.
  await ann.locator('#members li.online[data-uid="2"]').waitFor();
  await bob.locator('#members li.online[data-uid="1"]').waitFor();
  // cleo has never come: offline.
  assert.equal(await ann.locator('#members li[data-uid="3"]').count(), 1);
  assert.equal(await ann.locator('#members li.online[data-uid="3"]').count(), 0);

  // Typing: ann types, bob sees it; ann sends, the indicator goes.
  await ann.locator("#text").pressSequentially("hello bob", { delay: 20 });
  await bob.locator("#typing", { hasText: "ann is typing" }).waitFor();
  await ann.locator("#text").press("Enter");
  await bob.locator("#messages li", { hasText: "hello bob" }).waitFor();
  await bob.locator("#typing", { hasText: /^$/ }).waitFor();
  // Sent: ann's copy shows ✓ (pending … replaced).
  await ann.locator("#messages li.mine[data-msgid] .state", { hasText: "✓" }).first().waitFor();

  await send(bob, "hi ann");
  await ann.locator("#messages li", { hasText: "hi ann" }).waitFor();

  // Read marks: each sees the other read their message (reads frames, every 500 ms).
  await ann.locator("#messages li", { hasText: "hello bob" }).waitFor();
  await ann.locator("#messages .readers", { hasText: "read by bob" }).waitFor();
  await bob.locator("#messages .readers", { hasText: "read by ann" }).waitFor();

  for (let i = 1; i <= 3; i++) {
    await send(ann, `ann ${i}`);
    await send(bob, `bob ${i}`);
  }
  await ann.locator("#messages li[data-msgid]", { hasText: "bob 3" }).waitFor();
  await bob.locator("#messages li[data-msgid]", { hasText: "ann 3" }).waitFor();

  // The server goes down (kill -9): both show the banner; ann writes meanwhile.
  await herald.kill();
  await ann.locator("#banner").waitFor({ state: "visible" });
  await bob.locator("#banner").waitFor({ state: "visible" });
  await send(ann, "while down");
  await ann.locator("#messages li.pending", { hasText: "while down" }).waitFor();
  await ann.screenshot({ path: path.join(output, "ann-reconnecting.png") });

  // Back on the same port and database: banners go, the pending send is stored once.
  await herald.restart();
  await ann.locator("#banner").waitFor({ state: "hidden", timeout: 20_000 });
  await bob.locator("#banner").waitFor({ state: "hidden", timeout: 20_000 });
  await bob.locator("#messages li[data-msgid]", { hasText: "while down" }).waitFor();
  await send(bob, "after restart");
  await ann.locator("#messages li[data-msgid]", { hasText: "after restart" }).waitFor();
  await ann.locator("#messages li.pending").waitFor({ state: "detached" });

  // Nothing lost or doubled: both pages show exactly the stored messages, in order.
  const { gid } = await (await demoToken(herald, { uid: 1 })).json();
  assert.equal(gid, 1_000_000);
  const stored = (await herald.messages(1, gid)).map((m) => [m.msgid, m.body.text]);
  assert.equal(stored.length, 10);
  assert.deepEqual(await rendered(ann), { shown: stored, pending: 0 });
  assert.deepEqual(await rendered(bob), { shown: stored, pending: 0 });

  // Enough history for more than a page (30): bob sends 40 more through the page's client.
  await bob.evaluate(async (gid) => {
    for (let i = 1; i <= 40; i++) await window.heraldClient.send(gid, { text: `more ${i}` });
  }, gid);
  await ann.locator("#messages li[data-msgid]", { hasText: "more 40" }).waitFor();
  await new Promise((resolve) => setTimeout(resolve, 1500)); // ann's acks written (500 ms)
  const all = (await herald.messages(1, gid)).map((m) => [m.msgid, m.body.text]);
  assert.equal(all.length, 50);
  assert.deepEqual(await rendered(bob), { shown: all, pending: 0 });

  // A reload starts a new client at the server's last_ack: one page of older history is
  // pulled, and scrolling up pulls the rest.
  await ann.reload();
  await ann.locator("#messages li[data-msgid]", { hasText: "more 40" }).waitFor();
  await ann.locator("#messages li.older").waitFor();
  const firstPage = (await rendered(ann)).shown;
  assert.ok(firstPage.length < all.length, `${firstPage.length} shown after the reload`);
  assert.deepEqual(firstPage, all.slice(-firstPage.length));
  for (let i = 0; i < 10 && (await ann.locator("#messages li.older").count()) > 0; i++) {
    await ann.locator("#messages").evaluate((pane) => (pane.scrollTop = 0));
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  await ann.locator("#messages li[data-msgid]", { hasText: "hello bob" }).waitFor();
  assert.deepEqual(await rendered(ann), { shown: all, pending: 0 });
  await bob.locator('#members li.online[data-uid="1"]').waitFor();
  // Unread counts: bob has read everything; none left in the group list.
  assert.equal(await bob.locator("#groups li .unread").textContent(), "");
  // Read marks come back after the reload too (GET /v1/groups/{gid}/reads, then reads frames).
  await ann.locator("#messages li[data-msgid]", { hasText: "more 40" }).scrollIntoViewIfNeeded();
  await ann.locator("#messages .readers", { hasText: "read by bob" }).waitFor();

  // Bob takes his last message back: ann's page shows it recalled, in its place.
  await bob.evaluate(async (gid) => window.heraldClient.recall(gid, 50), gid);
  await ann.locator('#messages li[data-msgid="50"] .tombstone', { hasText: "message recalled" }).waitFor();
  assert.deepEqual((await rendered(ann)).shown.at(-1), [50, "message recalled"]);

  // Bob types: ann sees it in the screenshot.
  await bob.locator("#text").pressSequentially("one more thing", { delay: 20 });
  await ann.locator("#typing", { hasText: "bob is typing" }).waitFor();
  await ann.screenshot({ path: path.join(output, "ann.png") });
  await bob.screenshot({ path: path.join(output, "bob.png") });
  assert.deepEqual(ann.errors, []);
  assert.deepEqual(bob.errors, []);
});
