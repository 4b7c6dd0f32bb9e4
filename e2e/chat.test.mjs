// Browser end-to-end test of the demo chat page: two people in one room.
// Needs a running herald: HERALD_URL=http://127.0.0.1:8080 node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const base = (process.env.HERALD_URL || '').replace(/\/+$/, '');
const WAIT = 10_000; // ms any one condition may take

let browser;

before(async () => {
  assert.ok(base, 'set HERALD_URL to the base URL of a running herald, e.g. http://127.0.0.1:8080');
  browser = await chromium.launch({
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
    ],
  });
});

after(async () => {
  await browser?.close();
});

// person opens the chat page in a browser context of its own, so that each
// has its own storage, and fails the test on any error in the page.
async function person(t) {
  const context = await browser.newContext({ viewport: { width: 390, height: 800 } });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text() + ' ' + m.location().url));
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));
  await page.goto(base + '/');
  await page.locator('#state', { hasText: /^connected$/ }).waitFor();
  return page;
}

async function join(page, name, room) {
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  // It is in the room once it sees itself there.
  await page.locator('#who li', { hasText: name }).waitFor();
}

async function say(page, text, { enter = false } = {}) {
  await page.fill('#text', text);
  if (enter) await page.press('#text', 'Enter');
  else await page.click('#send');
}

// message waits for the chat message holding text on page and returns it.
async function message(page, text) {
  const msg = page.locator('#messages .msg', { hasText: text });
  await msg.waitFor();
  return msg;
}

test('two people chat in a room', { timeout: 60_000 }, async (t) => {
  const room = 'e2e-' + randomBytes(4).toString('hex');
  const [alice, bob] = [await person(t), await person(t)];

  await join(alice, 'Alice', room);
  await join(bob, 'Bob', room);

  // Each sees the other by name.
  await bob.locator('#who li', { hasText: 'Alice' }).waitFor();
  await alice.locator('#who li', { hasText: 'Bob' }).waitFor();
  assert.equal(await bob.locator('#who li').count(), 2);

  const hello = 'hello from Alice ' + randomBytes(3).toString('hex');
  await say(alice, hello, { enter: true });
  const atBob = await message(bob, hello);
  assert.equal(await atBob.locator('.from').textContent(), 'Alice');
  assert.match(await atBob.locator('time').textContent(), /\d/);
  await message(alice, hello); // the sender sees it too
  assert.equal(await alice.inputValue('#text'), '');

  const reply = 'hi Alice, Bob here ' + randomBytes(3).toString('hex');
  await say(bob, reply);
  const atAlice = await message(alice, reply);
  assert.equal(await atAlice.locator('.from').textContent(), 'Bob');

  // Hello messages are system lines, not chat messages.
  assert.equal(await bob.locator('#messages .msg').count(), 2);
  await bob.locator('#messages .sys', { hasText: 'Alice' }).first().waitFor();

  // When Bob leaves, Alice's list drops him.
  await bob.context().close();
  await alice.locator('#who li', { hasText: 'Bob' }).waitFor({ state: 'detached' });
});
