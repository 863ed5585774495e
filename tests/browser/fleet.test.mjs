//! The fleet page in a real browser: an admin signs in through the form, the page lists
//! the real agents, and a provider error an agent reports shows as the red badge in its
//! row, beside its streaming badge, without the page reloading.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { World, ADMIN, markPage, GUARD_MS, eventually } from './harness.mjs';

const world = new World();
let server;
let bodies;

before(async () => {
  server = await world.server();
  const running = { provider_status: 'running', provider_version: '2.1.0', stream_status: 'idle' };
  bodies = [
    await server.agent('fleet-body-1', { status: running }),
    await server.agent('fleet-body-2', { status: running }),
  ];
});
after(() => world.close());

test('an admin signs in through the form and the fleet page shows a provider error live', async () => {
  const page = await server.signIn(ADMIN);
  assert.equal(await page.getAttribute('body', 'data-role'), 'admin');

  // Every agent has its row, running and online.
  for (const b of bodies) {
    const row = page.locator(`table#nodes tr[data-key="${b.id}"]`);
    await row.waitFor({ timeout: GUARD_MS });
    assert.match(await row.locator('td').first().innerText(), new RegExp(b.name));
    assert.equal(await row.locator('span[data-badge=online]').innerText(), 'online');
    assert.equal(await row.locator('span[data-badge=provider]').innerText(), 'running');
  }

  const stillSamePage = await markPage(page);
  const [broken, healthy] = bodies;
  broken.writeStatus({ provider_status: 'sunshine_api_unreachable', provider_version: '2.1.0', stream_status: 'streaming' });

  const row = page.locator(`table#nodes tr[data-key="${broken.id}"]`);
  const badge = row.locator('span[data-badge=provider].bad');
  await badge.waitFor({ timeout: GUARD_MS });
  assert.equal(await badge.innerText(), 'sunshine_api_unreachable');
  // The error is kept beside the streaming badge, not instead of it.
  await row.locator('span[data-badge=stream]').waitFor({ timeout: GUARD_MS });
  assert.equal(await row.locator('span[data-badge=stream]').innerText(), 'streaming');
  // The red is the page's "bad" colour, not the "ok" green. Read from the badge in the
  // page now: a live event may redraw the row between two reads, and a badge taken
  // out of the page has no computed colour.
  const colour = () => badge.evaluate((el) => (el.isConnected ? getComputedStyle(el).color : ''));
  const red = await eventually('the badge is drawn red', async () => (await colour()) === 'rgb(207, 34, 46)' && 'red', {
    detail: async () => `its colour: ${await colour()}`,
  });
  assert.equal(red, 'red');
  // The other row is untouched, and the page never reloaded to show it.
  assert.equal(await page.locator(`tr[data-key="${healthy.id}"] span[data-badge=provider]`).innerText(), 'running');
  assert.ok(await stillSamePage(), 'the page did not navigate or reload');
  assert.equal(page.url(), `${server.url}/nodes`);
});
