// Browser end-to-end test of the demo chat page across a server restart: the
// page reconnects by itself and the conversation goes on.
// Starts and stops its own herald: HERALD_BIN=path/to/herald node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { WAIT, launch, person as open, connected, join, say, message, freePort, startHerald, stopHeralds } from './browser.mjs';

const bin = process.env.HERALD_BIN || '';
// ms a page may take to reconnect: the SDK backs off up to 10 s between tries.
const RECONNECT = 25_000;

let browser;

before(async () => {
  assert.ok(bin, 'set HERALD_BIN to the path of a herald binary (go build -o herald ./cmd/herald); this test starts and restarts it');
  browser = await launch();
});

after(async () => {
  await stopHeralds();
  await browser?.close();
});

// A refused WebSocket connection while the server is down is expected;
// Chromium reports each one on the console as an error.
const refused = /WebSocket connection to .* failed/;

function person(t, base) {
  return open(browser, t, base, { ignore: refused });
}

// count is how many chat messages on page hold text.
function count(page, text) {
  return page.locator('#messages .msg', { hasText: text }).count();
}

// snapshot describes what page shows, for failure messages.
function snapshot(page) {
  return page.evaluate(() => JSON.stringify({
    state: document.querySelector('#state').textContent,
    who: [...document.querySelectorAll('#who li')].map((li) => `${li.dataset.client} ${li.textContent}`),
    messages: [...document.querySelectorAll('#messages li')].map((li) => `${li.className}: ${li.textContent}`),
  }));
}

// myClient is the client id the page lists itself under in #who.
function myClient(page) {
  return page.locator('#who li.you').getAttribute('data-client');
}

test('the chat page reconnects after a server restart and the conversation goes on', { timeout: 90_000 }, async (t) => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server = await startHerald(port);

  const room = 'restart-' + randomBytes(4).toString('hex');
  const [alice, bob] = [await person(t, base), await person(t, base)];
  await join(alice, 'Alice', room);
  await join(bob, 'Bob', room);
  await bob.locator('#who li', { hasText: 'Alice' }).waitFor();
  await alice.locator('#who li', { hasText: 'Bob' }).waitFor();

  const before = 'before the restart ' + randomBytes(3).toString('hex');
  await say(alice, before);
  await message(bob, before);
  await message(alice, before);
  const [aliceBefore, bobBefore] = [await myClient(alice), await myClient(bob)];
  assert.ok(aliceBefore && bobBefore, 'each page lists itself in #who');

  // The server goes away: both pages notice.
  const exit = await server.stop();
  assert.ok(!exit.error, `herald could not be stopped: ${exit.error}`);
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => document.querySelector('#state').textContent !== 'connected', null, { timeout: WAIT });
    assert.match(await page.textContent('#state'), /^(connecting|disconnected)$/);
  }

  // It comes back on the same port: both pages reconnect by themselves.
  server = await startHerald(port);
  await Promise.all([connected(alice, RECONNECT), connected(bob, RECONNECT)]);

  // Each page lists itself under its new client id.
  await alice.waitForFunction((old) => {
    const li = document.querySelector('#who li.you');
    return li && li.dataset.client !== old;
  }, aliceBefore, { timeout: WAIT });
  const aliceAfter = await myClient(alice);

  // Bob's list has Alice again, by name, under her new id, and no one under
  // the ids of the lost connections.
  await bob.locator(`#who li[data-client="${aliceAfter}"]`, { hasText: 'Alice' }).waitFor().catch(async (e) => {
    e.message += `\nAlice is ${aliceAfter} (was ${aliceBefore}); Bob's page: ${await snapshot(bob)}`;
    throw e;
  });
  await bob.waitForFunction((old) => {
    const ids = [...document.querySelectorAll('#who li')].map((li) => li.dataset.client);
    return ids.length === 2 && !ids.some((id) => old.includes(id));
  }, [aliceBefore, bobBefore], { timeout: WAIT });

  // The conversation goes on.
  const afterText = 'after the restart ' + randomBytes(3).toString('hex');
  await say(alice, afterText);
  await message(bob, afterText);
  await message(alice, afterText);
  const reply = 'Bob still here ' + randomBytes(3).toString('hex');
  await say(bob, reply);
  await message(alice, reply);
  await message(bob, reply);

  // Nothing is shown twice, and what came before the restart stays.
  for (const page of [alice, bob]) {
    for (const text of [before, afterText, reply]) {
      assert.equal(await count(page, text), 1, `messages holding "${text}" on ${page === alice ? 'Alice' : 'Bob'}'s page`);
    }
  }

  const exit2 = await server.stop();
  assert.ok(!exit2.error, `herald could not be stopped: ${exit2.error}`);
});

// The Redis of the machine keeps history across the restart.
const redis = 'redis://' + (process.env.HERALD_TEST_REDIS || '127.0.0.1:6379') + '/0';

test('on Redis, a page receives every message once and in order while the server is killed and restarted under a publishing page', { timeout: 90_000 }, async (t) => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server = await startHerald(port, ['--broker', redis]);
  const channel = 'e2e-restart-' + randomBytes(4).toString('hex');
  const N = 60;
  const [publisher, receiver] = [await person(t, base), await person(t, base)];

  // The receiver collects every message's data with herald.js.
  await receiver.evaluate(async (channel) => {
    const { Herald } = await import('/herald.js');
    window.got = [];
    const h = new Herald();
    await new Promise((resolve) => {
      const sub = h.subscribe(channel, (data) => window.got.push(data));
      sub.on('subscribed', resolve);
    });
  }, channel);

  // The publisher publishes 1..N. A publish whose ack was lost with the
  // connection rejects with unavailable: it is published again only when
  // history, read once the page is back, does not have it.
  await publisher.evaluate(({ channel, N }) => {
    window.sent = 0;
    window.published = (async () => {
      const { Herald } = await import('/herald.js');
      const h = new Herald();
      const sub = h.subscribe(channel, () => {});
      for (let i = 1; i <= N; i++) {
        for (;;) {
          try {
            await h.publish(channel, i);
            break;
          } catch (e) {
            if (e.code !== 'unavailable') throw e;
            const last = await sub.history({ limit: 1 });
            if (last.length && last[0].data === i) break;
          }
        }
        window.sent = i;
        await new Promise((r) => setTimeout(r, 20));
      }
      return 'done';
    })();
  }, { channel, N });

  // Mid-stream, the server dies without a word and comes back.
  await publisher.waitForFunction((n) => window.sent >= n, N / 3, { timeout: WAIT });
  const exit = await server.stop('SIGKILL');
  assert.ok(!exit.error, `herald could not be killed: ${exit.error}`);
  server = await startHerald(port, ['--broker', redis]);

  assert.equal(await publisher.evaluate(() => window.published), 'done');
  await receiver.waitForFunction((n) => window.got.length >= n, N, { timeout: RECONNECT }).catch(async (e) => {
    e.message += `\nreceived: ${JSON.stringify(await receiver.evaluate(() => window.got))}`;
    throw e;
  });
  const got = await receiver.evaluate(() => window.got);
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1), 'the receiver got each message once, in order');

  const exit2 = await server.stop();
  assert.ok(!exit2.error, `herald could not be stopped: ${exit2.error}`);
});
