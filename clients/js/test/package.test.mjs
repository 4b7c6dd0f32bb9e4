// herald.js as an npm package: clients/js/package.json for `npm install
// <path>` and bundlers, and the repository's root package.json, the same
// package, for `npm install <git URL>` (npm installs a repository from its
// root only). The browser test that bundles it is e2e/package.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const dir = dirname(dirname(fileURLToPath(import.meta.url))); // clients/js
const root = dirname(dirname(dir));
const manifest = (d) => JSON.parse(readFileSync(join(d, 'package.json'), 'utf8'));
const pkg = manifest(dir);

// packed lists the files `npm pack` would put in the package of d.
function packed(d) {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: d, encoding: 'utf8' });
  return JSON.parse(out)[0].files.map((f) => f.path).sort();
}

test('package.json: an ES module with its types and no dependencies', () => {
  assert.equal(pkg.name, 'herald');
  assert.equal(pkg.type, 'module');
  assert.deepEqual(pkg.exports, {
    '.': { types: './herald.d.ts', default: './herald.js' },
    './package.json': './package.json',
  });
  assert.equal(pkg.types, './herald.d.ts');
  assert.equal(pkg.main, './herald.js', 'for tools that predate exports');
  assert.equal(pkg.sideEffects, false, 'importing herald.js runs nothing: bundlers may drop what is unused');
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies', 'devDependencies', 'scripts']) {
    assert.equal(pkg[field], undefined, `no ${field}`);
  }
});

test('npm pack in clients/js packs herald.js, herald.d.ts, README.md and package.json only', () => {
  assert.deepEqual(packed(dir), ['README.md', 'herald.d.ts', 'herald.js', 'package.json']);
});

test('the root package.json is the same package, for git installs', () => {
  const top = manifest(root);
  for (const field of ['name', 'version', 'description', 'license', 'type', 'sideEffects']) {
    assert.deepEqual(top[field], pkg[field], field);
  }
  const under = (p) => p.replace(/^\.\//, './clients/js/');
  assert.deepEqual(top.exports, {
    '.': { types: under(pkg.exports['.'].types), default: under(pkg.exports['.'].default) },
    './package.json': './package.json',
  });
  assert.equal(top.types, under(pkg.types));
  assert.equal(top.main, under(pkg.main));
  assert.deepEqual(packed(root), ['LICENSE', 'README.md', 'clients/js/README.md', 'clients/js/herald.d.ts', 'clients/js/herald.js', 'package.json']);
});

test("the version is herald's: its newest release tag (vX.Y.Z), 0.0.0 before the first", () => {
  const tags = execFileSync('git', ['tag', '--list', 'v*', '--merged', 'HEAD', '--sort=-v:refname'], { cwd: root, encoding: 'utf8' })
    .split('\n')
    .filter((t) => /^v\d+\.\d+\.\d+$/.test(t));
  const want = tags.length ? tags[0].slice(1) : '0.0.0';
  assert.equal(pkg.version, want, `package.json says ${pkg.version}, herald's newest release is ${tags[0] || 'none'}: set the version to ${want}`);
});
