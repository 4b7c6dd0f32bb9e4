// Browser end-to-end test of herald.js's delivery options in Chromium: a
// filtered subscription gets only the messages its filter matches, a
// delta subscription rebuilds a 4 KB document from Fossil deltas (the
// frames on the wire are deltas; the handler sees whole data), and in a
// namespace with receipts herald.js acknowledges what its handler took.
// Starts its own herald: HERALD_BIN=… node --test e2e/delivery.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAIT, launch, newPage, freePort, startHerald, stopHeralds, apiPublish } from './browser.mjs';

let browser;
let base;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-delivery-'));
  const config = join(dir, 'herald.yaml');
  writeFileSync(config, 'namespaces:\n  orders:\n    receipts: true\n');
  const port = await freePort();
  await startHerald(port, ['--config', config, '--publish-rate', '0']);
  base = `http://127.0.0.1:${port}`;
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await stopHeralds();
});

const publish = (channel, data, extra) => apiPublish(base, channel, data, extra);

// open loads a page of herald's, subscribes herald.js there to channel
// with opts, and resolves once it is subscribed; received() returns what
// its handler got so far.
async function open(t, channel, opts) {
  const page = await newPage(browser, t, { ignore: /favicon\.ico/ }); // a script URL has no icon
  const frames = [];
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));
  await page.goto(base + '/herald.js');
  await page.evaluate(
    ([channel, opts]) =>
      new Promise((resolve) => {
        window.received = [];
        import('/herald.js').then(({ Herald }) => {
          const h = new Herald();
          h.subscribe(channel, (data) => window.received.push(data), opts).on('subscribed', resolve);
        });
      }),
    [channel, opts],
  );
  return {
    frames,
    received: () => page.evaluate(() => window.received),
    waitFor: (n) => page.waitForFunction((n) => window.received.length >= n, n),
  };
}

test('a filtered subscription gets only what its filter matches', async (t) => {
  const sub = await open(t, 'prices', { filter: { tag: 'sym', in: ['AAPL', 'MSFT'] } });
  for (const [n, sym] of [[1, 'AAPL'], [2, 'TSLA'], [3, 'MSFT'], [4, 'IBM'], [5, 'AAPL']]) {
    await publish('prices', { n }, { tags: { sym } });
  }
  await sub.waitFor(3);
  await publish('prices', { n: 6 }, { tags: { sym: 'MSFT' } });
  await sub.waitFor(4);
  assert.deepEqual((await sub.received()).map((d) => d.n), [1, 3, 5, 6]);
});

test('a delta subscription rebuilds every version of a document', async (t) => {
  const sub = await open(t, 'doc', { delta: 'fossil' });
  const doc = (v) => {
    const d = {};
    for (let i = 0; i < 64; i++) d[`field${i}`] = String.fromCharCode(97 + (i % 26)).repeat(52);
    d[`field${v % 64}`] = `changed in version ${v} — é`;
    d.version = v;
    return d;
  };
  for (let v = 0; v < 10; v++) await publish('doc', doc(v));
  await sub.waitFor(10);
  assert.deepEqual(await sub.received(), Array.from({ length: 10 }, (_, v) => doc(v)));
  const deltas = sub.frames.filter((f) => f.includes('"delta":true')).length;
  assert.ok(deltas >= 9, `${deltas} of 10 pushes came as deltas, want 9`);
});

test('herald.js acknowledges what its handler took, where receipts are on', async (t) => {
  const sub = await open(t, 'orders:1', {});
  const offset = await publish('orders:1', { item: 'book' });
  await sub.waitFor(1);
  const deadline = Date.now() + WAIT;
  for (;;) {
    const res = await fetch(`${base}/api/channels/orders:1/receipts?offset=${offset}`);
    assert.equal(res.status, 200);
    const r = await res.json();
    if (r.acked.length === 1 && r.pending.length === 0) break;
    assert.ok(Date.now() < deadline, `receipts never showed the ack: ${JSON.stringify(r)}`);
    await new Promise((resolve) => setTimeout(resolve, 50)); // poll
  }
  assert.ok(sub.frames.some((f) => f.includes('"receipts":true')), 'the subscribe reply did not say receipts');
});
