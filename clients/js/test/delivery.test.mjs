// herald.js and the delivery options of protocol v1.1: tags and keys on
// publish, filters, Fossil deltas and receipts (acks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { applyDelta } from '../herald.js';
import { waitFor, command, connected } from './fake.mjs';

// The vectors are made by the Go library the server uses
// (github.com/centrifugal/fdelta): go test -run TestFossilVectors -update ./client/
const vectors = JSON.parse(readFileSync(new URL('./testdata/fossil.json', import.meta.url), 'utf8'));
const bytes = (b64) => new Uint8Array(Buffer.from(b64, 'base64'));
const utf8 = (s) => new TextEncoder().encode(s);

test('applyDelta rebuilds every vector byte for byte', () => {
  assert.ok(vectors.good.length >= 10);
  for (const v of vectors.good) {
    const got = applyDelta(bytes(v.old), bytes(v.delta));
    assert.ok(got instanceof Uint8Array, v.name);
    assert.deepEqual(Buffer.from(got), Buffer.from(bytes(v.new)), v.name);
  }
});

test('a delta that is valid UTF-8 applies from the JSON string a push carries', () => {
  const carried = vectors.good.filter((v) => v.utf8);
  assert.ok(carried.length >= 8);
  for (const v of carried) {
    const text = JSON.parse(JSON.stringify(Buffer.from(v.delta, 'base64').toString('utf8')));
    assert.deepEqual(Buffer.from(applyDelta(bytes(v.old), utf8(text))), Buffer.from(bytes(v.new)), v.name);
  }
});

test('applyDelta rejects every corrupt vector', () => {
  assert.ok(vectors.corrupt.length >= 10);
  for (const v of vectors.corrupt) {
    assert.throws(() => applyDelta(bytes(v.old), bytes(v.delta)), (e) => e.code === 'bad_delta', v.name);
  }
  // A number of more than 32 bits wraps, as in fossil: this one declares
  // a size of 1, not 2^36 + 1.
  assert.deepEqual([...applyDelta(new Uint8Array(), utf8('1000001\n1:x' + int(0x78000000) + ';'))], [120]);
});

// DIGITS and delta make Fossil deltas by hand: a copy of what old and new
// share at both ends, and an insert of the rest.
const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
const int = (n) => (n < 64 ? DIGITS[n] : int(Math.floor(n / 64)) + DIGITS[n % 64]);
function delta(oldText, newText) {
  const [o, n] = [utf8(oldText), utf8(newText)];
  let pre = 0;
  while (pre < o.length && pre < n.length && o[pre] === n[pre]) pre++;
  let suf = 0;
  while (suf < o.length - pre && suf < n.length - pre && o[o.length - 1 - suf] === n[n.length - 1 - suf]) suf++;
  let sum = 0;
  for (let j = 0; j < n.length; j += 4) sum = (sum + (((n[j] << 24) | (n[j + 1] << 16) | (n[j + 2] << 8) | n[j + 3]) >>> 0)) >>> 0;
  const mid = new TextDecoder().decode(n.subarray(pre, n.length - suf));
  const parts = [int(n.length) + '\n'];
  if (pre) parts.push(int(pre) + '@0,');
  if (n.length - pre - suf) parts.push(int(n.length - pre - suf) + ':' + mid);
  if (suf) parts.push(int(suf) + '@' + int(o.length - suf) + ',');
  return parts.join('') + int(sum) + ';';
}

// frame sends raw JSON text lines as one frame, so that data arrives exactly
// as written (spaces, escapes).
const frame = (ws, ...lines) => ws.onmessage({ data: lines.join('\n') });
const push = (channel, offset, data, more = '') => `{"op":"message","channel":"${channel}","offset":"${offset}","data":${data}${more}}`;
const deltaPush = (channel, offset, d) => push(channel, offset, JSON.stringify(d), ',"delta":true');

test('publish sends tags and key; subscribe filter and delta; history filter', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  h.publish('scores', 1, { event: 'goal', tags: { sport: 'ski' }, key: 'match-1' }).catch(() => {});
  const p = await command(ws, 'publish');
  assert.deepEqual(p, { id: p.id, op: 'publish', channel: 'scores', data: 1, event: 'goal', tags: { sport: 'ski' }, key: 'match-1' });

  const filter = { all: [{ tag: 'sport', eq: 'ski' }, { not: { tag: 'draft', exists: true } }] };
  const sub = h.subscribe('scores', () => {}, { filter });
  h.subscribe('ticks', () => {}, { delta: 'fossil', since: '4' });
  const [s1, s2] = [await command(ws, 'subscribe', 0), await command(ws, 'subscribe', 1)];
  assert.deepEqual(s1, { id: s1.id, op: 'subscribe', channel: 'scores', filter });
  assert.deepEqual(s2, { id: s2.id, op: 'subscribe', channel: 'ticks', since: '4', delta: 'fossil' });

  sub.history({ limit: 3, filter }).catch(() => {});
  const hc = await command(ws, 'history');
  assert.deepEqual(hc, { id: hc.id, op: 'history', channel: 'scores', limit: 3, filter });

  assert.throws(() => h.subscribe('x', () => {}, { delta: 'vcdiff' }), (e) => e.code === 'bad_request');
});

