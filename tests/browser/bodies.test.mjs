//! The bodies page in a real browser: Force Stop on a streaming real body's row runs the
//! server's `stream_stop_command` on the body, and the row shows what the body answered,
//! also when the row was redrawn by a live event while the body was still answering.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { World, ADMIN, GUARD_MS, eventually } from './harness.mjs';

const world = new World();
let server;
let streaming;
let idle;
let held;
let missing = null;
// While this file exists the body's stop command waits: the test decides when the body
// answers, so it can redraw the row in between.
const HOLD = path.join(world.dir, 'hold-the-stop');

before(async () => {
  server = await world.server(`stream_stop_command: "while [ -e '${HOLD}' ]; do sleep 0.05; done; echo stopped"\n`
    + 'stream_stop_timeout: 20s');
  const streams = { provider_status: 'running', stream_status: 'streaming' };
  streaming = await server.agent('bodies-body-1', { status: streams });
  idle = await server.agent('bodies-body-2', { status: { provider_status: 'running', stream_status: 'idle' } });
  held = await server.agent('bodies-body-3', { status: streams });
  // The page reads GET /api/v1/bodies; a server without it cannot show the page.
  const probe = await server.api('GET', '/api/v1/bodies');
  if (probe.status === 404 || probe.status === 405) missing = `GET /api/v1/bodies answers ${probe.status} on this build`;
});
after(() => world.close());

/** `/bodies` as the admin, once `body`'s row shows it streaming: the page and the row;
 *  nothing (the test skipped, saying why) on a build without the bodies endpoint. */
async function streamingRow(t, body) {
  if (missing) {
    t.skip(`skipped: ${missing} (the /bodies page needs that endpoint)`);
    return null;
  }
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/bodies`);
  const row = page.locator(`table#bodies tr[data-key="${body.id}"]`);
  await row.locator('span[data-badge=stream]', { hasText: 'streaming' }).waitFor({ timeout: GUARD_MS });
  return { page, row };
}

test('Force Stop on a streaming body shows the body\'s answer in its row', async (t) => {
  const { page, row } = await streamingRow(t, streaming) || {};
  if (!page) return;
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
  // The answer stays on the row when a later event redraws it (the body stopped
  // streaming: its status file says so and its next heartbeat reports it).
  streaming.writeStatus({ provider_status: 'running', stream_status: 'idle' });
  await row.locator('span[data-badge=stream]').waitFor({ state: 'detached', timeout: GUARD_MS });
  assert.equal(await row.locator('span[data-result=force-stop]').innerText(), 'exec succeeded: stopped');
});

test('the answer reaches the row even when an event redrew it while the body was answering', async (t) => {
  const { row } = await streamingRow(t, held) || {};
  if (!row) return;

  fs.writeFileSync(HOLD, '');
  await row.locator('button[data-action=force-stop]').click();
  await row.locator('span[data-result=force-stop]', { hasText: '…' }).waitFor({ timeout: GUARD_MS });
  // The body has the command (dispatched to it, held by the file) when the row is redrawn.
  await eventually('the stop command handed to the body',
    async () => (await server.events(held.id, 'exec.dispatched')).length === 1);
  held.writeStatus({ provider_status: 'sunshine_api_unreachable', stream_status: 'streaming' });
  await row.locator('span[data-badge=provider]', { hasText: 'sunshine_api_unreachable' }).waitFor({ timeout: GUARD_MS });
  fs.rmSync(HOLD);
  await row.locator('span[data-result=force-stop]', { hasText: 'exec succeeded' }).waitFor({ timeout: GUARD_MS });
  assert.equal(await row.locator('span[data-result=force-stop]').innerText(), 'exec succeeded: stopped');
  assert.equal(await row.locator('button[data-action=force-stop]').isEnabled(), true, 'the button is usable again');
});
