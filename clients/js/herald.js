// herald.js — the browser SDK for herald's JSON protocol on /ws.
// An ES module with no dependencies. See README.md beside this file.

const PROTOCOLS = ['herald.v1.jsonl', 'herald.v1'];
const RETRY_MIN = 250; // ms before the first reconnect, doubling up to RETRY_MAX
const RETRY_MAX = 10000;
const SEEN_MAX = 1000; // offsets remembered per subscription to drop duplicates
const KICKED = 4000; // the close code of a client the application disconnected: no reconnect

// tokenExpiry is a JWT's exp in ms, or 0 when it has none or is no JWT.
function tokenExpiry(token) {
  try {
    const b = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(b + '='.repeat((4 - (b.length % 4)) % 4))).exp;
    return typeof exp === 'number' ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

// cursorOffsets decodes an SSE stream's id (a herald cursor: "1", then
// base64url of, per channel, uvarint name length, name, uvarint sequence,
// uvarint epoch length, epoch) into a Map of channel → offset.
function cursorOffsets(id) {
  const out = new Map();
  if (!id || id[0] !== '1') return out;
  let b;
  try {
    b = Uint8Array.from(atob(id.slice(1).replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  } catch {
    return out;
  }
  let i = 0;
  const uvarint = () => {
    let v = 0;
    for (let m = 1; i < b.length; m *= 128) {
      const x = b[i++];
      v += (x & 127) * m;
      if (x < 128) return v;
    }
    return NaN;
  };
  const text = () => {
    const n = uvarint();
    return new TextDecoder().decode(b.subarray(i, (i += n)));
  };
  while (i < b.length) {
    const channel = text();
    const seq = uvarint();
    const epoch = text();
    out.set(channel, seq ? seq + '-' + epoch : '');
  }
  return out;
}

// DIGITS are the Fossil delta format's base-64 digits, in ascending value.
const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';

const utf8 = (text) => new TextEncoder().encode(text);

// applyDelta returns the bytes a Fossil delta (fossil-scm's delta format,
// as herald's delta pushes carry it) makes of base, both Uint8Arrays. It
// throws, rather than return other bytes, when the delta is malformed,
// reaches outside base, or its length or checksum does not match.
export function applyDelta(base, delta) {
  let i = 0;
  // int reads a number; like fossil, it wraps at 32 bits.
  const int = () => {
    let v = 0;
    for (let d; (d = DIGITS.indexOf(String.fromCharCode(delta[i]))) >= 0; i++) v = ((v << 6) + d) >>> 0;
    return v;
  };
  const fail = (why) => {
    throw herr('bad_delta', 'herald: bad delta: ' + why);
  };
  const size = int();
  if (delta[i++] !== 10) fail('no size');
  const out = new Uint8Array(size);
  let n = 0;
  while (i < delta.length) {
    const count = int();
    const op = delta[i++];
    let from = delta;
    let at = i;
    if (op === 64) {
      // N@O, copies N bytes of base from offset O.
      at = int();
      if (delta[i++] !== 44) fail('copy');
      from = base;
    } else if (op === 58) i += count; // N: inserts the N bytes that follow
    else if (op === 59) {
      // N; ends: N is the checksum of the output, its 32-bit big-endian
      // words (zero-padded) added up.
      let sum = 0;
      for (let j = 0; j < size; j += 4) sum = (sum + (((out[j] << 24) | (out[j + 1] << 16) | (out[j + 2] << 8) | out[j + 3]) >>> 0)) >>> 0;
      if (n !== size || sum !== count) fail('checksum');
      return out;
    } else fail('command');
    if (n + count > size || at + count > from.length) fail('out of range');
    out.set(from.subarray(at, at + count), n);
    n += count;
  }
  fail('no end');
}

// rawData returns the text of the top-level "data" value of a JSON object
// line, as sent: the bytes the next delta applies to.
function rawData(line) {
  let depth = 0;
  let start = -1;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      const key = i;
      while (i < line.length && line[++i] !== '"') if (line[i] === '\\') i++;
      if (depth === 1 && start < 0 && line.slice(key, i + 1) === '"data"' && /^\s*:/.test(line.slice(i + 1))) {
        start = line.indexOf(':', i) + 1;
      }
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']' || c === ',') {
      if (start >= 0 && depth === 1) return line.slice(start, i).trim();
      if (c !== ',') depth--;
    }
  }
  throw herr('bad_delta', 'herald: no data');
}

function herr(code, message) {
  const e = new Error(message || code);
  e.code = code;
  return e;
}

// Emitter is the small event helper behind Herald.on and Subscription.on.
class Emitter {
  constructor() {
    this._on = {};
  }

  // on registers fn for event and returns a function that removes it.
  on(event, fn) {
    (this._on[event] ||= new Set()).add(fn);
    return () => this._on[event].delete(fn);
  }

  _emit(event, ...args) {
    for (const fn of this._on[event] || []) {
      try {
        fn(...args);
      } catch (e) {
        setTimeout(() => { throw e; }); // report without breaking the SDK
      }
    }
  }
}

// Subscription is one channel subscribed by Herald.subscribe, or by the
// server (Herald's 'subscription' event).
export class Subscription extends Emitter {
  constructor(herald, channel, handler, since, filter, delta) {
    super();
    this.channel = channel;
    // offset is the last offset seen on the channel (a message's, or the
    // subscribe reply's when no message came yet); undefined before the
    // first reply when no since was given. Reconnects resume from it.
    this.offset = since;
    // recovered is the last subscribe reply's recovered flag: false when
    // history no longer reached back to the offset asked for.
    this.recovered = undefined;
    this._h = herald;
    this._fn = handler;
    this._seen = new Set();
    this._server = false; // made by the server, which makes it again on reconnect
    this._filter = filter;
    this._delta = delta; // 'fossil' or undefined
    // this._base: the channel's previous data (UTF-8 bytes as received or
    // rebuilt), what the next delta applies to; undefined after each
    // (re)subscribe. this._broke: a delta failed, and pushes are dropped
    // until the resubscribe's reply.
    // Receipts: this._receipts is the last subscribe reply's flag;
    // this._ack the newest offset handled and not yet acknowledged;
    // this._acking whether an ack is in flight (one at a time).
  }

  // unsubscribe stops the subscription; the handler gets no more messages.
  unsubscribe() {
    const h = this._h;
    if (h._subs.get(this.channel) !== this) return;
    h._subs.delete(this.channel);
    if (h._sse) h._sseRestart();
    else if (h.state === 'connected') h._call('unsubscribe', { channel: this.channel }).catch(() => {});
  }

  // history resolves with the channel's messages, oldest first; with a
  // filter, only those whose tags match it.
  async history({ limit, since, filter } = {}) {
    return (await this._h._call('history', { channel: this.channel, limit, since, filter })).messages;
  }

  // presence resolves with the clients subscribed to the channel.
  async presence() {
    return (await this._h._call('presence', { channel: this.channel })).clients;
  }

  // _message delivers a message push; line is its JSON text (the
  // WebSocket's), which a delta subscription keeps the data of.
  _message(m, line) {
    if (this._broke) return;
    if (this._delta || m.delta) {
      try {
        if (m.delta) {
          if (!this._base) throw 0; // a delta first after a (re)subscribe
          this._base = applyDelta(this._base, utf8(m.data));
          m.data = JSON.parse(new TextDecoder().decode(this._base));
          delete m.delta;
        } else this._base = utf8(rawData(line));
      } catch {
        // Deliver nothing from here on: subscribe again after the last
        // message delivered, whose pushes start whole.
        this._broke = true;
        this._h._call('unsubscribe', { channel: this.channel }).catch(() => {});
        return this._h._subscribe(this);
      }
    }
    if (this._seen.has(m.offset)) return;
    this._seen.add(m.offset);
    if (this._seen.size > SEEN_MAX) this._seen.delete(this._seen.values().next().value);
    this.offset = m.offset;
    try {
      this._fn && this._fn(m.data, m);
    } catch (e) {
      // Report it, acknowledge nothing, and go on with the frame's other
      // lines (as _emit does for listeners).
      setTimeout(() => { throw e; });
      return;
    }
    this._emit('message', m.data, m);
    this._ack = m.offset;
    this._sendAck();
  }

  // _sendAck acknowledges the newest message handled where the namespace
  // keeps receipts, unless an ack is in flight: the next goes when it is
  // answered, and covers every earlier.
  _sendAck() {
    const offset = this._ack;
    if (this._acking || offset === undefined || !this._receipts || this._h._subs.get(this.channel) !== this) return;
    this._ack = undefined;
    this._acking = true;
    this._h
      ._call('ack', { channel: this.channel, offset })
      .catch(() => {})
      .finally(() => {
        this._acking = false;
        this._sendAck();
      });
  }
}

// Herald is one connection to a herald server that reconnects by itself.
export class Herald extends Emitter {
  constructor(url, opts = {}) {
    super();
    if (url && typeof url === 'object') [url, opts] = [undefined, url];
    if (!url) {
      const l = globalThis.location;
      url = (l.protocol === 'https:' ? 'wss://' : 'ws://') + l.host + '/ws';
    }
    if (typeof url !== 'string') url = String(url);
    this._sse = opts.transport === 'sse';
    if (this._sse) url = url.replace(/^ws/, 'http').replace(/\/ws$/, '/sse');
    this.url = url;
    this.state = 'disconnected';
    this.client = ''; // this connection's client id, from the welcome
    this.user = '';
    this._opts = opts;
    this._WS = opts.WebSocket || globalThis.WebSocket;
    this._ping = opts.pingInterval ?? 25000;
    this._id = 0;
    this._pending = new Map(); // id → {op, frame, sent, resolve, reject}
    this._queue = []; // commands waiting for a connection
    this._out = []; // commands to send in the next batch
    this._subs = new Map(); // channel → Subscription
    this._retries = 0;
    this._closed = false;
    this._why = 'herald: closed'; // what calls fail with once closed
    // Connect in a microtask, so that listeners added right after the
    // constructor see 'connecting'.
    queueMicrotask(() => this._connect());
  }

  // subscribe subscribes to channel; handler(data, message) gets each
  // message once, in order, across reconnects.
  subscribe(channel, handler, { since, filter, delta } = {}) {
    if (this._closed) throw herr('unavailable', this._why);
    if (this._subs.has(channel)) throw herr('bad_request', 'herald: already subscribed to ' + channel);
    if ((delta && delta !== 'fossil') || (this._sse && (filter || delta))) throw herr('bad_request', 'herald: delta is fossil, and filter and delta need the WebSocket');
    const sub = new Subscription(this, channel, handler, since, filter, delta);
    this._subs.set(channel, sub);
    if (this._sse) this._sseRestart();
    else if (this.state === 'connected') this._subscribe(sub);
    return sub;
  }

  // publish resolves with the message's offset, or rejects with an Error
  // whose code is the server's error code. While disconnected it waits.
  async publish(channel, data, { event, tags, key } = {}) {
    return (await this._call('publish', { channel, data: data === undefined ? null : data, event, tags, key })).offset;
  }

  // rpc asks the server's application method with data and resolves with
  // the data it answered, or rejects as publish does. While disconnected it
  // waits; one in flight when the connection drops rejects with
  // unavailable.
  async rpc(method, data) {
    return (await this._call('rpc', { method, data: data === undefined ? null : data })).data;
  }

  // close closes the connection for good.
  close() {
    this._end('herald: closed');
  }

  // _end stops the Herald for good: what waits, and every later call,
  // fails with unavailable and the message why.
  _end(why) {
    if (this._closed) return;
    this._closed = true;
    this._why = why;
    clearTimeout(this._timer);
    clearTimeout(this._refresher);
    this._abort?.abort();
    for (const p of this._pending.values()) p.reject(herr('unavailable', why));
    this._pending.clear();
    const ws = this._ws;
    if (ws) {
      this._drop(ws);
      ws.close(1000);
    }
    this._setState('disconnected');
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  }

  async _connect() {
    if (this._closed) return;
    if (this._sse) return this._sseConnect();
    this._setState('connecting');
    let url = this.url;
    let token = this._opts.token;
    let ws;
    try {
      if (this._opts.getToken) token = await this._opts.getToken();
      if (this._closed) return;
      if (token) url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
      // Every last offset seen: the server resumes its own subscriptions
      // from them (it reads only theirs).
      const since = {};
      for (const [ch, sub] of this._subs) if (sub.offset !== undefined) since[ch] = sub.offset;
      if (Object.keys(since).length) url += (url.includes('?') ? '&' : '?') + 'since=' + encodeURIComponent(JSON.stringify(since));
      ws = new this._WS(url, PROTOCOLS);
    } catch (e) {
      this._emit('error', e);
      return this._retry();
    }
    this._ws = ws;
    this._token = token;
    ws.onopen = () => this._open(ws);
    ws.onmessage = (ev) => this._read(ev.data);
    ws.onclose = (ev) => {
      this._drop(ws);
      if (ev?.code !== KICKED) return this._retry();
      // The application disconnected this client (herald's server API):
      // it is not to come back by itself.
      const reason = ev.reason || '';
      this._end('herald: disconnected by the server' + (reason && ': ' + reason));
      this._emit('kicked', { code: KICKED, reason });
    };
    ws.onerror = () => {};
  }

  // The SSE transport: one text/event-stream of every subscribed channel,
  // read with fetch so that every event name arrives and the token can go
  // in a header. It reconnects with Last-Event-ID, the cursor of the last
  // event, so the server resumes every channel; a change of channels
  // reopens the stream from that cursor.

  _sseRestart() {
    if (this._closed) return;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect()); // once for several subscribes in a row
  }

  async _sseConnect() {
    this._abort?.abort();
    const abort = (this._abort = new AbortController());
    if (!this._subs.size) return this._setState('disconnected');
    this._setState('connecting');
    const url = new URL(this.url, globalThis.location?.href);
    for (const ch of this._subs.keys()) url.searchParams.append('channel', ch);
    const headers = { Accept: 'text/event-stream' };
    let cursor = this._cursor;
    // A subscription with since, not yet in the cursor, starts there.
    const offsets = cursorOffsets(cursor);
    for (const [ch, sub] of this._subs) if (!offsets.has(ch) && sub.offset !== undefined) offsets.set(ch, sub.offset);
    if (offsets.size) cursor = this._encodeCursor(offsets) || cursor;
    if (cursor) headers['Last-Event-ID'] = cursor;
    try {
      const token = this._opts.getToken ? await this._opts.getToken() : this._opts.token;
      if (token) headers.Authorization = 'Bearer ' + token;
      const res = await (this._opts.fetch || fetch)(url, { headers, signal: abort.signal, cache: 'no-store' });
      if (!res.ok) {
        let e;
        try {
          e = (await res.json()).error;
        } catch {}
        throw herr(e?.code || 'unavailable', e?.message || 'herald: HTTP ' + res.status);
      }
      this._retries = 0;
      this._setState('connected');
      for (const sub of this._subs.values()) sub._emit('subscribed', { offset: sub.offset, recovered: true });
      await this._sseRead(res.body, abort);
    } catch (e) {
      if (abort.signal.aborted) return;
      this._emit('error', e);
    }
    if (abort.signal.aborted || this._closed) return;
    this._retry();
  }

  // _encodeCursor writes offsets back as a cursor, or '' when an offset is
  // not herald's SEQ-EPOCH.
  _encodeCursor(offsets) {
    const b = [];
    const uvarint = (v) => {
      for (; v >= 128; v = Math.floor(v / 128)) b.push((v % 128) | 128);
      b.push(v);
    };
    const text = (t) => {
      const u = new TextEncoder().encode(t);
      uvarint(u.length);
      b.push(...u);
    };
    for (const [ch, off] of offsets) {
      const m = /^(\d+)-(.+)$/.exec(off) || (off === '' && [0, 0, '']);
      if (!m) return '';
      text(ch);
      uvarint(Number(m[1]));
      text(m[2]);
    }
    return '1' + btoa(String.fromCharCode(...b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  async _sseRead(body, abort) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || abort.signal.aborted) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (ev.data.length) this._sseEvent(ev);
          else if (ev.id !== undefined) this._cursor = ev.id; // the opening block: where the stream starts
          ev = { data: [] };
          continue;
        }
        const i = line.indexOf(':');
        if (i === 0) continue; // a comment: the heartbeat
        const field = i < 0 ? line : line.slice(0, i);
        const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'data') ev.data.push(v);
        else if (field === 'event') ev.event = v;
        else if (field === 'id') ev.id = v;
      }
    }
  }

  _sseEvent(ev) {
    const text = ev.data.join('\n');
    const prev = cursorOffsets(this._cursor);
    if (ev.id !== undefined) this._cursor = ev.id;
    if (ev.event === 'herald.unrecovered') {
      let ch;
      try {
        ch = JSON.parse(text).channel;
      } catch {}
      const sub = this._subs.get(ch);
      if (sub) {
        sub.recovered = false;
        sub._emit('subscribed', { offset: sub.offset, recovered: false });
      }
      return;
    }
    // The channel whose offset moved is the message's.
    for (const [channel, offset] of cursorOffsets(ev.id)) {
      if (prev.get(channel) === offset) continue;
      const sub = this._subs.get(channel);
      if (!sub) continue;
      let data = text;
      if (ev.event !== 'herald.binary') {
        try {
          data = JSON.parse(text);
        } catch {}
      }
      const m = { op: 'message', channel, offset, data };
      if (ev.event && ev.event !== 'message' && ev.event !== 'herald.binary') m.event = ev.event;
      if (ev.event === 'herald.binary') m.binary = true;
      sub._message(m);
    }
  }

  _open(ws) {
    this._jsonl = ws.protocol === PROTOCOLS[0];
    this._alive = true;
    if (this._ping > 0) {
      this._pinger = setInterval(() => {
        if (!this._alive) {
          // Nothing came for a whole interval, not even a ping reply.
          this._drop(ws);
          ws.close();
          return this._retry();
        }
        this._alive = false;
        if (this.state === 'connected') this._call('ping').catch(() => {});
      }, this._ping);
    }
  }

  // _welcome makes the connection usable: the server's first frame names
  // this client.
  _welcome(m) {
    this.client = m.client;
    this.user = m.user || '';
    if (this.state === 'connected') return;
    this._retries = 0;
    // Subscriptions first, then what waited: commands run in order.
    this.state = 'connected';
    for (const sub of this._subs.values()) if (!sub._server) this._subscribe(sub);
    for (const p of this._queue) this._send(p);
    this._queue = [];
    this._scheduleRefresh();
    this._emit('state', 'connected');
  }

  // _scheduleRefresh arranges, when getToken is given and the token
  // expires, for a new token to replace it on this connection shortly
  // before: the server closes a connection whose token expired.
  _scheduleRefresh() {
    clearTimeout(this._refresher);
    const exp = this._opts.getToken && this._token && tokenExpiry(this._token);
    if (!exp) return;
    const left = exp - Date.now();
    this._refresher = setTimeout(() => this._refresh(), Math.max(0, left - Math.min(60000, left / 5)));
  }

  async _refresh() {
    const ws = this._ws;
    try {
      const token = await this._opts.getToken();
      if (this._ws !== ws || this.state !== 'connected') return;
      await this._call('refresh', { token });
      if (this._ws !== ws) return;
      this._token = token;
      this._scheduleRefresh();
    } catch (e) {
      // The server closes the connection at expiry; the reconnect asks
      // getToken again.
      this._emit('error', e);
    }
  }

  // _drop forgets the socket ws. What was not sent on it waits for the next
  // connection, and so do history and presence, which are safe to repeat;
  // a publish that was sent is rejected with unavailable, since it may or
  // may not have been published. Subscribe, unsubscribe and ping belong to
  // the lost connection.
  _drop(ws) {
    if (this._ws !== ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    this._ws = null;
    clearInterval(this._pinger);
    clearTimeout(this._refresher);
    this._out = [];
    for (const [id, p] of this._pending) {
      if (p.op === 'history' || p.op === 'presence' || p.op === 'ack' || ((p.op === 'publish' || p.op === 'rpc') && !p.sent)) {
        p.sent = false;
        continue;
      }
      this._pending.delete(id);
      if (p.op === 'publish' || p.op === 'rpc' || p.op === 'refresh') p.reject(herr('unavailable', 'herald: connection lost before the reply'));
    }
    this._queue = [...this._pending.values()];
  }

  _retry() {
    if (this._closed) return;
    this._setState('disconnected');
    const d = Math.min(RETRY_MAX, RETRY_MIN * 2 ** this._retries++);
    this._timer = setTimeout(() => this._connect(), d / 2 + (Math.random() * d) / 2);
  }

  // _subscribe sends sub's subscribe command. Its reply is handled at once,
  // before the messages that follow it in the same frame. The first push
  // after it is whole.
  _subscribe(sub) {
    const mine = () => this._subs.get(sub.channel) === sub;
    sub._base = undefined;
    this._cmd('subscribe', { channel: sub.channel, since: sub.offset, filter: sub._filter, delta: sub._delta }, (r) => {
      if (!mine()) return;
      if (sub.offset === undefined) sub.offset = r.offset;
      sub.recovered = r.recovered;
      sub._receipts = r.receipts;
      sub._broke = false;
      sub._emit('subscribed', { offset: r.offset, recovered: r.recovered });
    }, (e) => {
      // A subscription the server made itself meanwhile lives on.
      if (!mine() || sub._server) return;
      this._subs.delete(sub.channel);
      sub._emit('error', e);
    });
  }

  // _serverSubscribed handles a subscribed push: the server subscribed
  // this connection (again, after a reconnect) to a channel. A new one is
  // told to 'subscription' listeners before the messages that follow it.
  _serverSubscribed(m) {
    let sub = this._subs.get(m.channel);
    const fresh = !sub;
    if (fresh) {
      sub = new Subscription(this, m.channel);
      this._subs.set(m.channel, sub);
    }
    sub._server = true;
    if (sub.offset === undefined) sub.offset = m.offset;
    sub.recovered = m.recovered;
    sub._receipts = m.receipts;
    sub._base = undefined;
    if (fresh) this._emit('subscription', sub);
    sub._emit('subscribed', { offset: m.offset, recovered: m.recovered });
  }

  // _call sends a command, or queues it until connected, and resolves with
  // its reply.
  _call(op, fields) {
    return new Promise((resolve, reject) => this._cmd(op, fields, resolve, reject));
  }

  _cmd(op, fields, resolve, reject) {
    if (this._closed) return reject(herr('unavailable', this._why));
    if (this._sse) return reject(herr('bad_request', 'herald: ' + op + ' needs the WebSocket transport'));
    const id = ++this._id;
    const p = { op, frame: JSON.stringify({ id, op, ...fields }), resolve, reject };
    this._pending.set(id, p);
    if (this.state === 'connected') this._send(p);
    else this._queue.push(p);
  }

  // _send sends p in the next batch: the commands sent in one task go out
  // as one frame, one a line.
  _send(p) {
    if (this._out.push(p) > 1) return;
    queueMicrotask(() => {
      const out = this._out;
      const ws = this._ws;
      this._out = [];
      if (!ws || !out.length) return;
      for (const p of out) p.sent = true;
      if (this._jsonl) ws.send(out.map((p) => p.frame).join('\n'));
      else for (const p of out) ws.send(p.frame);
    });
  }

  _read(text) {
    this._alive = true;
    if (typeof text !== 'string') return;
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      let m;
      try {
        m = JSON.parse(line);
      } catch (e) {
        this._emit('error', e);
        continue;
      }
      if (m.id) {
        const p = this._pending.get(m.id);
        if (!p) continue;
        this._pending.delete(m.id);
        if (m.ok) p.resolve(m);
        else p.reject(herr(m.error?.code || 'internal', m.error?.message));
        continue;
      }
      if (m.op === 'welcome') this._welcome(m);
      else if (m.op === 'subscribed') this._serverSubscribed(m);
      else if (m.op === 'error' || m.ok === false) {
        this._emit('error', herr(m.error?.code || 'internal', m.error?.message));
      } else {
        const sub = this._subs.get(m.channel);
        if (!sub) continue;
        if (m.op === 'message') sub._message(m, line);
        else if (m.op === 'join' || m.op === 'leave') sub._emit(m.op, m);
        else if (m.op === 'unsubscribed') {
          this._subs.delete(m.channel);
          sub._emit('unsubscribed', m);
        }
      }
    }
  }
}

export default Herald;
