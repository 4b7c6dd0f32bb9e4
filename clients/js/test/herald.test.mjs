import { test } from 'node:test';
import assert from 'node:assert/strict';
import Herald, { Herald as Named } from '../herald.js';
import { fakeSocket, waitFor, command } from './fake.mjs';

// connected returns a Herald on a fake socket that is open and welcomed.
async function connected(opts = {}) {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0, ...opts });
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open();
  return { h, WS, ws };
}

test('default export is the Herald class', () => {
  assert.equal(Herald, Named);
});

test('offers herald.v1.jsonl then herald.v1 on the given url', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  assert.equal(ws.url, 'ws://herald.test/ws');
  assert.deepEqual(ws.protocols, ['herald.v1.jsonl', 'herald.v1']);
  assert.equal(h.client, 'c0');
});

test('url defaults to /ws on the page host', async () => {
  const WS = fakeSocket();
  for (const [protocol, want] of [
    ['http:', 'ws://page.test:8080/ws'],
    ['https:', 'wss://page.test:8080/ws'],
  ]) {
    globalThis.location = { protocol, host: 'page.test:8080' };
    try {
      const h = new Herald({ WebSocket: WS, pingInterval: 0 });
      await waitFor(() => WS.sockets.length && WS.sockets.at(-1).url === want);
      h.close();
    } finally {
      delete globalThis.location;
    }
  }
});

test('commands get increasing ids and replies are matched by id', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const p1 = h.publish('a', 1);
  const p2 = h.publish('b', 2);
  const [c1, c2] = [await command(ws, 'publish', 0), await command(ws, 'publish', 1)];
  assert.ok(c1.id > 0 && c2.id > c1.id, `ids ${c1.id}, ${c2.id}`);
  assert.deepEqual(c1, { id: c1.id, op: 'publish', channel: 'a', data: 1 });
  // Replies out of order, each to its own command.
  ws.recv({ id: c2.id, ok: true, offset: 'o2' });
  ws.recv({ id: c1.id, ok: true, offset: 'o1' });
  assert.equal(await p1, 'o1');
  assert.equal(await p2, 'o2');
  // Another command later still gets a bigger id.
  h.publish('a', 3, { event: 'e' }).catch(() => {});
  const c3 = await command(ws, 'publish', 2);
  assert.ok(c3.id > c2.id);
  assert.equal(c3.event, 'e');
});

test('reads frames holding several JSON lines', async (t) => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  t.after(() => h.close());
  const got = [];
  const joins = [];
  const sub = h.subscribe('chat:x', (data, m) => got.push([data, m.offset]));
  sub.on('join', (m) => joins.push(m.client));
  const p = h.publish('chat:x', 'hi');
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open('herald.v1.jsonl', false);
  assert.equal(h.state, 'connecting', 'connected only once welcomed');
  // The welcome and the replies to what it lets the SDK send, in one frame
  // with an empty line at the end.
  const s = { id: 2 }; // publish was queued first (id 1), subscribe goes on welcome
  ws.onmessage({
    data: [
      JSON.stringify({ op: 'welcome', client: 'c9', user: 'u' }),
      '',
      JSON.stringify({ op: 'join', channel: 'chat:x', client: 'c9', user: 'u' }),
    ].join('\n'),
  });
  assert.equal(h.state, 'connected');
  assert.equal(h.client, 'c9');
  assert.equal(h.user, 'u');
  const [sc, pc] = [await command(ws, 'subscribe'), await command(ws, 'publish')];
  assert.ok(sc.id === s.id && pc.id === 1, `ids ${sc.id}, ${pc.id}`);
  assert.deepEqual(ws.commands().map((c) => c.op), ['subscribe', 'publish'], 'subscribes go before what waited');
  ws.onmessage({
    data: [
      JSON.stringify({ id: sc.id, ok: true, offset: '5', recovered: true }),
      JSON.stringify({ op: 'message', channel: 'chat:x', offset: '6', data: 'hi', client: 'c9' }),
      JSON.stringify({ id: pc.id, ok: true, offset: '6' }),
    ].join('\n'),
  });
  assert.equal(await p, '6');
  assert.deepEqual(got, [['hi', '6']]);
  assert.deepEqual(joins, ['c9']);
  assert.equal(sub.recovered, true);
  assert.equal(sub.offset, '6');
});

test('commands sent together go out as one jsonl frame', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  for (const d of [1, 2, 3]) h.publish('a', d).catch(() => {});
  await command(ws, 'publish', 2);
  assert.equal(ws.frames.length, 1);
  assert.equal(ws.frames[0].split('\n').length, 3);
});

