// A fake in-process WebSocket for herald.js tests, and small helpers.
import Herald from '../herald.js';

// fakeSocket returns a WebSocket class whose instances the test drives by
// hand: open() them, recv() frames from the "server", drop() them.
export function fakeSocket() {
  class FakeWebSocket {
    static sockets = [];

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = '';
      this.readyState = 0;
      this.frames = [];
      FakeWebSocket.sockets.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.frames.push(text);
    }

    close(code) {
      this.readyState = 3;
      this.closeCode = code;
    }

    // open completes the handshake with the given subprotocol and, unless
    // welcome is false, sends the server's welcome.
    open(protocol = 'herald.v1.jsonl', welcome = true) {
      this.protocol = protocol;
      this.readyState = 1;
      this.onopen?.({});
      if (welcome) this.recv({ op: 'welcome', client: 'c' + FakeWebSocket.sockets.indexOf(this), user: '' });
    }

    // recv delivers one text frame holding objs, one JSON object a line.
    recv(...objs) {
      this.onmessage?.({ data: objs.map((o) => JSON.stringify(o)).join('\n') });
    }

    // drop closes the socket from the server's side.
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }

    // commands returns every command sent so far, decoded.
    commands() {
      return this.frames.flatMap((f) => f.split('\n')).map((l) => JSON.parse(l));
    }
  }
  return FakeWebSocket;
}

// waitFor polls cond until it returns a truthy value, which it resolves
// with, or rejects after timeout ms.
export async function waitFor(cond, timeout = 3000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error('waitFor: condition not met in ' + timeout + ' ms: ' + cond);
    await new Promise((r) => setTimeout(r, 2));
  }
}

// command waits for the n-th command (from 0) with op on ws and returns it.
export function command(ws, op, n = 0) {
  return waitFor(() => ws.commands().filter((c) => op === undefined || c.op === op)[n]);
}

// connected returns a Herald on a fake socket that is open and welcomed.
export async function connected(opts = {}) {
  const WS = fakeSocket();
  const h = new Herald('ws://herald.test/ws', { WebSocket: WS, pingInterval: 0, ...opts });
  const ws = await waitFor(() => WS.sockets[0]);
  ws.open();
  return { h, WS, ws };
}
