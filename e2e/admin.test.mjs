// Browser end-to-end test of the admin page (/admin): it shows live
// numbers that change when messages flow, this node's channels, and
// publishes; it fits a desktop (1280 px) and a phone (390 px) screen: signed
// out, the token form comes first; signed in, nothing sticks out sideways,
// the number tiles sit in one row on the desktop, the cards stack on the
// phone and the nodes table stays inside its card. Needs a running herald
// with an admin token: HERALD_URL=… HERALD_ADMIN_TOKEN=… node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { WAIT, launch, apiPublish, subscribe } from './browser.mjs';

const base = (process.env.HERALD_URL || '').replace(/\/+$/, '');
const adminToken = process.env.HERALD_ADMIN_TOKEN || '';
const desktop = { width: 1280, height: 800 };
const phone = { width: 390, height: 844 };
// The number tiles, by the id of the number each shows.
const tiles = ['nodes-count', 'connections', 'channels', 'in-rate', 'out-rate', 'drops'];
let browser;

before(async () => {
  assert.ok(base && adminToken, 'set HERALD_URL and HERALD_ADMIN_TOKEN');
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

const publish = (channel, data) => apiPublish(base, channel, data);

// open loads the admin page, signed out, in a browser context of its own
// (at viewport, or Playwright's default size) and fails the test on any
// error in the page.
async function open(t, viewport) {
  const context = await browser.newContext(viewport ? { viewport } : {});
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));
  await page.goto(base + '/admin');
  return page;
}

// signIn signs page in with the admin token and waits until it is live and
// shows this node.
async function signIn(page) {
  await page.fill('#token', adminToken);
  await page.click('#connect');
  await page.locator('#state', { hasText: /^live$/ }).waitFor();
  await page.waitForFunction(() => document.querySelector('#nodes-count').textContent === '1');
  await page.locator('#nodes tr').first().waitFor();
}

test('the admin page shows live numbers that move with the traffic', { timeout: 60_000 }, async (t) => {
  const page = await open(t);
  await signIn(page);

  // A subscriber shows in the channel list; published messages move the
  // rates.
  const channel = 'admin-e2e-' + randomBytes(3).toString('hex');
  await subscribe(page.context(), base, [channel]);
  await page.locator('#channel-list tr', { hasText: channel }).waitFor();

  const stop = Date.now() + 8000;
  let inRate = 0;
  while (Date.now() < stop && inRate === 0) {
    for (let i = 0; i < 20; i++) await publish(channel, { i });
    await new Promise((r) => setTimeout(r, 300));
    inRate = Number(await page.textContent('#in-rate'));
  }
  assert.ok(inRate > 0, 'messages in per second moved');
  await page.waitForFunction(() => Number(document.querySelector('#out-rate').textContent) > 0);

  // The publish form.
  await page.fill('#pub-channel', channel);
  await page.fill('#pub-data', '{"from":"admin"}');
  await page.click('#publish button');
  await page.locator('#pub-result', { hasText: /^published at / }).waitFor();
});

test('a wrong token leaves the sign-in form; signing out comes back to it', { timeout: 30_000 }, async (t) => {
  const page = await open(t);
  await page.fill('#token', 'not-' + adminToken);
  await page.click('#connect');
  await page.locator('#state', { hasText: /^refused: check the token$/ }).waitFor();
  assert.ok(await page.isVisible('#signin'), 'the sign-in form shows');
  assert.ok(await page.isHidden('#dashboard'), 'the dashboard is hidden');

  await signIn(page);
  assert.ok(await page.isHidden('#signin'), 'signed in, the sign-in form is hidden');
  await page.click('#signout');
  await page.locator('#state', { hasText: /^signed out$/ }).waitFor();
  assert.ok(await page.isVisible('#signin'), 'signed out, the sign-in form shows');
  assert.ok(await page.isHidden('#dashboard'), 'signed out, the dashboard is hidden');
  assert.equal(await page.inputValue('#token'), '', 'the token is forgotten');
  await page.reload();
  assert.equal(await page.textContent('#state'), 'signed out', 'a reload does not sign in again');
});

// overflow lists the elements of the page that reach past the left or right
// edge of the viewport (scroll bar excluded), each as a selector with its
// left and right edges, and the document's widths. Of an element that sticks
// out and its descendants that do too, only the element is listed: it is
// where the layout gives way.
function overflow(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const selector = (el) => {
      const parts = [];
      for (; el && el !== document.documentElement; el = el.parentElement) {
        if (el.id) {
          parts.unshift('#' + el.id);
          break;
        }
        let part = el.localName + [...el.classList].map((c) => '.' + c).join('');
        const same = [...(el.parentElement?.children || [])].filter((s) => s.localName === el.localName);
        if (same.length > 1) part += `:nth-of-type(${same.indexOf(el) + 1})`;
        parts.unshift(part);
      }
      return parts.join(' > ');
    };
    const out = [];
    const over = new Set();
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.left >= -0.5 && r.right <= width + 0.5) continue;
      over.add(el);
      if (!over.has(el.parentElement)) out.push(`${selector(el)} spans ${Math.round(r.left)}…${Math.round(r.right)}`);
    }
    return { width, scrollWidth: document.documentElement.scrollWidth, out };
  });
}

