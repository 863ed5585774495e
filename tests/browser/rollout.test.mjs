//! A rollout's page in a real browser: a promotion through a real ExperienceLibrary
//! over real agents moves through wave 1 (the bodies) then wave 2 (the head) live, and
//! Pause and Resume pressed on the page hold and release it. Each body's install waits
//! for a gate file the test opens, so the test decides when a body finishes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { World, ADMIN, markPage, shoot, freePort, GUARD_MS } from './harness.mjs';

const world = new World();
let server;
let library;
const gate = path.join(world.dir, 'gate');
const openGate = () => fs.writeFileSync(gate, '');

before(async () => {
  const artifact = await world.artifact('body-tools.txt', Buffer.from('body tools v2\n'));
  const port = await freePort();
  server = await world.server([
    'experienceLibrary:',
    `  url: http://127.0.0.1:${port}`,
    `  token: ${ADMIN}`,
    'provision_deadline: 60s',
    'role_catalog: [hydrabody]',
    'role_recipes:',
    '  hydrabody:',
    `    artifact_url: ${artifact.url}`,
    '    version: "2.0.0"',
    `    sha256: "${artifact.sha256}"`,
    `    install: "while [ ! -e ${gate} ]; do sleep 0.05; done; rm ${gate}"`,
  ].join('\n'));
  const agents = [
    await server.agent('node-body-1', { status: { provider_status: 'running', stream_status: 'idle' } }),
    await server.agent('node-body-2', { status: { provider_status: 'running', stream_status: 'idle' } }),
    await server.agent('ipad-1', { head: true, status: { head_status: 'idle' } }),
  ];
  for (const a of agents) {
    const r = await server.api('POST', `/api/v1/nodes/${a.id}/placement`,
      { body: { district: 'north', venue: 'arena', environment: 'staging' } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
  library = await world.library(server, port);
  const call = async (p, body) => {
    const r = await fetch(`${library}${p}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await r.text();
    assert.ok(r.ok, `${p}: ${r.status} ${text}`);
    return JSON.parse(text);
  };
  await call('/api/v1/experiences', { id: 'space', project: 'space-game', district: 'north', venues: ['arena'] });
  await call('/api/v1/experiences/space/builds',
    { build: 'b1', version: '2.0.0', artifact_url: 'https://artifacts.example/b1.zip', sha256: 'ab'.repeat(32) });
  await call('/api/v1/experiences/space/promote', { to: 'staging', max_parallel: 1 });
});
after(() => world.close());

test('a rollout moves through wave 1 then wave 2 live, paused and resumed from its page', async () => {
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/rollouts/r1`);
  const state = (s) => page.locator('#rollout span[data-badge=state]', { hasText: new RegExp(`^${s}$`) });
  const wave = (n, text) => page.locator(`#waves .wave[data-wave="${n}"]`, { hasText: text });
  await state('running').waitFor({ timeout: GUARD_MS });
  await wave(1, '0/2').waitFor({ timeout: GUARD_MS });
  await wave(2, '0/1').waitFor({ timeout: GUARD_MS });
  const stillSamePage = await markPage(page);

  // Paused while the first body installs: it finishes, nothing new starts.
  await page.click('button[data-action=pause]');
  await state('paused').waitFor({ timeout: GUARD_MS });
  openGate();
  await wave(1, '1/2').waitFor({ timeout: GUARD_MS });
  assert.equal(await state('paused').count(), 1);
  assert.equal(await page.locator('#rollout-nodes span[data-badge=node-state]', { hasText: 'pending' }).count(), 2,
    'the second body and the head wait');

  await page.click('button[data-action=resume]');
  await state('running').waitFor({ timeout: GUARD_MS });
  openGate();
  await wave(1, '2/2').waitFor({ timeout: GUARD_MS });
  await wave(2, '1/1').waitFor({ timeout: GUARD_MS });
  await state('completed').waitFor({ timeout: GUARD_MS });
  assert.ok(await stillSamePage(), 'the waves moved without a reload');
  await shoot(page, 'rollout');
  // The rollouts list has it too, finished.
  await page.goto(`${server.url}/rollouts`);
  await page.locator('table#rollouts tr[data-key=r1] span[data-badge=state]', { hasText: 'completed' })
    .waitFor({ timeout: GUARD_MS });
});
