//! The browser tests' harness: real `hydracluster` and `hydranode` processes on loopback,
//! a tiny artifact server, and headless Chromium (Debian's) driven by playwright-core.
//! Everything a test starts is recorded in its `World`, and `world.close()` (run by the
//! test file's `after`, and on exit or a signal whatever happened) kills every process
//! and removes every temp dir. Tests wait on positive markers (an element, an API
//! answer); the only timers are hang guards.

import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../..');
/** Where the binaries are: `target/debug` unless `HYDRA_BIN_DIR` says otherwise. */
export const BIN_DIR = process.env.HYDRA_BIN_DIR || path.join(REPO, 'target/debug');
export const CHROMIUM = process.env.HYDRA_CHROMIUM || '/usr/bin/chromium';
/** Hang guard for one wait: far above what any marker takes, so only a hang trips it. */
export const GUARD_MS = Number(process.env.HYDRA_BROWSER_GUARD_MS || 30_000);

export const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
export const OBSERVER = `observer-${randomBytes(12).toString('hex')}`;
export const FLEET = `fleet-${randomBytes(12).toString('hex')}`;

// Every world alive in this process, closed on exit even when a test threw.
const worlds = new Set();
function closeAllNow() {
  for (const w of worlds) w.closeSync();
}
process.on('exit', closeAllNow);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => { closeAllNow(); process.exit(130); });
}

/** Polls `check` until it returns a truthy value (returned), or fails after the guard
 *  with `what` and whatever `detail()` says then; an error marked `fatal` ends it at
 *  once (a process that exited will not come back). */