test('under herald.v1 each command is its own frame', async (t) => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  t.after(() => h.close());
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open('herald.v1');
  h.publish('a', 1).catch(() => {});
  h.publish('a', 2).catch(() => {});
  await command(ws, 'publish', 1);
  assert.equal(ws.frames.length, 2);
});

test('publish rejects with the error code', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const p = h.publish('secret', {});
  const c = await command(ws, 'publish');
  ws.recv({ id: c.id, ok: false, error: { code: 'forbidden', message: 'not yours' } });
  await assert.rejects(p, (e) => e instanceof Error && e.code === 'forbidden' && e.message === 'not yours');
});

test('publish sent when the connection is lost rejects with unavailable', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const p = h.publish('a', 1);
  await command(ws, 'publish');
  ws.drop();
  await assert.rejects(p, (e) => e.code === 'unavailable');
  // It is not sent again on the next connection.
  const ws2 = await waitFor(() => WS.sockets[1]);
  ws2.open();
  // Commands go out in order: once a later publish is on the new
  // connection, the lost one would have been before it.
  const pb = h.publish('b', 2);
  const c = await command(ws2, 'publish');
  assert.deepEqual(ws2.commands().map((c) => [c.op, c.channel]), [['publish', 'b']]);
  ws2.recv({ id: c.id, ok: true, offset: '1' });
  assert.equal(await pb, '1');
});

test('publish while disconnected waits for the connection', async (t) => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  t.after(() => h.close());
  const p1 = h.publish('a', 'early'); // before the first connection
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open();
  const c1 = await command(ws, 'publish');
  assert.equal(c1.data, 'early');
  ws.recv({ id: c1.id, ok: true, offset: '1' });
  assert.equal(await p1, '1');

  ws.drop(1001);
  await waitFor(() => h.state !== 'connected');
  let settled = false;
  const p2 = h.publish('a', 'late').finally(() => (settled = true));
  // Until the next connection opens, the publish waits: it has neither
  // failed nor been sent when the client dials again.
  const ws2 = await waitFor(() => WS.sockets[1]);
  await new Promise(setImmediate); // let a rejection settle, were there one
  assert.equal(settled, false, 'publish must wait, not fail, while disconnected');
  ws2.open();
  const c2 = await command(ws2, 'publish');
  assert.equal(c2.data, 'late');
  ws2.recv({ id: c2.id, ok: true, offset: '2' });
  assert.equal(await p2, '2');
});

test('state events follow the connection', async () => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  const states = [];
  h.on('state', (s) => states.push(s));
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open();
  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[1]);
  ws2.open();
  h.close();
  assert.deepEqual(states, ['connecting', 'connected', 'disconnected', 'connecting', 'connected', 'disconnected']);
  assert.equal(h.state, 'disconnected');
  assert.equal(ws2.closeCode, 1000);
});

test('on returns a function that removes the listener', async () => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  const states = [];
  const off = h.on('state', (s) => states.push(s));
  const ws = await waitFor(() => WS.sockets[0]);
  off();
  ws.open();
  h.close();
  assert.deepEqual(states, ['connecting']);
});

test('reconnect resubscribes from the last offset seen', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  const a = h.subscribe('a', (d) => got.push('a' + d));
  const b = h.subscribe('b', (d) => got.push('b' + d));
  const e = h.subscribe('e', (d) => got.push('e' + d));
  const f = h.subscribe('f', (d) => got.push('f' + d), { since: 'f0' });
  const subs = [0, 1, 2, 3].map((i) => command(ws, 'subscribe', i));
  const [sa, sb, se, sf] = await Promise.all(subs);
  assert.equal(sa.since, undefined);
  assert.equal(sf.since, 'f0');
  ws.recv(
    { id: sa.id, ok: true, offset: 'a10', recovered: true },
    { id: sb.id, ok: true, offset: 'b20', recovered: true },
    { id: se.id, ok: true, offset: '', recovered: true },
    { id: sf.id, ok: true, offset: 'f5', recovered: true },
    { op: 'message', channel: 'a', offset: 'a11', data: 1 },
    { op: 'message', channel: 'a', offset: 'a12', data: 2 },
  );
  assert.deepEqual(got, ['a1', 'a2']);
  assert.equal(b.offset, 'b20');
  assert.equal(a.offset, 'a12');

  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[1]);
  ws2.open();
  const re = await Promise.all([0, 1, 2, 3].map((i) => command(ws2, 'subscribe', i)));
  const since = Object.fromEntries(re.map((c) => [c.channel, c.since]));
  // a: its last message; b: the reply's offset; e: empty channel, from the
  // start; f: saw nothing yet, so still the since it was given.
  assert.deepEqual(since, { a: 'a12', b: 'b20', e: '', f: 'f0' });
  ws2.recv(
    ...re.map((c) => ({ id: c.id, ok: true, offset: 'x', recovered: c.channel !== 'b' })),
    { op: 'message', channel: 'a', offset: 'a13', data: 3 },
  );
  assert.deepEqual(got, ['a1', 'a2', 'a3']);
  assert.equal(b.recovered, false);
  assert.equal(a.recovered, true);
  assert.equal(e.offset, '');
});

