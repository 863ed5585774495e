//! The sessions page in a real browser: a real head streaming from its real body shows
//! up as an active session without a reload, ends (`head_stopped`) when the head stops,
//! and its Logs button shows the body's and the head's log side by side.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { World, ADMIN, markPage, shoot, GUARD_MS } from './harness.mjs';

const world = new World();
let server;
let body;
let head;

before(async () => {
  const logs = { body: path.join(world.dir, 'body.log'), head: path.join(world.dir, 'head.log') };
  fs.writeFileSync(logs.body, 'body: encoder started\nbody: client connected\n');
  fs.writeFileSync(logs.head, 'head: kiosk app opened\nhead: stream playing\n');
  server = await world.server([
    `body_log_path: "${logs.body}"`,
    `head_log_path: "${logs.head}"`,
    'head_exec_timeout: 5s',
  ].join('\n'));
  body = await server.agent('node-body-1', { status: { provider_status: 'running', stream_status: 'idle' } });
  head = await server.agent('ipad-1', { head: true, status: { head_status: 'idle' } });
  const r = await server.api('POST', `/api/v1/nodes/${head.id}/head-assignment`, { body: { body_id: body.id } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
});
after(() => world.close());

test('a head streaming from its body is an active session until the head stops, with both logs', async () => {
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/sessions`);
  await page.locator('#live-status', { hasText: 'live' }).waitFor({ timeout: GUARD_MS });
  assert.equal(await page.locator('table#sessions tbody tr').count(), 0, 'no session while both are idle');
  const stillSamePage = await markPage(page);

  body.writeStatus({ provider_status: 'running', stream_status: 'streaming' });
  head.writeStatus({ head_status: 'streaming' });
  const row = page.locator('table#sessions tbody tr', { has: page.locator('span[data-badge=active]') });
  await row.waitFor({ timeout: GUARD_MS });
  const text = await row.innerText();
  assert.match(text, /ipad-1/);
  assert.match(text, /node-body-1/);

  head.writeStatus({ head_status: 'idle' });
  const ended = page.locator('table#sessions tbody tr', { hasText: 'head_stopped' });
  await ended.waitFor({ timeout: GUARD_MS });
  assert.equal(await page.locator('span[data-badge=active]').count(), 0, 'no longer active');
  assert.ok(await stillSamePage(), 'the list followed without a reload');

  await ended.locator('button[data-action=logs]').click();
  const bodySide = page.locator('#session-logs section[data-side^="Body"] pre');
  const headSide = page.locator('#session-logs section[data-side^="Head"] pre');
  await bodySide.waitFor({ timeout: GUARD_MS });
  assert.match(await bodySide.innerText(), /body: client connected/);
  assert.match(await headSide.innerText(), /head: stream playing/);
  await shoot(page, 'sessions');
});
