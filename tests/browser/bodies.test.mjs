//! The bodies page in a real browser: Force Stop on a streaming real body's row runs the
//! server's `stream_stop_command` on the body, and the row shows what the body answered.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { World, ADMIN, GUARD_MS } from './harness.mjs';

const world = new World();
let server;
let streaming;
let idle;
let missing = null;

before(async () => {
  server = await world.server('stream_stop_command: "echo stopped"\nstream_stop_timeout: 10s');
  streaming = await server.agent('bodies-body-1', { status: { provider_status: 'running', stream_status: 'streaming' } });
  idle = await server.agent('bodies-body-2', { status: { provider_status: 'running', stream_status: 'idle' } });
  // The page reads GET /api/v1/bodies; a server without it cannot show the page.
  const probe = await server.api('GET', '/api/v1/bodies');
  if (probe.status === 404 || probe.status === 405) missing = `GET /api/v1/bodies answers ${probe.status} on this build`;
});
after(() => world.close());

test('Force Stop on a streaming body shows the body\'s answer in its row', async (t) => {
  if (missing) {
    t.skip(`skipped: ${missing} (the /bodies page needs that endpoint)`);
    return;
  }
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/bodies`);
  const row = page.locator(`table#bodies tr[data-key="${streaming.id}"]`);
  await row.locator('span[data-badge=stream]', { hasText: 'streaming' }).waitFor({ timeout: GUARD_MS });
  // Every body row has the button, streaming or not.
  await page.locator(`table#bodies tr[data-key="${idle.id}"] button[data-action=force-stop]`).waitFor({ timeout: GUARD_MS });

  await row.locator('button[data-action=force-stop]').click();
  const answer = row.locator('span[data-result=force-stop]', { hasText: 'exec succeeded' });
  await answer.waitFor({ timeout: GUARD_MS });
  assert.equal(await answer.innerText(), 'exec succeeded: stopped');
  // The command really went through the body's exec queue and ran there.
  const results = await server.events(streaming.id, 'exec.completed');
  assert.equal(results.length, 1, JSON.stringify(results));
  assert.equal((await server.events(streaming.id, 'stream.stopped')).length, 1);
  // The answer stays on the row while later events redraw the page.
  await page.locator(`table#bodies tr[data-key="${streaming.id}"] span[data-badge=stream]`).waitFor({ state: 'detached', timeout: GUARD_MS })
    .catch(() => {});
  assert.equal(await row.locator('span[data-result=force-stop]').innerText(), 'exec succeeded: stopped');
});