test('subscribe sent before the reply may be pushed its messages first', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  const sub = h.subscribe('a', (d) => got.push(d));
  const s = await command(ws, 'subscribe');
  ws.recv({ op: 'message', channel: 'a', offset: '7', data: 7 }, { id: s.id, ok: true, offset: '7', recovered: true });
  assert.deepEqual(got, [7]);
  assert.equal(sub.offset, '7');
});

test('a message whose offset was seen is dropped', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  h.subscribe('a', (d, m) => got.push(m.offset));
  const s = await command(ws, 'subscribe');
  const m = (offset) => ({ op: 'message', channel: 'a', offset, data: offset });
  ws.recv({ id: s.id, ok: true, offset: '1', recovered: true }, m('2'), m('3'), m('2'));
  ws.recv(m('3'), m('4'));
  assert.deepEqual(got, ['2', '3', '4']);
});

test('unsubscribe stops messages and tells the server', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const got = [];
  const sub = h.subscribe('a', (d) => got.push(d));
  const s = await command(ws, 'subscribe');
  ws.recv({ id: s.id, ok: true, offset: '', recovered: true });
  sub.unsubscribe();
  const u = await command(ws, 'unsubscribe');
  assert.equal(u.channel, 'a');
  ws.recv({ op: 'message', channel: 'a', offset: '1', data: 1 });
  assert.deepEqual(got, []);
  // The channel can be subscribed again.
  h.subscribe('a', (d) => got.push(d));
  await command(ws, 'subscribe', 1);
});

test('subscribing twice to a channel throws', async (t) => {
  const { h } = await connected();
  t.after(() => h.close());
  h.subscribe('a', () => {});
  assert.throws(() => h.subscribe('a', () => {}), (e) => e.code === 'bad_request');
});

test('a refused subscribe emits error on the subscription', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const sub = h.subscribe('a', () => {});
  const errs = [];
  sub.on('error', (e) => errs.push(e.code));
  const s = await command(ws, 'subscribe');
  ws.recv({ id: s.id, ok: false, error: { code: 'forbidden', message: 'no' } });
  await waitFor(() => errs.length);
  assert.deepEqual(errs, ['forbidden']);
  h.subscribe('a', () => {}); // it is gone, so this does not throw
});

test('history, presence, join and leave', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const sub = h.subscribe('chat:r', () => {});
  const events = [];
  sub.on('subscribed', (r) => events.push(['subscribed', r.offset, r.recovered]));
  sub.on('join', (m) => events.push(['join', m.client, m.user]));
  sub.on('leave', (m) => events.push(['leave', m.client]));
  const s = await command(ws, 'subscribe');
  ws.recv({ id: s.id, ok: true, offset: '3', recovered: true });

  const hist = sub.history({ limit: 2, since: '1' });
  const hc = await command(ws, 'history');
  assert.deepEqual(hc, { id: hc.id, op: 'history', channel: 'chat:r', limit: 2, since: '1' });
  ws.recv({ id: hc.id, ok: true, messages: [{ channel: 'chat:r', offset: '2', data: 'x' }] });
  assert.deepEqual((await hist).map((m) => m.data), ['x']);

  const pres = sub.presence();
  const pc = await command(ws, 'presence');
  ws.recv({ id: pc.id, ok: true, clients: [{ client: 'c1', user: '' }] });
  assert.deepEqual(await pres, [{ client: 'c1', user: '' }]);

  ws.recv(
    { op: 'join', channel: 'chat:r', client: 'c2', user: 'bob' },
    { op: 'leave', channel: 'chat:r', client: 'c2', user: 'bob' },
    { op: 'join', channel: 'chat:other', client: 'c3', user: '' },
  );
  assert.deepEqual(events, [['subscribed', '3', true], ['join', 'c2', 'bob'], ['leave', 'c2']]);
});

test('history in flight when the connection is lost is sent again', async (t) => {
  const { h, WS, ws } = await connected();
  t.after(() => h.close());
  const sub = h.subscribe('a', () => {});
  const p = sub.presence();
  await command(ws, 'presence');
  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[1]);
  ws2.open();
  const first = await command(ws, 'presence');
  const pc = await command(ws2, 'presence');
  assert.equal(pc.id, first.id); // the same command again
  ws2.recv({ id: pc.id, ok: true, clients: [] });
  assert.deepEqual(await p, []);
});

