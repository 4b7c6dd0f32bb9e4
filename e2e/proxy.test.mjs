// Browser end-to-end test of herald asking the application beside it: a
// page's herald.js calls rpc, and gets the messages of a channel its
// connection was subscribed to by the connect proxy, as the application's
// own session cookie names the user.
// Starts its own herald and application: HERALD_BIN=path/to/herald node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { WAIT, launch, freePort, startHerald, stopHeralds, apiPublish } from './browser.mjs';

let browser;
let app; // the application herald asks
const asked = []; // what it was asked: [path, body, cookie]

before(async () => {
  browser = await launch();
  app = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const q = JSON.parse(body);
    asked.push([req.url, q, req.headers.cookie]);
    const user = /(?:^|;\s*)session=([^;]+)/.exec(req.headers.cookie || '')?.[1];
    let answer;
    if (!user) answer = { error: { code: 'unauthorized', message: 'sign in first' } };
    else if (req.url === '/connect') answer = { result: { user, channels: ['inbox:' + user] } };
    else if (req.url === '/rpc' && q.method === 'whoami') answer = { result: { data: { user: q.user, echo: q.data } } };
    else answer = { error: { code: 'not_found', message: 'no such method' } };
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(answer));
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
});

after(async () => {
  await stopHeralds();
  await browser?.close();
  await new Promise((resolve) => app?.close(resolve));
});

test('rpc and a connect proxy\'s server-side subscription reach herald.js in a page', { timeout: 60_000 }, async (t) => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const appURL = `http://127.0.0.1:${app.address().port}`;
  await startHerald(port, ['--proxy-connect', appURL + '/connect', '--proxy-rpc', appURL + '/rpc']);

  const context = await browser.newContext();
  t.after(() => context.close());
  await context.addCookies([{ name: 'session', value: 'ann', url: base }]);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(base + '/herald.js');
  const first = await page.evaluate(async () => {
    const { Herald } = await import('/herald.js');
    const h = new Herald();
    window.h = h;
    window.got = [];
    window.subscribed = new Promise((resolve) => {
      h.on('subscription', (sub) => {
        sub.on('message', (data, m) => window.got.push([m.channel, data]));
        resolve(sub.channel);
      });
    });
    const answer = await h.rpc('whoami', { x: 1 });
    let refused;
    try {
      await h.rpc('nope');
    } catch (e) {
      refused = e.code;
    }
    return { answer, refused, user: h.user, channel: await window.subscribed };
  });
  assert.deepEqual(first, { answer: { user: 'ann', echo: { x: 1 } }, refused: 'not_found', user: 'ann', channel: 'inbox:ann' });
  const connect = asked.find(([path]) => path === '/connect');
  assert.equal(connect[1].transport, 'websocket');
  assert.equal(connect[2], 'session=ann', 'the page\'s own cookie reached the application');

  await apiPublish(base, 'inbox:ann', { text: 'for ann' });
  await page.waitForFunction(() => window.got.length === 1);
  assert.deepEqual(await page.evaluate(() => window.got), [['inbox:ann', { text: 'for ann' }]]);

  // Without the session cookie the application refuses the connection.
  const anon = await browser.newContext();
  t.after(() => anon.close());
  const res = await (await anon.newPage()).request.get(base + '/sse?channel=x');
  assert.equal(res.status(), 401);
  assert.deepEqual(errors, []);
});