test('messages carry their tags and key to the handler', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  h.subscribe('scores', (data, m) => got.push([data, m.tags, m.key]));
  const s = await command(ws, 'subscribe');
  ws.recv({ id: s.id, ok: true, offset: '', recovered: true }, { op: 'message', channel: 'scores', offset: '1', data: 2, tags: { sport: 'ski' }, key: 'k' });
  assert.deepEqual(got, [[2, { sport: 'ski' }, 'k']]);
});

test('a delta subscription gets whole data: deltas apply to the previous data as it was sent', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  h.subscribe('ticks', (data, m) => got.push([m.offset, data, 'delta' in m]), { delta: 'fossil' });
  const s = await command(ws, 'subscribe');
  // Spaces and an escape, which JSON.stringify would not write back: the
  // copies of the deltas only match the bytes as sent.
  const d1 = '{"price": 100.25, "name":"caf\\u00e9 ✓", "history":[1,2,3]}';
  const d2 = '{"price": 100.5, "name":"caf\\u00e9 ✓", "history":[1,2,3]}';
  const d3 = '{"price": 100.5, "name":"café ✓ 🎉", "history":[1,2,3,4]}';
  const d4 = '{"price":7}';
  const d5 = '{"price":8}';
  frame(
    ws,
    JSON.stringify({ id: s.id, ok: true, offset: '0', recovered: true }),
    push('ticks', '1', d1),
    deltaPush('ticks', '2', delta(d1, d2)),
    deltaPush('ticks', '3', delta(d2, d3)),
    push('ticks', '4', d4, ',"event":"whole"'), // whole: the new base
    deltaPush('ticks', '5', delta(d4, d5)),
  );
  assert.deepEqual(got, [
    ['1', JSON.parse(d1), false],
    ['2', JSON.parse(d2), false],
    ['3', JSON.parse(d3), false],
    ['4', JSON.parse(d4), false],
    ['5', JSON.parse(d5), false],
  ]);
  // The vectors' large documents, through a subscription.
  const v = vectors.good.find((v) => v.name === '4 KB, middle field changed');
  const [oldDoc, newDoc, d] = [v.old, v.new, v.delta].map((b) => Buffer.from(b, 'base64').toString('utf8'));
  frame(ws, push('ticks', '6', oldDoc), deltaPush('ticks', '7', d));
  assert.deepEqual(got.at(-1), ['7', JSON.parse(newDoc), false]);
});

test('a delta that does not apply delivers nothing from it until the resubscribe', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  const sub = h.subscribe('ticks', (data, m) => got.push(m.offset), { delta: 'fossil' });
  const s = await command(ws, 'subscribe');
  const doc = (n, v) => `{"n":${n},"text":"${v.repeat(40)}"}`;
  frame(
    ws,
    JSON.stringify({ id: s.id, ok: true, offset: '0', recovered: true }),
    push('ticks', '1', doc(1, 'ab')),
    deltaPush('ticks', '2', delta(doc(1, 'xy'), doc(2, 'xy'))), // against other data: the checksum fails
    push('ticks', '3', doc(3, 'ab')),
    deltaPush('ticks', '4', delta(doc(3, 'ab'), doc(4, 'ab'))),
  );
  assert.deepEqual(got, ['1']);
  assert.equal(sub.offset, '1');
  // Unsubscribe, then subscribe after the last message delivered.
  const u = await command(ws, 'unsubscribe');
  const again = await command(ws, 'subscribe', 1);
  assert.equal(u.channel, 'ticks');
  assert.ok(u.id < again.id);
  assert.deepEqual(again, { id: again.id, op: 'subscribe', channel: 'ticks', since: '1', delta: 'fossil' });
  // What the old subscription still pushes is dropped, whole or not.
  frame(ws, push('ticks', '5', doc(5, 'ab')), JSON.stringify({ id: u.id, ok: true }));
  assert.deepEqual(got, ['1']);
  frame(ws, JSON.stringify({ id: again.id, ok: true, offset: '5', recovered: true }), push('ticks', '2', doc(2, 'ab')), deltaPush('ticks', '3', delta(doc(2, 'ab'), doc(3, 'ab'))));
  assert.deepEqual(got, ['1', '2', '3']);
});