export async function eventually(what, check, { timeout = GUARD_MS, detail } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() > end) {
      const more = detail ? `\n${await detail()}` : '';
      throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}${more}`);
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** A process started by the harness; its output kept (the last 64 KiB) for failures. */
class Proc {
  constructor(name, cmd, args, opts) {
    this.name = name;
    this.out = '';
    this.child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((ok) => this.child.on('exit', (code, signal) => ok({ code, signal })));
    const keep = (chunk) => { this.out = (this.out + chunk).slice(-65536); };
    this.child.stdout.setEncoding('utf8').on('data', keep);
    this.child.stderr.setEncoding('utf8').on('data', keep);
    this.child.on('error', (e) => keep(`spawn failed: ${e.message}\n`));
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** Everything one test file starts: processes, temp dirs, HTTP servers, the browser. */
export class World {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-browser-'));
    this.procs = [];
    this.httpServers = [];
    this.browser = null;
    worlds.add(this);
  }

  spawn(name, cmd, args, opts = {}) {
    const p = new Proc(name, cmd, args, { cwd: this.dir, ...opts, env: { ...process.env, HYDRA_LOG: 'warn', ...opts.env } });
    this.procs.push(p);
    return p;
  }

  /** The last output of every process, for a failure message. */
  logs() {
    return this.procs.map((p) => `--- ${p.name} (pid ${p.child.pid})\n${p.out.slice(-4000)}`).join('\n');
  }

  async close() {
    if (this.browser) await this.browser.close().catch(() => {});
    this.browser = null;
    await Promise.all(this.httpServers.map((s) => new Promise((ok) => { s.closeAllConnections?.(); s.close(ok); })));
    this.httpServers = [];
    for (const p of this.procs) p.kill();
    await Promise.all(this.procs.map((p) => p.exited));
    this.closeSync();
  }

  /** What `close` does, without waiting (for `exit`): kill, then remove the dir. */
  closeSync() {
    for (const p of this.procs) p.kill();
    this.browser?.process?.()?.kill('SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
    worlds.delete(this);
  }

  /** `hydracluster serve` on 127.0.0.1 (port 0) with a fresh data dir, the test's
   *  admin, observer and fleet tokens, short timers (so tests wait on events, not on
   *  timers), and `extra` lines of YAML config. */
  async server(extra = '') {
    const n = this.procs.filter((p) => p.name.startsWith('hydracluster')).length;
    const data = path.join(this.dir, `data-${n}`);
    const config = path.join(this.dir, `server-${n}.yaml`);
    fs.writeFileSync(config, [
      `observer_token: ${OBSERVER}`,
      `fleet_enrollment_token: ${FLEET}`,
      'enroll_per_minute: 0',
      'heartbeat_interval: 1s',
      'heartbeat_timeout: 5s',
      'anomaly_check_interval: 200ms',
      'heartbeat_event_interval: 200ms',
      extra,
    ].join('\n'));
    const proc = this.spawn(`hydracluster-${n}`, path.join(BIN_DIR, 'hydracluster'),
      ['serve', '--listen', '127.0.0.1:0', '--config', config, '--data', data],
      { env: { HYDRACLUSTER_ADMIN_TOKEN: ADMIN } });
    const url = await eventually('hydracluster to listen', () => {
      if (proc.child.exitCode !== null) throw Object.assign(new Error(`hydracluster exited: ${proc.out}`), { fatal: true });
      return /hydracluster listening on (http:\/\/\S+)/.exec(proc.out)?.[1];
    }, { detail: () => proc.out });
    return new Server(this, url, proc);
  }

  /** `hydraexperiencelibrary serve` on `port` (see `freePort`: hydracluster's config
   *  names the library's URL before it starts) following `server`, with the test's
   *  admin token on both sides and `extra` lines of YAML config; its URL. */
  async library(server, port, extra = '') {
    const config = path.join(this.dir, 'library.yaml');
    fs.writeFileSync(config, extra);
    const proc = this.spawn('hydraexperiencelibrary', path.join(BIN_DIR, 'hydraexperiencelibrary'),
      ['serve', '--listen', `127.0.0.1:${port}`, '--config', config, '--data', path.join(this.dir, 'library')],
      { env: {
        HYDRAEXPERIENCELIBRARY_ADMIN_TOKEN: ADMIN,
        HYDRAEXPERIENCELIBRARY_CLUSTER_URL: server.url,
        HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN: ADMIN,
      } });
    return eventually('hydraexperiencelibrary to listen', () => {
      if (proc.child.exitCode !== null) throw Object.assign(new Error(`the library exited: ${proc.out}`), { fatal: true });
      return /hydraexperiencelibrary listening on (http:\/\/\S+)/.exec(proc.out)?.[1];
    }, { detail: () => proc.out });
  }

  /** Serves `bytes` at `/<name>` on loopback (the role recipes' artifact); its URL and
   *  sha256. */
  async artifact(name, bytes) {
    const server = http.createServer((req, res) => {
      if (req.url !== `/${name}`) { res.writeHead(404).end(); return; }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes);
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    this.httpServers.push(server);
    return {
      url: `http://127.0.0.1:${server.address().port}/${name}`,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    };
  }

  /** Headless Chromium, Debian's, with the flags this machine's closed network needs.
   *  playwright-core gives it a fresh `--user-data-dir` and removes it on close. */
  async launch() {
    this.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-quic'],
    });
    return this.browser;
  }
}

/** A running hydracluster: its URL and the admin's API. */
export class Server {
  constructor(world, url, proc) {
    this.world = world;
    this.url = url;
    this.proc = proc;
  }

