// Type-checks ../*.json against types.ts (Grafana's @grafana/schema): each dashboard is written to
// gen/NAME.ts as a literal of type ArchipelDashboard, then tsc checks them all. Not a JSON import:
// TypeScript widens an imported JSON's strings to `string`, so a wrong panel type or variable
// type would pass, and it skips excess property checks, so a misspelt field would too.
// Exits with tsc's status; `npm ci` first (tests/run does it).

import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = join(here, '..');
const gen = join(here, 'gen');
rmSync(gen, { recursive: true, force: true });
mkdirSync(gen);

const names = readdirSync(dashboards).filter((f) => f.endsWith('.json'));
if (names.length === 0) {
  console.error(`no dashboards in ${dashboards}`);
  process.exit(1);
}
for (const file of names) {
  const json = JSON.parse(readFileSync(join(dashboards, file), 'utf8'));
  const name = file.replace(/\.json$/, '');
  writeFileSync(
    join(gen, `${name}.ts`),
    `// Written by check.mjs from ../../${file}.\n` +
      `import type { ArchipelDashboard } from '../types';\n\n` +
      `export const dashboard: ArchipelDashboard = ${JSON.stringify(json, null, 2)};\n`,
  );
}

const tsc = join(here, 'node_modules', 'typescript', 'bin', 'tsc');
const run = spawnSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });
if (run.status === 0) {
  console.log(`type-checked against @grafana/schema: ${names.join(', ')}`);
}
process.exit(run.status ?? 1);
