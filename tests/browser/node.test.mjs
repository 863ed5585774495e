//! A node's page in a real browser: Reprovision pressed on the page, and the real
//! agent's provisioning (the role recipe's artifact served by this test) appearing live
//! in the timeline: requested, started, completed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { World, ADMIN, markPage, GUARD_MS } from './harness.mjs';

const world = new World();
let server;
let body;

before(async () => {
  // Not a tarball: the agent keeps it as one file named after the URL.
  const artifact = await world.artifact('body-tools.txt', Buffer.from('body tools v1\n'));
  server = await world.server([
    'role_catalog: [hydrabody]',
    'role_recipes:',
    '  hydrabody:',
    `    artifact_url: ${artifact.url}`,
    '    version: "1.0.0"',
    `    sha256: "${artifact.sha256}"`,
    '    install: "test -s body-tools.txt"',
  ].join('\n'));
  body = await server.agent('node-body-1', { status: { provider_status: 'running', stream_status: 'idle' } });
});
after(() => world.close());

test('Reprovision on the node page shows requested, started and completed live', async () => {
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/nodes/${body.id}`);
  await page.locator('#node-fields h2', { hasText: 'node-body-1' }).waitFor({ timeout: GUARD_MS });
  // The history from the log is there before anything is pressed, and no provisioning.
  await page.locator('ol#timeline > li[data-type="node.approved"]').waitFor({ timeout: GUARD_MS });
  assert.equal(await page.locator('ol#timeline > li[data-type^="provision."]').count(), 0);

  const stillSamePage = await markPage(page);
  await page.click('button[data-action=reprovision]');
  await page.locator('span[data-result=reprovision]', { hasText: 'requested' }).waitFor({ timeout: GUARD_MS });
  for (const type of ['provision.requested', 'provision.started', 'provision.completed']) {
    await page.locator(`ol#timeline > li[data-type="${type}"]`).waitFor({ timeout: GUARD_MS });
  }
  // Newest first, once each.
  const types = await page.locator('ol#timeline > li[data-type^="provision."]').evaluateAll(
    (items) => items.map((li) => li.dataset.type));
  assert.deepEqual(types, ['provision.completed', 'provision.started', 'provision.requested']);
  assert.match(await page.locator('ol#timeline > li[data-type="provision.completed"]').innerText(), /hydrabody=1\.0\.0/);
  assert.ok(await stillSamePage(), 'the timeline grew without a reload');
  // The page's fields follow too: the node's provisioning state is completed.
  await page.locator('dd[data-field=provision_state]', { hasText: 'completed' }).waitFor({ timeout: GUARD_MS });
});

test('a command run from the node page shows its result, and the recent results keep it', async () => {
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/nodes/${body.id}`);
  await page.locator('#node-fields h2', { hasText: 'node-body-1' }).waitFor({ timeout: GUARD_MS });
  await page.fill('textarea[name=command]', 'echo hello-from-the-page');
  await page.click('button[data-action=run]');
  await page.locator('#command-output', { hasText: 'hello-from-the-page' }).waitFor({ timeout: GUARD_MS });
  assert.match(await page.locator('#command-output').innerText(), /^completed \(exit 0\)/);
  // The log's exec.completed lists it under the recent results; its output on demand.
  const done = page.locator('#exec-results > li', { hasText: 'completed' }).first();
  await done.waitFor({ timeout: GUARD_MS });
  await done.locator('button[data-action=output]').click();
  await done.locator('pre', { hasText: 'hello-from-the-page' }).waitFor({ timeout: GUARD_MS });
});
