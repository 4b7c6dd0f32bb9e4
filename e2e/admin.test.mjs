// Browser end-to-end test of the admin page (/admin): it shows live
// numbers that change when messages flow, this node's channels, and
// publishes. Needs a running herald with an admin token:
// HERALD_URL=… HERALD_ADMIN_TOKEN=… node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { WAIT, launch, apiPublish } from './browser.mjs';

const base = (process.env.HERALD_URL || '').replace(/\/+$/, '');
const adminToken = process.env.HERALD_ADMIN_TOKEN || '';
let browser;

before(async () => {
  assert.ok(base && adminToken, 'set HERALD_URL and HERALD_ADMIN_TOKEN');
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

const publish = (channel, data) => apiPublish(base, channel, data);

test('the admin page shows live numbers that move with the traffic', { timeout: 60_000 }, async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));

  await page.goto(base + '/admin');
  await page.fill('#token', adminToken);
  await page.click('#connect');
  await page.locator('#state', { hasText: /^live$/ }).waitFor();
  await page.waitForFunction(() => document.querySelector('#nodes-count').textContent === '1');
  await page.locator('#nodes tr').first().waitFor();

  // A subscriber shows in the channel list; published messages move the
  // rates.
  const channel = 'admin-e2e-' + randomBytes(3).toString('hex');
  const sub = await context.newPage();
  await sub.goto(base + '/herald.js');
  await sub.evaluate(async (channel) => {
    const { Herald } = await import('/herald.js');
    const h = new Herald();
    await new Promise((resolve) => h.subscribe(channel, () => {}).on('subscribed', resolve));
  }, channel);
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
