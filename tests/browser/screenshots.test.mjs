//! Screenshots of the console's pages, taken last in the run against a small real fleet
//! (a streaming body with a provider error, an idle body, a kiosk head): each page at a
//! laptop size and the fleet page at a phone size, as PNG (see `shoot`). Each shot
//! waits for the page to be drawn. On the phone, the fleet, a node and the events must fit its width.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { World, ADMIN, GUARD_MS, shoot } from './harness.mjs';

const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const world = new World();
let server;
let broken;
let head;

before(async () => {
  server = await world.server('stream_stop_command: "echo stopped"');
  broken = await server.agent('body-arena-1', {
    status: { provider_status: 'sunshine_api_unreachable', provider_version: '2.1.0', stream_status: 'streaming',
      telemetry: { gpu_utilization_pct: 87, gpu_memory_used_mb: 6144 } },
  });
  await server.agent('body-arena-2', {
    status: { provider_status: 'running', provider_version: '2.1.0', stream_status: 'idle',
      telemetry: { gpu_utilization_pct: 3, gpu_memory_used_mb: 512 } },
  });
  head = await server.agent('ipad-lobby', {
    head: true,
    status: { head_status: 'idle', head_detail: 'lobby', diagnostics: { version: '1.4.0', wireguard: 'up', app: 'ok', routing: 'lan', latency_ms: 12 } },
  });
});
after(() => world.close());

test('screenshots of every page, at a laptop size and the fleet on a phone', async () => {
  const page = await server.signIn(ADMIN, { size: LAPTOP });
  const ready = (selector) => page.locator(selector).first().waitFor({ timeout: GUARD_MS });

  await ready(`table#nodes tr[data-key="${broken.id}"] span[data-badge=provider].bad`);
  await ready(`table#nodes tr[data-key="${head.id}"]`);
  await shoot(page, 'fleet');

  await page.goto(`${server.url}/nodes/${broken.id}`);
  await ready('ol#timeline > li[data-type="node.provider_changed"]');
  await shoot(page, 'node');

  await page.goto(`${server.url}/bodies`);
  // The Self-Healing panel's table and the bodies' table are both drawn (or the page
  // says why not, on a build without the bodies endpoint).
  await ready(`table#bodies tr[data-key="${broken.id}"], #live-status.error`);
  await shoot(page, 'bodies');

  await page.goto(`${server.url}/heads`);
  await ready(`table#heads tr[data-key="${head.id}"] span[data-badge=head-status]`);
  await shoot(page, 'heads');

  await page.goto(`${server.url}/events`);
  await ready('ol#events > li[data-type="node.approved"]');
  await shoot(page, 'events');

  const phone = await server.signIn(ADMIN, { size: PHONE });
  await phone.locator(`table#nodes tr[data-key="${broken.id}"] span[data-badge=provider].bad`).waitFor({ timeout: GUARD_MS });
  await shoot(phone, 'fleet-phone');
  // Nothing runs past a phone's edge (the page would scroll sideways).
  const fits = async (what) => assert.equal(
    await phone.evaluate(() => document.documentElement.scrollWidth), PHONE.width, `${what} fits a phone's width`);
  await fits('the fleet');
  for (const [url, drawn] of [[`/nodes/${broken.id}`, 'ol#timeline > li'], ['/events', 'ol#events > li']]) {
    await phone.goto(`${server.url}${url}`);
    await phone.locator(drawn).first().waitFor({ timeout: GUARD_MS });
    await fits(url);
  }

  const context = await world.browser.newContext({ viewport: LAPTOP });
  const login = await context.newPage();
  await login.goto(`${server.url}/login`);
  await login.locator('#token').waitFor({ timeout: GUARD_MS });
  await shoot(login, 'sign-in');
  await context.close();
});
