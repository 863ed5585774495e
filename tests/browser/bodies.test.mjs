//! The bodies page in a real browser: Force Stop on a streaming real body's row runs the
//! server's `stream_stop_command` on the body, and the row shows what the body answered,
//! also when the row was redrawn by a live event while the body was still answering.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { World, ADMIN, GUARD_MS, eventually, shoot } from './harness.mjs';

const world = new World();
let server;
let streaming;
let idle;
let held;
let watched;
let late;
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
  // Orphaned streams (no head watches them) whose bodies report their own watchdog.
  watched = await server.agent('bodies-body-4', { status: { ...streams, telemetry: { watchdog_timeout_s: 3600 } } });
  late = await server.agent('bodies-body-5', { status: { ...streams, telemetry: { watchdog_timeout_s: 0 } } });
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

test('the Self-Healing panel says when each body\'s own watchdog should clear its orphaned stream', async (t) => {
  if (missing) {
    t.skip(`skipped: ${missing} (the /bodies page needs that endpoint)`);
    return;
  }
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/bodies`);
  const anomaly = (body) => page.locator(`table#anomalies tr[data-key="${body.id}/orphan_stream"]`);
  // An hour's limit: a time ahead, not overdue.
  const ahead = anomaly(watched).locator('[data-clears]');
  await ahead.waitFor({ timeout: GUARD_MS });
  const api = (await server.api('GET', '/api/v1/body-anomalies')).json
    .find((a) => a.node_id === watched.id && a.type === 'orphan_stream');
  assert.equal(await ahead.getAttribute('data-clears'), api.expected_clear_at);
  assert.match(await ahead.innerText(), /\(in \d+m \d+s\)$/);
  assert.equal(await anomaly(watched).locator('span[data-badge=watchdog]').count(), 0);
  // A limit of 0: the watchdog should have cleared it already: overdue.
  await anomaly(late).locator('span[data-badge=watchdog]', { hasText: 'overdue' }).waitFor({ timeout: GUARD_MS });
  await shoot(page, 'bodies-self-healing');
});
