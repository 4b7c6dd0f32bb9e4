// End-to-end test of /sse with an independent client that follows the
// WHATWG EventSource rules (the `eventsource` package), against a running
// herald (HERALD_URL). Messages are published with POST /api/publish, which
// loopback callers may use without a key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventSource } from 'eventsource';

const base = process.env.HERALD_URL || '';
const WAIT = 15_000;

function channel(name) {
  return `e2e:${name}-${randomBytes(4).toString('hex')}`;
}

async function publish(ch, data, event) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(event ? { channel: ch, data, event } : { channel: ch, data }),
  });
  const body = await res.text();
  assert.equal(res.status, 200, `publish: ${res.status} ${body}`);
  const { offset } = JSON.parse(body);
  assert.ok(offset, 'publish answers an offset');
}

// events collects what an EventSource dispatches, and lets a test wait for
// a number of them.
function collect(es, names = ['message']) {
  const got = [];
  const waiters = [];
  for (const name of names) {
    es.addEventListener(name, (e) => {
      got.push({ type: e.type, data: e.data, id: e.lastEventId });
      for (const w of [...waiters]) w();
    });
  }
  return {
    got,
    until(n) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`got ${got.length} events, want ${n}: ${JSON.stringify(got)}`)), WAIT);
        const check = () => {
          if (got.length >= n) {
            clearTimeout(timer);
            resolve(got.slice(0, n));
          }
        };
        waiters.push(check);
        check();
      });
    },
  };
}

function opened(es) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the stream did not open')), WAIT);
    es.addEventListener('open', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

test('multi-line data arrives intact, with event names and ids', { timeout: 2 * WAIT }, async () => {
  assert.ok(base, 'set HERALD_URL to a running herald');
  const ch = channel('lines');
  const es = new EventSource(`${base}/sse?channel=${encodeURIComponent(ch)}`);
  try {
    const events = collect(es, ['message', 'note']);
    await opened(es);
    await publish(ch, 'line one\nline two\r\nline three\r\n\nlast');
    await publish(ch, { text: 'hi\nthere', n: [1, 2] }, 'note');
    await publish(ch, '');
    const got = await events.until(3);
    assert.deepEqual(got.map((e) => [e.type, e.data]), [
      ['message', 'line one\nline two\nline three\n\nlast'],
      ['note', '{"text":"hi\\nthere","n":[1,2]}'],
      ['message', ''],
    ]);
    for (const e of got) assert.match(e.id, /^[A-Za-z0-9_-]+$/, 'every message has a URL-safe id');
    assert.equal(new Set(got.map((e) => e.id)).size, 3, 'every message has its own id');
  } finally {
    es.close();
  }
});

test('a dropped stream reconnects with Last-Event-ID and resumes without gap or duplicate', { timeout: 4 * WAIT }, async () => {
  assert.ok(base, 'set HERALD_URL to a running herald');
  const a = channel('resume-a');
  const b = channel('resume-b');
  // The first two connections are cut after a few messages, as a proxy or
  // a flaky network would; EventSource reconnects by itself.
  let connections = 0;
  const lastIds = [];
  const cutting = async (url, init) => {
    const n = ++connections;
    lastIds.push(new Headers(init?.headers).get('last-event-id'));
    const res = await fetch(url, init);
    if (n > 2 || !res.body) return res;
    const reader = res.body.getReader();
    let ids = 0;
    const body = new ReadableStream({
      async pull(ctrl) {
        const { done, value } = await reader.read();
        if (done) return ctrl.close();
        ctrl.enqueue(value);
        ids += (new TextDecoder().decode(value).match(/^id:/gm) || []).length;
        if (ids >= 7) {
          await reader.cancel();
          ctrl.close();
        }
      },
      cancel() { return reader.cancel(); },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  const es = new EventSource(`${base}/sse?channel=${encodeURIComponent(a)}&channel=${encodeURIComponent(b)}`, { fetch: cutting });
  try {
    const events = collect(es);
    await opened(es);
    const total = 40;
    for (let i = 1; i <= total; i++) {
      await publish(i % 2 ? a : b, { n: i });
      await new Promise((r) => setTimeout(r, 60));
    }
    const got = await events.until(total);
    const byChannel = { a: [], b: [] };
    for (const e of got) {
      const { n } = JSON.parse(e.data);
      byChannel[n % 2 ? 'a' : 'b'].push(n);
    }
    const want = (odd) => Array.from({ length: total }, (_, i) => i + 1).filter((n) => (n % 2 === 1) === odd);
    assert.deepEqual(byChannel.a, want(true), 'channel a: every message once, in order');
    assert.deepEqual(byChannel.b, want(false), 'channel b: every message once, in order');
    assert.ok(connections >= 3, `the stream was resumed (${connections} connections)`);
    assert.equal(lastIds[0], null, 'the first connection has no Last-Event-ID');
    assert.ok(lastIds[1] && lastIds[2], 'reconnects send Last-Event-ID');
    // Nothing more arrives: no duplicate after the last message.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(events.got.length, total);
  } finally {
    es.close();
  }
});
