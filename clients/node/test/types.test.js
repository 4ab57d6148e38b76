import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

// The shipped types (src/index.d.ts) compile against a program that uses
// the API as the README does, under strict TypeScript.
test('the TypeScript types compile', () => {
  const dir = fileURLToPath(new URL('..', import.meta.url));
  try {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'test/types'], { cwd: dir, stdio: 'pipe' });
  } catch (err) {
    assert.fail(`tsc:\n${err.stdout}${err.stderr}`);
  }
});