  /** Calls the API with a bearer token (admin unless told); `{status, json}`. */
  async api(method, p, { token = ADMIN, body } = {}) {
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(`${this.url}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = text; }
    return { status: r.status, json };
  }

  async node(id) {
    return (await this.api('GET', `/api/v1/nodes/${id}`)).json;
  }

  /** The node's events of `types` (e.g. `provision.*`), in log order. */
  async events(id, types) {
    const r = await this.api('GET', `/api/v1/nodes/${id}/history?since=0`);
    const re = new RegExp(`^${types.replace('.', '\\.').replace('*', '.*')}$`);
    return (r.json?.events || []).filter((e) => re.test(e.type));
  }

  /** Enrolls a real `hydranode` called `name` (`hydranode enroll`), approves it with
   *  `roles` at north/arena (unless it is a head enrolled with the fleet token), writes
   *  its status file, runs it (`hydranode run`, 300 ms heartbeats) and waits until it
   *  shows online. */
  async agent(name, { status = {}, roles = ['hydrabody'], head = false } = {}) {
    const state = path.join(this.world.dir, `agent-${name}`);
    const args = ['enroll', '--server', this.url, '--name', name, '--state', state];
    if (head) args.push('--district', 'north', '--venue', 'arena', '--fleet-token', FLEET);
    try {
      await promisify(execFile)(path.join(BIN_DIR, 'hydranode'), args, { env: { ...process.env, HYDRA_LOG: 'warn' } });
    } catch (e) {
      throw new Error(`hydranode enroll ${name} failed: ${e.stderr || e.message}`);
    }
    const identity = JSON.parse(fs.readFileSync(path.join(state, 'identity.json'), 'utf8'));
    const agent = new Agent(this, name, identity.node_id, state);
    agent.writeStatus(status);
    if (!head) {
      const r = await this.api('POST', `/api/v1/nodes/${agent.id}/approve`,
        { body: { roles, district: 'north', venue: 'arena' } });
      if (r.status !== 200) throw new Error(`approve ${name}: ${r.status} ${JSON.stringify(r.json)}`);
    }
    agent.proc = this.world.spawn(`hydranode-${name}`, path.join(BIN_DIR, 'hydranode'),
      ['run', '--heartbeat-interval', '300ms', '--exec-wait', '5', '--state', state]);
    await eventually(`${name} online`, async () => (await this.node(agent.id))?.node_status === 'online',
      { detail: () => this.world.logs() });
    return agent;
  }

  /** Signs in through the form in a new browser context (its own cookie jar) at
   *  `size`; the page, on the fleet page. */
  async signIn(token, { size = { width: 1280, height: 800 } } = {}) {
    const browser = this.world.browser || await this.world.launch();
    const context = await browser.newContext({ viewport: size });
    const page = await context.newPage();
    await page.goto(`${this.url}/nodes`);
    // No session yet: the console sends the browser to the sign-in form.
    await page.waitForURL(/\/login\?next=/);
    await page.fill('#token', token);
    await Promise.all([page.waitForURL(`${this.url}/nodes`), page.click('button[type=submit]')]);
    return page;
  }
}

export class Agent {
  constructor(server, name, id, state) {
    Object.assign(this, { server, name, id, state });
  }

  /** The status file the agent reports from (re-read every heartbeat). */
  writeStatus(status) {
    const file = path.join(this.state, 'status.json');
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(status));
    fs.renameSync(`${file}.tmp`, file);
  }
}

/** Where the pages' screenshots go (`HYDRA_SCREENSHOTS=docs/console` for README's). */
export const SCREENSHOTS = path.resolve(REPO, process.env.HYDRA_SCREENSHOTS || 'target/browser-screenshots');

/** A viewport screenshot of the page as it is now, into `SCREENSHOTS/name.png`. */
export async function shoot(page, name) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, animations: 'disabled' });
  if (fs.statSync(file).size < 1000) throw new Error(`${file} is empty`);
}

/** A loopback port that was free a moment ago. */
export async function freePort() {
  const probe = http.createServer();
  await new Promise((ok) => probe.listen(0, '127.0.0.1', ok));
  const { port } = probe.address();
  await new Promise((ok) => probe.close(ok));
  return port;
}

/** Sets a marker on the page's `window`: still there later means the page never
 *  navigated or reloaded in between. */
export async function markPage(page) {
  const mark = randomBytes(8).toString('hex');
  await page.evaluate((m) => { window.__hydraMark = m; }, mark);
  return async () => (await page.evaluate(() => window.__hydraMark)) === mark;
}
