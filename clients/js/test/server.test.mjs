// herald.js against what an application behind herald adds: rpc, and the
// subscriptions the server makes itself (a connect proxy's channels).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Herald from '../herald.js';
import { fakeSocket, waitFor, command, connected } from './fake.mjs';

test('rpc resolves with the data of its reply, or rejects with its error', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const p = h.rpc('get_user', { id: 7 });
  const c = await command(ws, 'rpc');
  assert.deepEqual(c, { id: c.id, op: 'rpc', method: 'get_user', data: { id: 7 } });
  ws.recv({ id: c.id, ok: true, data: { name: 'Ann' } });
  assert.deepEqual(await p, { name: 'Ann' });

  const q = h.rpc('nope');
  const c2 = await command(ws, 'rpc', 1);
  assert.equal(c2.data, null, 'rpc without data sends null');
  ws.recv({ id: c2.id, ok: false, error: { code: 'bad_request', message: 'rpc is not enabled on this server' } });
  await assert.rejects(q, (e) => e.code === 'bad_request' && /not enabled/.test(e.message));
});

test('an rpc sent on a lost connection rejects; one not yet sent waits for the next', async (t) => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  t.after(() => h.close());
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open();
  const sent = h.rpc('slow');
  await command(ws, 'rpc');
  ws.drop();
  await assert.rejects(sent, (e) => e.code === 'unavailable');
  const waiting = h.rpc('later');
  const ws2 = await waitFor(() => WS.sockets[1], 5000);
  ws2.open();
  const c = await command(ws2, 'rpc');
  assert.equal(c.method, 'later');
  ws2.recv({ id: c.id, ok: true, data: 1 });
  assert.equal(await waiting, 1);
});

test('a server-side subscription is surfaced as a Subscription and resumed with ?since=', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const subs = [];
  const got = [];
  h.on('subscription', (sub) => {
    subs.push(sub);
    sub.on('message', (data, m) => got.push([m.channel, data, m.offset]));
  });
  const own = h.subscribe('mine', () => {});
  const c = await command(ws, 'subscribe');
  ws.recv({ id: c.id, ok: true, offset: '3-e', recovered: true });
  // The server's subscription, then its messages, in one frame.
  ws.recv(
    { op: 'subscribed', channel: 'feed:ann', offset: '', recovered: true },
    { op: 'message', channel: 'feed:ann', offset: '1-f', data: 'a' },
    { op: 'message', channel: 'feed:ann', offset: '2-f', data: 'b' },
  );
  assert.equal(subs.length, 1);
  assert.equal(subs[0].channel, 'feed:ann');
  assert.equal(subs[0].recovered, true);
  assert.deepEqual(got, [['feed:ann', 'a', '1-f'], ['feed:ann', 'b', '2-f']]);
  assert.throws(() => h.subscribe('feed:ann', () => {}), (e) => e.code === 'bad_request');

  // On reconnect the URL carries every last offset; the server makes its
  // subscription again (no subscribe for it), the client's own is resent.
  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[1], 5000);
  const since = JSON.parse(new URL(ws2.url).searchParams.get('since'));
  assert.deepEqual(since, { mine: '3-e', 'feed:ann': '2-f' });
  ws2.open();
  ws2.recv({ op: 'subscribed', channel: 'feed:ann', offset: '3-f', recovered: true }, { op: 'message', channel: 'feed:ann', offset: '3-f', data: 'c' });
  const resent = await command(ws2, 'subscribe');
  assert.equal(resent.channel, 'mine');
  assert.equal(ws2.commands().filter((x) => x.op === 'subscribe').length, 1, 'only the own subscription is sent again');
  assert.equal(subs.length, 1, 'the resumed subscription is not surfaced again');
  assert.deepEqual(got.at(-1), ['feed:ann', 'c', '3-f']);
  assert.equal(own.channel, 'mine');

  // The server ends it.
  const ended = [];
  subs[0].on('unsubscribed', () => ended.push(true));
  ws2.recv({ op: 'unsubscribed', channel: 'feed:ann' });
  assert.deepEqual(ended, [true]);
  ws2.recv({ op: 'message', channel: 'feed:ann', offset: '4-f', data: 'd' });
  assert.equal(got.length, 3, 'no message after unsubscribed');
});

test('a subscription of the client that the server makes itself on reconnect lives on', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  const errors = [];
  const sub = h.subscribe('news', (data) => got.push(data));
  sub.on('error', (e) => errors.push(e));
  const c = await command(ws, 'subscribe');
  ws.recv({ id: c.id, ok: true, offset: '1-n', recovered: true });
  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[1], 5000);
  ws2.open();
  // The server subscribed news itself this time; the client's resubscribe
  // (sent on welcome) is refused as a duplicate.
  ws2.recv({ op: 'subscribed', channel: 'news', offset: '1-n', recovered: true });
  const again = await command(ws2, 'subscribe');
  ws2.recv({ id: again.id, ok: false, error: { code: 'bad_request', message: 'already subscribed' } });
  ws2.recv({ op: 'message', channel: 'news', offset: '2-n', data: 'x' });
  assert.deepEqual(errors, []);
  assert.deepEqual(got, ['x']);
});

test('a close with 4000 (the application disconnected the client) ends the Herald: no reconnect, a kicked event', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const sub = h.subscribe('a', () => {});
  await command(ws, 'subscribe');
  const p = h.publish('a', 1);
  await command(ws, 'publish');
  const seen = [];
  h.on('state', (s) => seen.push('state ' + s));
  h.on('kicked', (e) => seen.push(`kicked ${e.code} ${e.reason} ${h.state}`));
  t.mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => t.mock.timers.reset());
  ws.drop(4000, 'banned');
  assert.deepEqual(seen, ['state disconnected', 'kicked 4000 banned disconnected']);
  // What waited, and what comes later, fails as after close().
  await assert.rejects(p, (e) => e.code === 'unavailable');
  await assert.rejects(h.publish('a', 2), (e) => e.code === 'unavailable' && /banned/.test(e.message));
  assert.throws(() => h.subscribe('b', () => {}), (e) => e.code === 'unavailable');
  // A reconnect would be a timer: past the longest backoff, none dials.
  t.mock.timers.tick(10 * 60_000);
  await new Promise(setImmediate);
  assert.equal(WS.sockets.length, 1);
  assert.equal(h.state, 'disconnected');
  sub.unsubscribe(); // harmless now
});

test('a close with another code still reconnects', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  let kicked = 0;
  h.on('kicked', () => kicked++);
  ws.drop(4001, 'not herald');
  await waitFor(() => WS.sockets[1], 5000);
  assert.equal(kicked, 0);
});