test('token and getToken go in the url', async () => {
  const WS = fakeSocket();
  const h1 = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0, token: 'a b' });
  await waitFor(() => WS.sockets[0]);
  assert.equal(WS.sockets[0].url, 'ws://herald.test/ws?token=a%20b');
  h1.close();

  let n = 0;
  const h2 = new Herald('ws://herald.test/ws?x=1', {
    WebSocket: WS,
    pingInterval: 0,
    getToken: async () => 'tok' + ++n,
  });
  const ws = await waitFor(() => WS.sockets[1]);
  assert.equal(ws.url, 'ws://herald.test/ws?x=1&token=tok1');
  ws.open();
  ws.drop();
  const ws2 = await waitFor(() => WS.sockets[2]);
  assert.equal(ws2.url, 'ws://herald.test/ws?x=1&token=tok2');
  h2.close();
});

// jwt makes an unsigned JWT-shaped token with the given exp (seconds).
function jwt(exp, sub = 'ann') {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return b64({ alg: 'HS256' }) + '.' + b64({ sub, exp }) + '.sig';
}

test('getToken refreshes the token on the connection before it expires', async (t) => {
  const WS = fakeSocket();
  // exp is whole seconds: 1.5 to 2.5 s from now.
  const exp = Math.ceil((Date.now() + 1500) / 1000);
  const tokens = [jwt(exp), jwt(exp + 3600)];
  let asked = 0;
  const h = new Herald('ws://herald.test/ws', {
    WebSocket: WS,
    pingInterval: 0,
    getToken: async () => tokens[asked++],
  });
  const ws = await waitFor(() => WS.sockets[0]);
  assert.ok(ws.url.endsWith('token=' + encodeURIComponent(tokens[0])));
  ws.open();
  // With a fifth of the lifetime left, the refresh goes out before exp.
  const r = await command(ws, 'refresh');
  assert.equal(r.token, tokens[1]);
  assert.ok(Date.now() < exp * 1000, 'refresh sent after the token expired');
  // The next refresh is scheduled on a clock the test moves: the new
  // token expires in an hour, so none for 58 minutes, then one before it
  // expires, on the same connection.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => t.mock.timers.reset());
  ws.recv({ id: r.id, ok: true });
  await new Promise(setImmediate);
  assert.equal(asked, 2);
  const refreshes = () => ws.commands().filter((c) => c.op === 'refresh').length;
  t.mock.timers.tick(58 * 60_000);
  await new Promise(setImmediate);
  assert.equal(refreshes(), 1, 'a second refresh within 58 minutes of a token good for an hour');
  t.mock.timers.tick(2 * 60_000);
  await new Promise(setImmediate);
  assert.equal(refreshes(), 2, 'no refresh before the new token expired');
  assert.equal(WS.sockets.length, 1);
  h.close();
});

test('a token without exp, or without getToken, is never refreshed', async (t) => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0, getToken: async () => 'opaque' });
  const ws = await waitFor(() => WS.sockets[0]);
  const h2 = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0, token: jwt(Math.floor(Date.now() / 1000)) });
  const ws2 = await waitFor(() => WS.sockets[1]);
  // Whatever either schedules once open runs on a clock the test moves a
  // day ahead.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => t.mock.timers.reset());
  ws.open();
  ws2.open();
  await new Promise(setImmediate);
  t.mock.timers.tick(24 * 3600_000);
  await new Promise(setImmediate);
  assert.equal(ws.commands().filter((c) => c.op === 'refresh').length, 0);
  assert.equal(ws2.commands().filter((c) => c.op === 'refresh').length, 0);
  h.close();
  h2.close();
});

test('close rejects what waits and stops reconnecting', async (t) => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  const p = h.publish('a', 1);
  await waitFor(() => WS.sockets[0]);
  // A reconnect would be a timer: on a clock the test moves past the
  // longest backoff, none dials.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => t.mock.timers.reset());
  h.close();
  await assert.rejects(p, (e) => e.code === 'unavailable');
  await assert.rejects(h.publish('a', 2), (e) => e.code === 'unavailable');
  t.mock.timers.tick(10 * 60_000);
  await new Promise(setImmediate);
  assert.equal(WS.sockets.length, 1);
});

