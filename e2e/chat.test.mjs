// Browser end-to-end test of the demo chat page: two people in one room.
// Needs a running herald: HERALD_URL=http://127.0.0.1:8080 node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { launch, person as open, join, say, message } from './browser.mjs';

const base = (process.env.HERALD_URL || '').replace(/\/+$/, '');
let browser;

before(async () => {
  assert.ok(base, 'set HERALD_URL to the base URL of a running herald, e.g. http://127.0.0.1:8080');
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('two people chat in a room', { timeout: 60_000 }, async (t) => {
  const room = 'e2e-' + randomBytes(4).toString('hex');
  const [alice, bob] = [await open(browser, t, base), await open(browser, t, base)];

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
