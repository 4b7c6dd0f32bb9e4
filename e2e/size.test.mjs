// herald.js stays small: at most 8 KiB minified (esbuild, as an application's
// bundler would) and gzipped. Needs no server or browser:
// node --test e2e/size.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const repo = dirname(dirname(fileURLToPath(import.meta.url)));
const MAX_SIZE = 8 * 1024; // bytes of herald.js, minified and gzipped

test(`herald.js is at most ${MAX_SIZE} bytes minified and gzipped`, async (t) => {
  const out = await esbuild.build({
    entryPoints: [join(repo, 'clients', 'js', 'herald.js')],
    format: 'esm',
    minify: true,
    write: false,
    logLevel: 'silent',
  });
  const size = gzipSync(out.outputFiles[0].contents, { level: 9 }).length;
  t.diagnostic(`herald.js: ${size} bytes minified (esbuild ${esbuild.version}) and gzipped (level 9)`);
  assert.ok(size <= MAX_SIZE, `herald.js is ${size} bytes minified and gzipped, over ${MAX_SIZE}`);
});