test('after a reconnect the first push is whole: a delta then resubscribes', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  h.subscribe('ticks', (data) => got.push(data), { delta: 'fossil' });
  const s = await command(ws, 'subscribe');
  const [a, b, c] = ['{"n":1,"pad":"................"}', '{"n":2,"pad":"................"}', '{"n":3,"pad":"................"}'];
  frame(ws, JSON.stringify({ id: s.id, ok: true, offset: '0', recovered: true }), push('ticks', '1', a));
  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[1]);
  ws2.open();
  const s2 = await command(ws2, 'subscribe');
  assert.equal(s2.since, '1');
  frame(ws2, JSON.stringify({ id: s2.id, ok: true, offset: '2', recovered: true }), deltaPush('ticks', '2', delta(a, b)));
  assert.deepEqual(got, [JSON.parse(a)], 'a delta on the old base was delivered after a resubscribe');
  const s3 = await command(ws2, 'subscribe', 1);
  assert.equal(s3.since, '1');
  frame(ws2, JSON.stringify({ id: s3.id, ok: true, offset: '3', recovered: true }), push('ticks', '2', b), deltaPush('ticks', '3', delta(b, c)));
  assert.deepEqual(got, [a, b, c].map((d) => JSON.parse(d)));
});

test('a delta as the first push of a subscription is not delivered, even one that needs no base', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  h.subscribe('ticks', (data) => got.push(data), { delta: 'fossil' });
  const s = await command(ws, 'subscribe');
  const d = delta('', '{"n":1}');
  assert.ok(!d.includes('@'), 'the delta copies nothing');
  frame(ws, JSON.stringify({ id: s.id, ok: true, offset: '0', recovered: true }), deltaPush('ticks', '1', d));
  assert.deepEqual(got, []);
  const again = await command(ws, 'subscribe', 1);
  assert.equal(again.since, '0');
});

test('with receipts, each handled message is acked: one ack in flight, the newest next', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const handled = [];
  const sub = h.subscribe('chat:r', (data, m) => {
    // The ack goes after the handler: none is sent for this message yet.
    assert.equal(ws.commands().filter((c) => c.op === 'ack' && c.offset === m.offset).length, 0);
    handled.push(m.offset);
  });
  const s = await command(ws, 'subscribe');
  const m = (offset) => ({ op: 'message', channel: 'chat:r', offset, data: offset });
  ws.recv({ id: s.id, ok: true, offset: '0', recovered: true, receipts: true }, m('1'), m('2'), m('3'));
  const a1 = await command(ws, 'ack');
  assert.deepEqual(a1, { id: a1.id, op: 'ack', channel: 'chat:r', offset: '1' });
  ws.recv(m('4'));
  await new Promise(setImmediate);
  assert.equal(ws.commands().filter((c) => c.op === 'ack').length, 1, 'a second ack while one is in flight');
  ws.recv({ id: a1.id, ok: true });
  const a2 = await command(ws, 'ack', 1);
  assert.equal(a2.offset, '4', 'the next ack names the newest message handled');
  // An ack in flight when the connection drops goes again, after the
  // resubscribe.
  ws.recv(m('5'));
  ws.drop();
  const ws2 = await waitFor(() => h._ws !== ws && h._ws);
  ws2.open();
  const again = await command(ws2, 'ack');
  assert.equal(again.offset, '4');
  assert.deepEqual(ws2.commands().map((c) => c.op), ['subscribe', 'ack']);
  ws2.recv({ id: (await command(ws2, 'subscribe')).id, ok: true, offset: '5', recovered: true, receipts: true }, { id: again.id, ok: true });
  assert.equal((await command(ws2, 'ack', 1)).offset, '5');
  assert.deepEqual(handled, ['1', '2', '3', '4', '5']);
  assert.equal(sub.offset, '5');
});

test('a handler that throws acknowledges nothing, and the rest of its frame is still handled', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const handled = [];
  h.subscribe('chat:r', (data, m) => {
    if (m.offset === '1') throw new Error('handler failed');
    handled.push(m.offset);
  });
  const s = await command(ws, 'subscribe');
  const published = h.publish('chat:r', 'x');
  const p = await command(ws, 'publish');
  // The handler's error is reported on a timer of its own: hold it.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const m = (offset) => ({ op: 'message', channel: 'chat:r', offset, data: offset });
  ws.recv({ id: s.id, ok: true, offset: '0', recovered: true, receipts: true }, m('1'), m('2'), { id: p.id, ok: true, offset: '3' });
  assert.deepEqual(handled, ['2'], 'the message after the one that threw');
  assert.equal(await published, '3', 'the reply in the same frame');
  assert.deepEqual(ws.commands().filter((c) => c.op === 'ack').map((c) => c.offset), ['2']);
  assert.throws(() => t.mock.timers.runAll(), /handler failed/, 'the error is reported');
});

test('without receipts nothing is acked', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  let n = 0;
  h.subscribe('chat:r', () => n++);
  const s = await command(ws, 'subscribe');
  const m = (offset) => ({ op: 'message', channel: 'chat:r', offset, data: 1 });
  ws.recv({ id: s.id, ok: true, offset: '0', recovered: true }, m('1'), m('2'));
  h.publish('chat:r', 3).catch(() => {});
  await command(ws, 'publish'); // sent after anything the messages made
  assert.equal(n, 2);
  assert.deepEqual(ws.commands().map((c) => c.op), ['subscribe', 'publish']);
});