// assertNoOverflow fails unless the page fits the viewport's width.
async function assertNoOverflow(page, when) {
  const o = await overflow(page);
  assert.deepEqual(o.out, [], `${when}: elements past the edge of a ${o.width} px wide viewport`);
  assert.ok(o.scrollWidth <= o.width, `${when}: the page scrolls sideways: ${o.scrollWidth} px wide in a ${o.width} px viewport`);
}

// box returns the bounding rectangle of the element matching selector.
function box(page, selector) {
  return page.locator(selector).evaluate((el) => el.getBoundingClientRect().toJSON());
}

// cards returns the rectangles of the page's visible sections, in document
// order.
function cards(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('main section')]
      .map((s) => ({ label: s.getAttribute('aria-label') || s.getAttribute('aria-labelledby') || s.id, ...s.getBoundingClientRect().toJSON() }))
      .filter((r) => r.width > 0 && r.height > 0),
  );
}

for (const viewport of [desktop, phone]) {
  const at = `at ${viewport.width}×${viewport.height}`;

  test(`signed out ${at}, the token form is the first thing on the page`, { timeout: 30_000 }, async (t) => {
    const page = await open(t, viewport);
    const form = await box(page, '#signin');
    const header = await box(page, 'header');
    assert.ok(form.top >= header.bottom - 0.5, `the form (top ${form.top}) sits below the header (bottom ${header.bottom})`);
    assert.ok(form.bottom <= viewport.height, `the whole form is on the first screen: bottom ${form.bottom} of ${viewport.height}`);
    for (const c of await cards(page)) {
      assert.ok(c.top >= form.bottom - 0.5, `section ${c.label} (top ${c.top}) comes after the token form (bottom ${form.bottom})`);
    }
    await assertNoOverflow(page, 'signed out');
  });

  test(`signed in ${at}, the dashboard fits the width`, { timeout: 30_000 }, async (t) => {
    // A long channel name with nowhere to break a line, as long as the
    // protocol allows, and a few ordinary ones.
    const id = randomBytes(3).toString('hex');
    const long = `layout-${id}-` + 'x'.repeat(255 - `layout-${id}-`.length);
    const page = await open(t, viewport);
    await subscribe(page.context(), base, [long, `layout-${id}-a`, `layout-${id}-b`]);
    await signIn(page);
    await page.locator('#channel-list tr', { hasText: long }).waitFor();
    await assertNoOverflow(page, 'signed in');

    const card = await page.locator('#nodes').evaluate((el) => el.closest('section').getBoundingClientRect().toJSON());
    const table = await page.locator('#nodes').evaluate((el) => el.closest('table').getBoundingClientRect().toJSON());
    assert.ok(
      table.left >= card.left - 0.5 && table.right <= card.right + 0.5 && table.top >= card.top - 0.5 && table.bottom <= card.bottom + 0.5,
      `the nodes table (${table.left}…${table.right} × ${table.top}…${table.bottom}) lies inside its card (${card.left}…${card.right} × ${card.top}…${card.bottom})`,
    );

    const boxes = await Promise.all(tiles.map((id) => box(page, '#' + id)));
    boxes.forEach((b, i) => assert.ok(b.width > 0 && b.height > 0, `tile #${tiles[i]} shows`));
    for (const id of ['chart-conns', 'chart-rates', 'channel-list', 'publish']) {
      const b = await box(page, '#' + id);
      assert.ok(b.width > 0 && b.height > 0, `#${id} shows`);
    }
    const tops = boxes.map((b) => Math.round(b.top));
    if (viewport === desktop) {
      assert.deepEqual(tops, tiles.map(() => tops[0]), `the tiles ${tiles.join(', ')} sit in one row: tops ${tops}`);
    } else {
      // One column: each card starts below the one before, at the same
      // left edge and width.
      const cs = await cards(page);
      assert.ok(cs.length >= 4, `the dashboard's sections show: ${JSON.stringify(cs)}`);
      for (let i = 1; i < cs.length; i++) {
        assert.ok(cs[i].top >= cs[i - 1].bottom - 0.5, `section ${cs[i].label} is below ${cs[i - 1].label}`);
        assert.equal(Math.round(cs[i].left), Math.round(cs[0].left), `section ${cs[i].label} starts at the same left edge as ${cs[0].label}`);
        assert.equal(Math.round(cs[i].width), Math.round(cs[0].width), `section ${cs[i].label} is as wide as ${cs[0].label}`);
      }
    }
  });
}
