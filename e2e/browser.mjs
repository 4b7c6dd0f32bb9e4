// Shared parts of the browser end-to-end tests: launching Chromium and
// driving the demo chat page.
import assert from 'node:assert/strict';
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
// console errors matching ignore.
export async function newPage(browser, t, { ignore = null, viewport = null } = {}) {
  const context = await browser.newContext(viewport ? { viewport } : {});
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !(ignore && ignore.test(m.text()))) errors.push(m.text() + ' ' + m.location().url);
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
// (loopback callers need no key) and fails the test unless it answers 200.
export async function apiPublish(base, channel, data) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(res.status, 200, `publish: ${res.status} ${await res.text()}`);
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