test('reconnect delays back off with jitter', async () => {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0 });
  const times = [];
  for (let i = 0; i < 4; i++) {
    const ws = await waitFor(() => WS.sockets[i]);
    times.push(Date.now());
    ws.drop(); // refused before it opened
  }
  h.close();
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  // 250, 500, 1000 ms halved at most by jitter.
  assert.ok(gaps[0] >= 120 && gaps[0] <= 400, `gaps ${gaps}`);
  assert.ok(gaps[1] >= 245 && gaps[1] <= 650, `gaps ${gaps}`);
  assert.ok(gaps[2] >= 495 && gaps[2] <= 1200, `gaps ${gaps}`);
});

test('a silent connection is dropped by the keepalive', async (t) => {
  const { h, WS, ws } = await connected({ pingInterval: 20 });
  t.after(() => h.close());
  await command(ws, 'ping');
  // No reply, no frame: the next tick gives up on the socket.
  await waitFor(() => WS.sockets[1]);
  assert.equal(ws.readyState, 3);
});

test('subscribed comes before the messages after the reply', async (t) => {
  const { h, ws } = await connected();
  t.after(() => h.close());
  const seen = [];
  const sub = h.subscribe('a', (d) => seen.push('message ' + d));
  sub.on('subscribed', (r) => seen.push('subscribed ' + r.recovered));
  const s = await command(ws, 'subscribe');
  ws.recv({ id: s.id, ok: true, offset: '1', recovered: false }, { op: 'message', channel: 'a', offset: '2', data: 2 });
  assert.deepEqual(seen, ['subscribed false', 'message 2']);
});

// sseServer is a fake fetch for the SSE transport: each call opens a
// stream the test writes to with send(text) and ends with end().
function sseServer() {
  const streams = [];
  const fetch = async (url, init) => {
    let ctl;
    const body = new ReadableStream({ start: (c) => (ctl = c) });
    const s = {
      url: new URL(url),
      headers: init.headers,
      send: (text) => ctl.enqueue(new TextEncoder().encode(text)),
      end: () => ctl.close(),
    };
    init.signal.addEventListener('abort', () => {
      try {
        ctl.error(new DOMException('aborted', 'AbortError'));
      } catch {}
    });
    streams.push(s);
    if (fetch.status && fetch.status !== 200) {
      return new Response(JSON.stringify({ error: { code: 'unauthorized', message: 'a token is required' } }), { status: fetch.status });
    }
    return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  };
  fetch.streams = streams;
  return fetch;
}

test('the SSE transport streams every subscribed channel and names each message by its cursor', async () => {
  const fetch = sseServer();
  const h = new Herald('ws://herald.test/ws', { transport: 'sse', fetch, token: 't0' });
  const got = [];
  h.subscribe('a', (data, m) => got.push(['a', data, m.offset, m.event]));
  h.subscribe('b', (data, m) => got.push(['b', data, m.offset, m.event]));
  const s = await waitFor(() => fetch.streams.at(-1)?.url.searchParams.getAll('channel').length === 2 && fetch.streams.at(-1));
  assert.equal(s.url.origin + s.url.pathname, 'http://herald.test/sse');
  assert.equal(s.headers.Authorization, 'Bearer t0');
  const cur = (a, b) => h._encodeCursor(new Map([['a', a], ['b', b]]));
  s.send(`retry: 2000\nid: ${cur('', '5-e')}\n\n`);
  await waitFor(() => h.state === 'connected');
  s.send(`id: ${cur('1-e', '5-e')}\nevent: message\ndata: hi\n\n`);
  s.send(`: ping\n\nid: ${cur('1-e', '6-e')}\nevent: headline\ndata: {"x":1}\n\n`);
  await waitFor(() => got.length === 2);
  assert.deepEqual(got, [['a', 'hi', '1-e', undefined], ['b', { x: 1 }, '6-e', 'headline']]);
  await assert.rejects(h.publish('a', 1), (e) => e.code === 'bad_request');

  // The stream ends: the transport reconnects from the last cursor.
  s.end();
  const s2 = await waitFor(() => fetch.streams.length > 1 && fetch.streams.at(-1) !== s && fetch.streams.at(-1));
  assert.equal(s2.headers['Last-Event-ID'], cur('1-e', '6-e'));
  h.close();
});

test('the SSE transport reports a refused stream and tries again', async () => {
  const fetch = sseServer();
  fetch.status = 401;
  const h = new Herald('http://herald.test/sse', { transport: 'sse', fetch });
  const errors = [];
  h.on('error', (e) => errors.push(e.code));
  h.subscribe('a', () => {});
  await waitFor(() => errors.length >= 1);
  assert.equal(errors[0], 'unauthorized');
  fetch.status = 200;
  await waitFor(() => fetch.streams.length >= 2, 5000);
  h.close();
});
