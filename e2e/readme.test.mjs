// Runs the html and js blocks of README.md, exactly as written, in headless
// Chromium, each in a fresh page of the herald at HERALD_URL, and checks
// what each shows by what it logs with console.log.
//
// The raw-mode block names ws://localhost:8080 itself, so HERALD_URL is the
// README's own quick-start server, http://localhost:8080; readme/readme_test.go
// starts it (with the API key HERALD_API_KEY and a token secret), makes a
// client token for it (HERALD_TOKEN) and runs this file. web/e2e_test.go,
// whose server listens elsewhere, leaves it out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { WAIT, launch } from './browser.mjs';

const base = process.env.HERALD_URL || '';
const apiKey = process.env.HERALD_API_KEY || '';
const token = process.env.HERALD_TOKEN || '';
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const OFFSET = /^[0-9]+-[0-9a-f]+$/;

// blocks returns README.md's fenced blocks of the given languages.
function blocks(...langs) {
  const out = [];
  for (const m of readme.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)) {
    if (langs.includes(m[1])) out.push({ lang: m[1], text: m[2] });
  }
  return out;
}

// key names a block by its first line, without a trailing // comment.
function key(block) {
  return block.text.split('\n')[0].replace(/\s+\/\/.*$/, '');
}

// apiPublish publishes through the server API with the key; event is
// optional.
async function apiPublish(channel, data, event) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(event ? { channel, data, event } : { channel, data }),
  });
  assert.equal(res.status, 200, `publish: ${res.status} ${await res.text()}`);
}

let browser;

before(async () => {
  assert.equal(base, 'http://localhost:8080', 'set HERALD_URL to the README\'s quick-start server, http://localhost:8080');
  assert.ok(apiKey && token, 'set HERALD_API_KEY and HERALD_TOKEN (a client token for that server)');
  browser = await launch();
});

after(() => browser?.close());

// page opens a page of the server at base (its herald.js, a page with
// nothing in it), where every console.log call is kept in logs as the
// list of its arguments; fails the test on any error in the page.
async function page(t) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const p = await context.newPage();
  p.setDefaultTimeout(WAIT);
  const logs = [];
  const errors = [];
  await p.exposeFunction('__readmeLog', (...args) => logs.push(args));
  await p.addInitScript(() => {
    const log = console.log.bind(console);
    console.log = (...args) => {
      window.__readmeLog(...args);
      log(...args);
    };
  });
  p.on('pageerror', (e) => errors.push(e.message));
  p.on('console', (m) => {
    // The browser asks for /favicon.ico for a page of its own; herald has none.
    if (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) errors.push(`${m.text()} ${m.location().url}`);
  });
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));
  await p.goto(base + '/herald.js');
  return { page: p, logs, errors };
}

// logged waits until logs holds a call whose arguments match, and returns
// them.
async function logged(logs, errors, what, match) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const got = logs.find(match);
    if (got) return got;
    assert.deepEqual(errors, [], `errors in the page while waiting for ${what}`);
    assert.ok(Date.now() < deadline, `no console.log of ${what}; logged: ${JSON.stringify(logs)}`);
    await delay(50);
  }
}

// checks runs each block, by key, in a page of its own and checks what it
// logs.
const checks = {
  // The SDK: a whole page. It logs the connection's states and the
  // message it publishes, which it receives on its own subscription.
  '<script type="module">': async (t, text) => {
    const { page: p, logs, errors } = await page(t);
    await p.setContent(text);
    const [offset, data] = await logged(logs, errors, 'its message: offset, data', (l) => l.length === 2 && OFFSET.test(l[0]));
    assert.deepEqual(data, { text: 'hello' });
    const states = logs.filter((l) => l.length === 1).map((l) => l[0]);
    assert.deepEqual(states, ['connecting', 'connected'], 'the states it logged');
    assert.match(offset, OFFSET);
  },

  // Raw mode: it sends 'hi' and receives it back.
  "const ws = new WebSocket('ws://localhost:8080/ws/chat');": async (t, text) => {
    const { page: p, logs, errors } = await page(t);
    await p.addScriptTag({ content: text });
    await logged(logs, errors, "its own 'hi'", (l) => l.length === 1 && l[0] === 'hi');
  },

  // SSE: a message published without a name reaches onmessage with its id,
  // one published as "headline" reaches the headline listener.
  "const es = new EventSource('/sse?channel=news&channel=alerts');": async (t, text) => {
    const { page: p, logs, errors } = await page(t);
    await p.addScriptTag({ content: text });
    await p.waitForFunction(() => es.readyState === EventSource.OPEN);
    await apiPublish('alerts', { title: 'unnamed' });
    await apiPublish('news', { title: 'from the back end' }, 'headline');
    const [id] = await logged(logs, errors, 'the unnamed event: id, data', (l) => l.length === 2 && l[1] === '{"title":"unnamed"}');
    assert.ok(id, 'the unnamed event has an id (lastEventId)');
    await logged(logs, errors, 'the headline event: data', (l) => l.length === 1 && l[0] === '{"title":"from the back end"}');
    assert.ok(!logs.some((l) => l.length === 2 && l[1].includes('from the back end')), 'the headline event reached onmessage too');
  },

  // A token: the harness gives the block Herald and token; the connection
  // it makes is the token's user's.
  'const h = new Herald(undefined, { token });': async (t, text) => {
    const { page: p } = await page(t);
    await p.addScriptTag({ type: 'module', content: "import { Herald } from '/herald.js'; window.Herald = Herald;" });
    await p.waitForFunction(() => window.Herald);
    await p.evaluate((tok) => { window.token = tok; }, token);
    await p.addScriptTag({ content: text });
    await p.waitForFunction(() => h instanceof Herald && h.state === 'connected');
    assert.equal(await p.evaluate(() => h.user), 'ann', 'the user the server took from the token');
  },
};

const found = blocks('html', 'js');

test('every html and js block of README.md has a check, and every check a block', () => {
  assert.deepEqual(found.map(key).sort(), Object.keys(checks).sort());
});

for (const block of found) {
  const check = checks[key(block)];
  if (check) test(`README.md ${block.lang}: ${key(block)}`, { timeout: 3 * WAIT }, (t) => check(t, block.text));
}
