// Shared parts of the browser end-to-end tests: launching Chromium,
// driving the demo chat page, and running herald binaries.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const WAIT = 10_000; // ms any one condition may take

// launch starts headless Chromium (Debian's, or $CHROMIUM), with extra
// command-line switches if given.
export function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: false, // the args below ask for the new headless mode
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extra,
    ],
  });
}

// newPage opens a page in a browser context of its own (its own storage,
// closed when t ends) and fails the test on any error in the page except
// console errors matching ignore (their text and URL).
export async function newPage(browser, t, { ignore = null, viewport = null } = {}) {
  const context = await browser.newContext(viewport ? { viewport } : {});
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    const error = m.text() + ' ' + m.location().url;
    if (m.type() === 'error' && !(ignore && ignore.test(error))) errors.push(error);
  });
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));
  return page;
}

// person opens the chat page at base in a page of its own (newPage) and
// waits until it is connected.
export async function person(browser, t, base, { ignore = null } = {}) {
  const page = await newPage(browser, t, { ignore, viewport: { width: 390, height: 800 } });
  await page.goto(base + '/');
  await connected(page, WAIT);
  return page;
}

// connected waits until the page shows it is connected.
export function connected(page, timeout = WAIT) {
  return page.locator('#state', { hasText: /^connected$/ }).waitFor({ timeout });
}

// join enters a room; the page is in once it sees itself there.
export async function join(page, name, room) {
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await page.locator('#who li', { hasText: name }).waitFor();
}

// say sends text, with the button or with Enter.
export async function say(page, text, { enter = false } = {}) {
  await page.fill('#text', text);
  if (enter) await page.press('#text', 'Enter');
  else await page.click('#send');
}

// message waits for the chat message holding text on page and returns it.
export async function message(page, text) {
  const msg = page.locator('#messages .msg', { hasText: text });
  await msg.waitFor();
  return msg;
}

// apiPublish publishes data to channel with the server API at base
// (loopback callers need no key), with the body's extra fields (tags,
// key, event), fails the test unless it answers 200 and resolves with the
// message's offset.
export async function apiPublish(base, channel, data, extra = {}) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data, ...extra }),
  });
  const body = await res.text();
  assert.equal(res.status, 200, `publish: ${res.status} ${body}`);
  return JSON.parse(body).offset;
}

// subscribe opens a page in context with one herald.js client subscribed to
// each of channels (a name given twice gets two clients) and resolves once
// all are subscribed.
export async function subscribe(context, base, channels) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(base + '/herald.js');
  await page.evaluate(async (channels) => {
    const { Herald } = await import('/herald.js');
    await Promise.all(
      channels.map((channel) => new Promise((resolve) => new Herald().subscribe(channel, () => {}).on('subscribed', resolve))),
    );
  }, channels);
  return page;
}

// freePort asks the system for a free loopback port.
export async function freePort() {
  const srv = createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

const heralds = new Set(); // running herald children, stopped by stopHeralds

// startHerald runs `herald serve` ($HERALD_BIN) on port with args and
// resolves once /healthz answers 200. stop(signal) sends SIGTERM (or
// signal) and resolves when the process is gone.
export async function startHerald(port, args = []) {
  const bin = process.env.HERALD_BIN;
  assert.ok(bin, 'set HERALD_BIN to the path of a herald binary (go build -o herald ./cmd/herald)');
  const child = spawn(bin, ['serve', '--addr', `127.0.0.1:${port}`, '--log-level', 'warn', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (b) => (output += b));
  child.stderr.on('data', (b) => (output += b));
  let exited = null; // {code, signal} once the process is gone
  const gone = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.once('error', (err) => {
      exited = { error: err };
      resolve(exited);
    });
  });
  const server = {
    child,
    gone,
    get output() {
      return output;
    },
    async stop(signal = 'SIGTERM') {
      if (!exited) child.kill(signal);
      const res = await gone;
      heralds.delete(server);
      return res;
    },
  };
  heralds.add(server);

  const url = `http://127.0.0.1:${port}/healthz`;
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (exited) {
      heralds.delete(server);
      assert.fail(`herald exited before it was healthy (${JSON.stringify(exited)}):\n${output}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      assert.fail(`herald on port ${port} did not answer 200 on /healthz within ${WAIT} ms:\n${output}`);
    }
    await delay(25); // poll interval
  }
}

// stopHeralds stops every herald startHerald started that is still running.
export function stopHeralds() {
  return Promise.all([...heralds].map((s) => s.stop()));
}
