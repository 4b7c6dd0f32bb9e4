// Browser end-to-end test of the demo page's live feed, which reads a room
// with a plain EventSource from /sse beside the chat's WebSocket; and of a
// bare EventSource in a page that loads nothing else.
// Needs a running herald: HERALD_URL=http://127.0.0.1:8080 node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { WAIT, launch, person as open, join, say, apiPublish } from './browser.mjs';

const base = (process.env.HERALD_URL || '').replace(/\/+$/, '');
let browser;

before(async () => {
  assert.ok(base, 'set HERALD_URL to the base URL of a running herald, e.g. http://127.0.0.1:8080');
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

const token = () => randomBytes(3).toString('hex');

// openFeed shows the live feed and waits until its stream is open.
async function openFeed(page) {
  await page.click('#tab-feed');
  await page.locator('#feed').waitFor();
  await page.locator('#sse-state', { hasText: /^open$/ }).waitFor();
}

// closeFeed goes back to the chat and waits until the stream is closed.
async function closeFeed(page) {
  await page.click('#tab-chat');
  await page.locator('#messages').waitFor();
  await page.locator('#sse-state[data-state="closed"]').waitFor({ state: 'attached' });
}

// feedItem waits for the feed entry holding text and returns it.
async function feedItem(page, text) {
  const item = page.locator('#feed .feed-item', { hasText: text });
  await item.waitFor();
  return item;
}

// publishFrom publishes data to channel with herald.js from inside page,
// on a connection of its own.
function publishFrom(page, channel, data) {
  return page.evaluate(async ([channel, data]) => {
    const { Herald } = await import('/herald.js');
    const h = new Herald();
    try {
      return await h.publish(channel, data);
    } finally {
      h.close();
    }
  }, [channel, data]);
}

const publish = (channel, data) => apiPublish(base, channel, data);

test('the live feed shows what the room says, as it comes', { timeout: 60_000 }, async (t) => {
  const room = 'feed-' + token();
  const [ann, ben] = [await open(browser, t, base), await open(browser, t, base)];

  await join(ann, 'Ann', room);
  assert.equal(await ann.textContent('#sse-state'), 'closed', 'no stream while the chat is shown');
  await openFeed(ann);
  assert.equal(await ann.isVisible('#messages'), false, 'the feed replaces the messages');
  assert.equal(await ann.textContent('#sse-last-id'), 'none');

  // Ben, in the chat view, joins: his hello is a small line in Ann's feed.
  await join(ben, 'Ben', room);
  await ann.locator('#feed .feed-item.hello', { hasText: 'Ben joined' }).waitFor();

  const hi = 'hi from Ben ' + token();
  await say(ben, hi);
  const item = await feedItem(ann, hi);
  assert.equal(await item.locator('.from').textContent(), 'Ben');
  assert.equal(await item.locator('.text').textContent(), hi);

  // The last event id is shown shortened, whole in its title.
  const id = await ann.getAttribute('#sse-last-id', 'title');
  assert.match(id, /^[A-Za-z0-9_-]{16,}$/, 'the cursor is a URL-safe id');
  const shown = await ann.textContent('#sse-last-id');
  assert.ok(shown.length < id.length && id.includes(shown.replace(/…/g, '')), `${shown} shortens ${id}`);

  // A newline in the text arrives intact.
  const lines = `first line ${token()}\nsecond line`;
  await publishFrom(ben, 'chat:' + room, { name: 'Ben', text: lines, ts: Date.now() });
  const multi = await feedItem(ann, lines.split('\n')[0]);
  assert.equal(await multi.locator('.text').textContent(), lines);
  assert.notEqual(await ann.getAttribute('#sse-last-id', 'title'), id, 'the last id moves on');
  assert.equal(await ann.isVisible('#sse-notice'), false, 'nothing was missed');

  // Back to the chat: the stream is closed, and Ann's chat has it all.
  await closeFeed(ann);
  await ann.locator('#messages .msg', { hasText: hi }).waitFor();
});

test('a live feed is nobody in the room: the Here list leaves SSE streams out', { timeout: 60_000 }, async (t) => {
  const room = 'here-' + token();
  const [ann, ben] = [await open(browser, t, base), await open(browser, t, base)];
  const names = async (page) => (await page.locator('#who li').allTextContents()).sort();

  await join(ann, 'Ann', room);
  await openFeed(ann); // Ann's own stream joins the room
  // Ben comes after it: his list starts from a snapshot that holds Ann's
  // stream, and Ann hears of him after she heard of her stream.
  await join(ben, 'Ben', room);
  await ann.locator('#who li', { hasText: 'Ben' }).waitFor();
  await ben.locator('#who li', { hasText: 'Ann' }).waitFor();
  assert.deepEqual(await names(ann), ['Ann (you)', 'Ben']);
  assert.deepEqual(await names(ben), ['Ann', 'Ben (you)']);
  assert.equal(await ann.textContent('#count'), '(2)');
  assert.equal(await ben.textContent('#count'), '(2)');
});

test('the feed resumes where it left off, and says when it cannot', { timeout: 60_000 }, async (t) => {
  const room = 'feed-' + token();
  const channel = 'chat:' + room;
  const ann = await open(browser, t, base);
  await join(ann, 'Ann', room);
  await openFeed(ann);
  const first = 'before ' + token();
  await publish(channel, { name: 'Cy', text: first });
  await feedItem(ann, first);

  // Closed for a while, the feed gets what it missed when opened again.
  await closeFeed(ann);
  const meanwhile = 'meanwhile ' + token();
  await publish(channel, { name: 'Cy', text: meanwhile });
  await openFeed(ann);
  await feedItem(ann, meanwhile);
  assert.equal(await ann.locator('#feed .feed-item', { hasText: first }).count(), 1, 'no duplicate');
  assert.equal(await ann.isVisible('#sse-notice'), false);

  // Closed while more than the history holds (100) goes by: a notice.
  await closeFeed(ann);
  for (let i = 1; i <= 105; i++) await publish(channel, { name: 'Cy', text: `flood ${i}` });
  await openFeed(ann);
  await ann.locator('#sse-notice', { hasText: /missed/ }).waitFor();
  await feedItem(ann, 'flood 105');
  await ann.click('#sse-notice');
  await ann.locator('#sse-notice').waitFor({ state: 'hidden' });
});

test('a bare EventSource in a page gets what a chat page publishes', { timeout: 60_000 }, async (t) => {
  const room = 'feed-' + token();
  const channel = 'chat:' + room;
  const ben = await open(browser, t, base);
  await join(ben, 'Ben', room);

  // A blank page of the server's origin: no app, no SDK.
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  t.after(() => assert.deepEqual(errors, [], 'errors in the blank page'));
  await page.route((url) => url.href === base + '/', (route) =>
    route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>blank</title>' }));
  await page.goto(base + '/');
  assert.equal(await page.locator('script').count(), 0);

  await page.evaluate((channel) => {
    window.events = [];
    const es = new EventSource('/sse?channel=' + encodeURIComponent(channel));
    window.es = es;
    for (const type of ['message', 'herald.unrecovered']) {
      es.addEventListener(type, (e) => window.events.push({ type: e.type, data: e.data, id: e.lastEventId }));
    }
    return new Promise((resolve, reject) => {
      es.onopen = resolve;
      es.onerror = () => reject(new Error('EventSource failed, readyState ' + es.readyState));
    });
  }, channel);
  t.after(() => page.evaluate(() => window.es.close()).catch(() => {}));

  const said = 'said by Ben ' + token();
  await say(ben, said);
  const lines = `two ${token()}\nlines`;
  await publishFrom(ben, channel, lines);
  // Only what was published after the stream opened comes (Ben's hello
  // went before); filtered anyway, in case it was late.
  const got = () => window.events.filter((e) => !e.data.includes('"type":"hello"'));
  await page.waitForFunction(`(${got})().length >= 2`);
  const events = await page.evaluate(`(${got})()`);
  assert.deepEqual(events.map((e) => e.type), ['message', 'message']);
  const chat = JSON.parse(events[0].data);
  assert.equal(chat.name, 'Ben');
  assert.equal(chat.text, said);
  assert.equal(events[1].data, lines, 'a string arrives as itself, line break and all');
  for (const e of events) assert.match(e.id, /^[A-Za-z0-9_-]+$/);
  assert.notEqual(events[0].id, events[1].id);
});

test('herald.js over SSE where WebSocket is blocked: a page without WebSocket receives pushes', { timeout: 60_000 }, async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  // The page's network lets no WebSocket through.
  await context.addInitScript(() => {
    delete window.WebSocket;
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));
  await page.goto(base + '/herald.js'); // same origin; nothing else loaded
  const channel = 'sse-sdk-' + token();
  await page.evaluate(async (channel) => {
    if (typeof WebSocket !== 'undefined') throw new Error('WebSocket is still there');
    const { Herald } = await import('/herald.js');
    window.got = [];
    window.h = new Herald({ transport: 'sse' });
    await new Promise((resolve) => {
      window.h.subscribe(channel, (data, m) => window.got.push({ data, offset: m.offset })).on('subscribed', resolve);
    });
  }, channel);
  assert.equal(await page.evaluate(() => window.h.state), 'connected');
  for (const data of ['one', { two: 2 }, 'three']) await publish(channel, data);
  await page.waitForFunction(() => window.got.length === 3);
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(got.map((m) => m.data), ['one', { two: 2 }, 'three']);
  assert.ok(got.every((m) => /^\d+-/.test(m.offset)), `offsets ${JSON.stringify(got)}`);
  const refused = await page.evaluate(() => window.h.publish('x', 1).then(() => 'published', (e) => e.code));
  assert.equal(refused, 'bad_request', 'publishing needs the WebSocket transport');
});
