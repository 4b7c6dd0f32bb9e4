// herald.js as an npm package, the way an application uses it: packed as
// npm packs it, installed into an application, imported by name, bundled
// with esbuild and run in Chromium against a running herald. Packed twice:
// clients/js (npm install <path>, or a published package), and the
// repository root (what npm install <git URL> installs).
// Needs a running herald: HERALD_URL=http://127.0.0.1:8080 node --test e2e/
// Its size is measured by size.test.mjs, which needs no server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { launch, newPage, apiPublish } from './browser.mjs';

const base = (process.env.HERALD_URL || '').replace(/\/+$/, '');
const repo = dirname(dirname(fileURLToPath(import.meta.url)));
let browser;

before(async () => {
  assert.ok(base, 'set HERALD_URL to the base URL of a running herald, e.g. http://127.0.0.1:8080');
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

// install packs the package in dir as npm does and installs the tarball
// into a new application, whose folder it returns.
function install(t, dir) {
  const tmp = mkdtempSync(join(tmpdir(), 'herald-package-'));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));
  const packed = execFileSync('npm', ['pack', dir, '--pack-destination', tmp, '--json', '--ignore-scripts'], { encoding: 'utf8' });
  const tarball = join(tmp, JSON.parse(packed)[0].filename);
  const app = join(tmp, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], { cwd: app, stdio: 'pipe' });
  return app;
}

// bundle bundles an entry that imports herald by name in app, and returns
// the bundle and the files it was made of.
async function bundle(app) {
  writeFileSync(
    join(app, 'main.js'),
    "import { Herald } from 'herald';\nimport DefaultHerald from 'herald';\nwindow.bundled = { Herald, isDefault: Herald === DefaultHerald };\n",
  );
  const out = await esbuild.build({
    absWorkingDir: app,
    entryPoints: ['main.js'],
    bundle: true,
    format: 'iife',
    minify: true,
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  return { code: out.outputFiles[0].text, inputs: Object.keys(out.metafile.inputs) };
}

for (const [what, dir] of [
  ['clients/js (npm install <path>)', join(repo, 'clients', 'js')],
  ['the repository (npm install <git URL>)', repo],
]) {
  test(`herald.js bundled from ${what} connects, subscribes and receives in Chromium`, { timeout: 120_000 }, async (t) => {
    const app = install(t, dir);
    const installed = join(app, 'node_modules', 'herald');
    const pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    assert.match(readFileSync(join(installed, pkg.exports['.'].types), 'utf8'), /export class Herald/, 'the types come along');

    const { code, inputs } = await bundle(app);
    assert.deepEqual(inputs, [`node_modules/herald/${pkg.exports['.'].default.replace(/^\.\//, '')}`, 'main.js']);

    const page = await newPage(browser, t);
    const paths = [];
    page.on('request', (r) => paths.push(new URL(r.url()).pathname));
    // A page of the server's own (a page fulfilled by the test would be
    // kept from reaching a loopback server), with nothing but the bundle.
    await page.route((url) => url.pathname === '/favicon.ico', (route) => route.fulfill({ status: 204 }));
    await page.goto(base + '/healthz');
    await page.addScriptTag({ content: code });
    await page.waitForFunction(() => window.bundled);
    assert.equal(await page.evaluate(() => window.bundled.isDefault), true, 'Herald is also the default export');

    const channel = 'bundle-' + randomBytes(4).toString('hex');
    await page.evaluate(async (channel) => {
      const h = new window.bundled.Herald();
      window.h = h;
      window.got = [];
      const sub = h.subscribe(channel, (data) => window.got.push(data));
      await new Promise((resolve, reject) => {
        sub.on('subscribed', resolve);
        sub.on('error', reject);
      });
    }, channel);
    assert.equal(await page.evaluate(() => window.h.state), 'connected');
    await apiPublish(base, channel, { from: 'api' });
    const offset = await page.evaluate((channel) => window.h.publish(channel, { from: 'page' }), channel);
    assert.match(offset, /\S/);
    await page.waitForFunction(() => window.got.length >= 2);
    assert.deepEqual(await page.evaluate(() => window.got), [{ from: 'api' }, { from: 'page' }]);
    await page.evaluate(() => window.h.close());
    assert.ok(!paths.includes('/herald.js'), `the page used its bundle, not the server's /herald.js: ${paths}`);
  });
}
