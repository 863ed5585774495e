//! Who may do what, in a real browser: an observer's node page has no action button and
//! the server refuses the observer's forged action whatever the page shows; the admin's
//! session cannot act without its CSRF token; a wrong token does not sign in.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { World, ADMIN, OBSERVER, GUARD_MS } from './harness.mjs';

const world = new World();
let server;
let body;

before(async () => {
  server = await world.server();
  body = await server.agent('access-body-1', { status: { provider_status: 'running', stream_status: 'idle' } });
});
after(() => world.close());

/** A POST from the page itself (same origin, the browser's own cookie), with the CSRF
 *  header when `csrf` is given: the status and the error the server answered. */
function postFromPage(page, path, csrf) {
  return page.evaluate(async ([p, token]) => {
    const headers = { 'content-type': 'application/json' };
    if (token !== null) headers['x-hydra-csrf'] = token;
    const r = await fetch(p, { method: 'POST', headers, credentials: 'same-origin', body: JSON.stringify({ draining: true }) });
    return { status: r.status, error: (await r.json().catch(() => ({}))).error };
  }, [path, csrf]);
}

test('an observer sees no action button, and a forged action from its session is 403', async () => {
  const page = await server.signIn(OBSERVER);
  assert.equal(await page.getAttribute('body', 'data-role'), 'observer');
  await page.goto(`${server.url}/nodes/${body.id}`);
  // The page is drawn (its fields and history) before its buttons are counted.
  await page.locator('#node-fields h2', { hasText: 'access-body-1' }).waitFor({ timeout: GUARD_MS });
  await page.locator('ol#timeline > li[data-type="node.approved"]').waitFor({ timeout: GUARD_MS });
  assert.equal(await page.locator('button[data-action]').count(), 0, 'no action button for an observer');
  assert.equal(await page.locator('#node-actions').innerHTML(), '');

  // The observer forges the drain the admin's page would send, with its own CSRF token.
  const csrf = await page.getAttribute('body', 'data-csrf');
  assert.ok(csrf && csrf.length >= 32, 'the page carries the session CSRF token');
  const forged = await postFromPage(page, `/api/v1/nodes/${body.id}/drain`, csrf);
  assert.equal(forged.status, 403, JSON.stringify(forged));
  assert.equal((await server.node(body.id)).draining, false, 'nothing changed');
});

test("the admin's session cannot act without its CSRF token", async () => {
  const page = await server.signIn(ADMIN);
  await page.goto(`${server.url}/nodes/${body.id}`);
  await page.locator('button[data-action=drain]').waitFor({ timeout: GUARD_MS });
  const refused = await postFromPage(page, `/api/v1/nodes/${body.id}/drain`, null);
  assert.equal(refused.status, 403, JSON.stringify(refused));
  assert.match(refused.error, /CSRF/);
  assert.equal((await server.node(body.id)).draining, false, 'nothing changed');

  // The same request with the session's token goes through: the refusal was the token.
  const csrf = await page.getAttribute('body', 'data-csrf');
  const accepted = await postFromPage(page, `/api/v1/nodes/${body.id}/drain`, csrf);
  assert.equal(accepted.status, 200, JSON.stringify(accepted));
  assert.equal((await server.node(body.id)).draining, true);
});

test('a wrong token does not sign in: the form says so and no session cookie is set', async () => {
  const context = await (world.browser || await world.launch()).newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/login`);
  await page.fill('#token', 'not-a-valid-token');
  await page.click('button[type=submit]');
  const alert = page.locator('p.error[role=alert]');
  await alert.waitFor({ timeout: GUARD_MS });
  assert.equal(await alert.innerText(), 'That is not a valid admin or observer token.');
  assert.match(page.url(), /\/login$/);
  const cookies = await context.cookies(server.url);
  assert.deepEqual(cookies.filter((c) => c.name === 'hydra_session'), [], 'no session cookie');
  // And the console still sends this browser to sign in.
  await page.goto(`${server.url}/nodes`);
  await page.waitForURL(/\/login\?next=%2Fnodes$/);
  await context.close();
});
