import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

// The published package: ESM with its types, no runtime dependencies, and
// only the source and README in the tarball.
test('npm pack: no runtime dependencies, source and types only', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url)));
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  assert.equal(pkg.optionalDependencies, undefined);
  const [info] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--loglevel=error'], { cwd: new URL('..', import.meta.url) }));
  const files = info.files.map((f) => f.path).sort();
  assert.ok(files.includes('src/index.d.ts'), 'types shipped');
  assert.ok(files.includes('src/index.js'));
  for (const f of files) assert.match(f, /^(src\/[a-z.]+\.(js|d\.ts)|README\.md|package\.json)$/, f);
});
