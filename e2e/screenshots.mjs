// Regenerates the admin page's screenshots in docs/img (admin-1280.png and
// admin-390.png): builds herald, starts it with an admin token on a free
// loopback port, opens a few subscribers and publishes steady traffic so the
// page shows live numbers, signs in at a desktop and a phone width, and
// writes one full-page PNG of each. Run it from the repository root:
//
//	node e2e/screenshots.mjs
//
// It is not a test (it writes files); the layout itself is asserted by
// e2e/admin.test.mjs. Needs Go, Chromium (/usr/bin/chromium or
// $CHROMIUM) and `npm ci --prefix e2e`.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { launch, apiPublish, subscribe } from './browser.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'docs', 'img');
const token = 'screenshot-admin-token';
const widths = [
  { name: 'admin-1280.png', viewport: { width: 1280, height: 800 } },
  { name: 'admin-390.png', viewport: { width: 390, height: 844 } },
];
// Channels and how many clients subscribe to each: what the channel list
// and the totals show.
const channels = { 'chat:lobby': 6, 'chat:support': 3, 'orders.eu': 2, 'prices.eur-usd': 4, 'alerts': 1 };
const WARMUP = 60_000; // ms of traffic before the first screenshot: the charts show the last minute

// freePort asks the system for a free loopback port.
async function freePort() {
  const srv = createServer();
  await new Promise((ok, fail) => srv.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = srv.address();
  await new Promise((ok) => srv.close(ok));
  return port;
}

// startHerald builds and runs `herald serve`; it resolves once /healthz
// answers, with the base URL and a stop function.
async function startHerald() {
  const dir = await mkdtemp(join(tmpdir(), 'herald-screenshots-'));
  const bin = join(dir, 'herald');
  await promisify(execFile)('go', ['build', '-o', bin, './cmd/herald'], { cwd: root });
  const port = await freePort();
  const child = spawn(bin, ['serve', '--addr', `127.0.0.1:${port}`, '--admin-token', token, '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const gone = new Promise((ok) => child.once('exit', ok));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await gone;
    await rm(dir, { recursive: true, force: true });
  };
  const base = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 10_000; ; ) {
    if (child.exitCode !== null) throw new Error(`herald exited with ${child.exitCode}`);
    try {
      if ((await fetch(base + '/healthz')).ok) return { base, stop };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error('herald did not answer /healthz within 10 s');
    }
    await delay(100);
  }
}

const { base, stop } = await startHerald();
let browser;
let running = true;
let trafficError;
let traffic;
try {
  // Without scroll bars, as on a phone: the page gets the whole width.
  browser = await launch(['--hide-scrollbars']);
  // The subscribers: one herald.js client each.
  await subscribe(await browser.newContext(), base, Object.entries(channels).flatMap(([channel, n]) => Array(n).fill(channel)));

  // Steady traffic that swells and ebbs, so the rate chart has a shape.
  traffic = (async () => {
    const names = Object.keys(channels);
    for (let tick = 0; running; tick++) {
      const n = 4 + Math.round(3 * Math.sin(tick / 8));
      for (let i = 0; i < n; i++) await apiPublish(base, names[(tick + i) % names.length], { tick, i });
      await delay(250);
    }
  })().catch((err) => {
    trafficError = err;
  });

  // Sign in once and let the charts fill, then take each width.
  const page = await (await browser.newContext({ viewport: widths[0].viewport })).newPage();
  await page.goto(base + '/admin');
  await page.fill('#token', token);
  await page.click('#connect');
  await page.locator('#state', { hasText: /^live$/ }).waitFor();
  await page.locator('#nodes tr').first().waitFor();
  await page.locator('#channel-list tr').nth(Object.keys(channels).length - 1).waitFor();
  await delay(WARMUP);
  if (trafficError) throw trafficError;
  await mkdir(out, { recursive: true });
  for (const { name, viewport } of widths) {
    await page.setViewportSize(viewport);
    // The charts redraw each second, at the size they have on the screen.
    await page.waitForFunction(() =>
      [...document.querySelectorAll('canvas')].every((c) => c.width === Math.round(c.clientWidth * devicePixelRatio)),
    );
    await page.screenshot({ path: join(out, name), fullPage: true });
    console.log('wrote', join('docs', 'img', name));
  }
} finally {
  running = false;
  await traffic;
  await browser?.close();
  await stop();
}
