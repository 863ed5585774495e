// The console's one script: draws each page from the JSON API and keeps it live from
// the SSE stream. It holds no rule of its own: every action is the API's, and an
// error shown is the API's message. Text goes into the page as text (never as HTML).
'use strict';

const page = document.body.dataset;
const ADMIN = page.role === 'admin';
const main = document.getElementById('main');
const statusLine = document.getElementById('live-status');

// ---- DOM ------------------------------------------------------------------------

/** An element: `attrs` are properties (`class`, `text`, `on…` handlers, `data-…` and
 *  other attributes); children are nodes or strings (as text), nulls skipped. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') el.textContent = v;
    else if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function badge(text, tone, name) {
  return h('span', { class: `badge ${tone}`, 'data-badge': name, text });
}

function ago(iso) {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function duration(s) {
  if (s === null || s === undefined) return '';
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function nodeLink(id, name) {
  return h('a', { href: `/nodes/${encodeURIComponent(id)}`, text: name || id });
}

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', !!isError);
}

/** A table whose rows are keyed (`data-key`), with a label per cell for phones. */
function table(columns, id) {
  const body = h('tbody');
  const t = h('table', { class: 'cards', id },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { text: c })))), body);
  return { el: h('div', { class: 'table-wrap' }, t), body, columns };
}

function row(tbl, key, cells, fresh) {
  const tr = h('tr', { 'data-key': key, class: fresh ? 'fresh' : null },
    cells.map((c, i) => h('td', { 'data-label': tbl.columns[i] }, c)));
  const old = tbl.body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
  if (old) old.replaceWith(tr); else tbl.body.append(tr);
  return tr;
}

// ---- API ------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Calls the API as the signed-in browser (its cookie, and its CSRF token on every
 *  change). A lapsed session goes back to the sign-in page. */
async function api(method, path, body) {
  const headers = { 'x-hydra-csrf': page.csrf };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiFailure(401, 'signed out');
  }
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!r.ok) throw new ApiFailure(r.status, (json && json.error) || `${r.status} ${r.statusText}`);
  return { status: r.status, json, headers: r.headers };
}

/** Every page of a list endpoint (`X-Hydra-Next-After` carries the next page). */
async function all(path) {
  const out = [];
  let after = '';
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const r = await api('GET', after ? `${path}${sep}after=${encodeURIComponent(after)}` : path);
    out.push(...r.json);
    after = r.headers.get('x-hydra-next-after');
    if (!after) return out;
  }
}

/** An action button: runs `act`, shows what the API answered next to it. */
function action(label, act, opts = {}) {
  const out = h('span', { class: 'result', 'data-result': opts.name || label });
  const button = h('button', {
    type: 'button', class: opts.tone || null, 'data-action': opts.name || label,
    onclick: async () => {
      if (opts.confirm && !window.confirm(opts.confirm)) return;
      button.disabled = true;
      out.textContent = '…';
      out.classList.remove('error');
      try {
        out.textContent = (await act()) || 'done';
      } catch (e) {
        out.textContent = e.message;
        out.classList.add('error');
      } finally {
        button.disabled = false;
      }
    },
  }, label);
  return ADMIN ? h('span', {}, button, ' ', out) : null;
}

// ---- Live updates ---------------------------------------------------------------

/** One SSE connection for the page. The browser reconnects by itself and resumes
 *  with `Last-Event-ID`, so no event is missed across a drop. */
function live(onEvent, query, from = '/api/v1/events') {
  const source = new EventSource(`${from}${query ? `?${query}` : ''}`);
  for (const type of page.types.split(',')) {
    source.addEventListener(type, (e) => onEvent(JSON.parse(e.data)));
  }
  source.onopen = () => say('live');
  source.onerror = () => say('connection lost; reconnecting…', true);
  return source;
}

/** Calls `fn(key)` once per key for a burst of events (a busy node refreshes once). */
function coalesce(fn, ms = 150) {
  const due = new Map();
  return (key) => {
    if (due.has(key)) return;
    due.set(key, setTimeout(() => { due.delete(key); fn(key); }, ms));
  };
}

function errorOf(e) {
  return h('p', { class: 'error', role: 'alert', text: e.message });
}

// ---- Fleet (/nodes) -------------------------------------------------------------

function providerBadges(n) {
  const out = [];
  if (n.provider_status) {
    out.push(badge(n.provider_status, n.provider_status === 'running' ? 'ok' : 'bad', 'provider'));
  }
  if (n.stream_status === 'streaming') out.push(badge('streaming', 'info', 'stream'));
  return out;
}

async function fleetPage() {
  const filters = { district: '', venue: '', role: '', kind: '', status: '', q: '' };
  const nodes = new Map();
  const selects = {};
  const search = h('input', { type: 'search', placeholder: 'Search by name', 'aria-label': 'Search by name',
    oninput: () => { filters.q = search.value.trim().toLowerCase(); draw(); } });
  const bar = h('div', { class: 'filters' });
  for (const f of ['district', 'venue', 'role', 'kind', 'status']) {
    selects[f] = h('select', { 'aria-label': f, name: f,
      onchange: () => { filters[f] = selects[f].value; draw(); } });
    bar.append(selects[f]);
  }
  bar.append(search);
  const tbl = table(['Name', 'Kind', 'Status', 'Online', 'Last seen', 'Roles', 'District / venue',
    'Environment', 'Provider', 'Versions', 'Draining', 'Provisioning'], 'nodes');
  main.append(bar, tbl.el);

  const values = (f) => [...new Set([...nodes.values()].flatMap((n) => {
    if (f === 'role') return n.roles;
    return [f === 'status' ? n.status : n[f]];
  }))].filter(Boolean).sort();
  const fillSelects = () => {
    for (const [f, sel] of Object.entries(selects)) {
      const keep = sel.value;
      sel.replaceChildren(h('option', { value: '', text: `any ${f}` }),
        ...values(f).map((v) => h('option', { value: v, text: v })));
      sel.value = keep;
    }
  };
  const shown = (n) => (!filters.district || n.district === filters.district)
    && (!filters.venue || n.venue === filters.venue)
    && (!filters.role || n.roles.includes(filters.role))
    && (!filters.kind || n.kind === filters.kind)
    && (!filters.status || n.status === filters.status)
    && (!filters.q || n.name.toLowerCase().includes(filters.q));
  const cells = (n) => [
    nodeLink(n.id, n.name), n.kind, badge(n.status, n.status === 'approved' ? 'ok' : 'warn', 'status'),
    badge(n.node_status, n.node_status === 'online' ? 'ok' : 'muted', 'online'),
    h('span', { title: n.last_seen || '', text: ago(n.last_seen) }), n.roles.join(', '),
    `${n.district || '–'} / ${n.venue || '–'}`, n.environment, providerBadges(n),
    `agent ${n.agent_version || '–'} · provider ${n.provider_version || '–'}`,
    n.draining ? badge('draining', 'warn', 'draining') : '', n.provision_state,
  ];
  const put = (n, fresh) => {
    const tr = row(tbl, n.id, cells(n), fresh);
    tr.hidden = !shown(n);
  };
  function draw() {
    tbl.body.replaceChildren();
    [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name)).forEach((n) => put(n, false));
  }
  const refresh = coalesce(async (id) => {
    try {
      const n = (await api('GET', `/api/v1/nodes/${encodeURIComponent(id)}`)).json;
      const known = nodes.has(id);
      nodes.set(id, n);
      if (known) put(n, true); else { fillSelects(); draw(); }
    } catch (e) {
      if (e.status === 404) {
        nodes.delete(id);
        tbl.body.querySelector(`tr[data-key="${CSS.escape(id)}"]`)?.remove();
      }
    }
  });
  live((e) => { if (e.data && e.data.node_id) refresh(e.data.node_id); });
  try {
    for (const n of await all('/api/v1/nodes')) nodes.set(n.id, n);
    fillSelects();
    draw();
  } catch (e) { main.append(errorOf(e)); }
}

// ---- Node (/nodes/{id}) ---------------------------------------------------------

async function nodePage() {
  const id = page.id;
  const path = `/api/v1/nodes/${encodeURIComponent(id)}`;
  const summary = h('div', { class: 'panel', id: 'node-fields' });
  const actions = h('div', { id: 'node-actions' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const queue = h('div', { id: 'exec-queue' });
  const results = h('ol', { class: 'timeline', id: 'exec-results' });
  main.append(summary, actions,
    h('div', { class: 'columns' },
      h('section', {}, h('h2', { text: 'History' }), timeline),
      h('section', {}, h('h2', { text: 'Commands' }), queue, h('h2', { text: 'Recent results' }), results)));

  const showNode = (n) => {
    const dl = h('dl', { class: 'fields' });
    const skip = new Set(['diagnostics', 'telemetry', 'provisioning']);
    for (const [k, v] of Object.entries(n)) {
      if (skip.has(k)) continue;
      dl.append(h('dt', { text: k }), h('dd', { 'data-field': k },
        k === 'provider_status' ? providerBadges(n) : Array.isArray(v) ? v.join(', ') : v === null ? '–' : String(v)));
    }
    summary.replaceChildren(h('h2', { text: n.name }), dl,
      ...['diagnostics', 'telemetry', 'provisioning'].filter((k) => n[k])
        .map((k) => h('details', { open: true }, h('summary', { text: k }), h('pre', { text: JSON.stringify(n[k], null, 2) }))));
    document.title = `${n.name} · Hydra`;
    // The forms start from the node as it is (once: typing is not overwritten).
    for (const input of actions.querySelectorAll('input[name]:not([data-filled])')) {
      const v = input.name === 'roles' ? n.roles.join(', ') : n[input.name];
      if (v) input.value = v;
      input.dataset.filled = '1';
    }
  };
  const load = async () => {
    try { showNode((await api('GET', path)).json); } catch (e) { summary.replaceChildren(errorOf(e)); }
  };

  const post = (suffix, body) => async () => { const r = await api('POST', `${path}/${suffix}`, body); showNode(r.json); return 'done'; };
  const field = (name, placeholder, value = '') => h('input', { name, placeholder, 'aria-label': placeholder, value });
  if (ADMIN) {
    const roles = field('roles', 'roles, comma separated');
    const district = field('district', 'district');
    const venue = field('venue', 'venue');
    const environment = field('environment', 'environment (production)');
    const list = () => roles.value.split(',').map((r) => r.trim()).filter(Boolean);
    const placement = () => ({ district: district.value.trim(), venue: venue.value.trim(),
      environment: environment.value.trim() || undefined });
    const command = h('textarea', { name: 'command', 'aria-label': 'command', placeholder: 'a shell command to run on the node' });
    const output = h('pre', { id: 'command-output', hidden: true });
    actions.append(
      h('div', { class: 'panel actions' },
        action('Reprovision', async () => { await api('POST', `${path}/reprovision`, {}); await load(); return 'requested'; },
          { name: 'reprovision', tone: 'primary' }),
        action('Update node', post('update-node'), { name: 'update-node' }),
        action('Update services', post('update-services'), { name: 'update-services' }),
        action('Drain', post('drain', { draining: true }), { name: 'drain' }),
        action('Undrain', post('drain', { draining: false }), { name: 'undrain' }),
        action('Remove', async () => { await api('DELETE', path); location.assign('/nodes'); return 'removed'; },
          { name: 'remove', tone: 'danger', confirm: `Remove node ${id}? Its token stops working.` })),
      h('div', { class: 'panel actions' }, district, venue, environment, roles,
        action('Approve', async () => post('approve', { roles: list(), ...placement() })(), { name: 'approve' }),
        action('Reject', post('reject'), { name: 'reject', tone: 'danger', confirm: `Reject node ${id}?` }),
        action('Set roles', async () => post('roles', { roles: list() })(), { name: 'roles' }),
        action('Set placement', async () => post('placement', placement())(), { name: 'placement' })),
      h('div', { class: 'panel' }, command,
        action('Run', async () => {
          const r = await api('POST', `${path}/exec`, { command: command.value });
          output.hidden = false;
          output.textContent = `queued ${r.json.id}…`;
          for (;;) {
            const res = await api('GET', `${path}/exec/${encodeURIComponent(r.json.id)}/result`);
            if (res.status === 200) {
              const x = res.json;
              output.textContent = `${x.status} (exit ${x.exit_code ?? '–'})\n${x.stdout}${x.stderr ? `\n--- stderr\n${x.stderr}` : ''}`;
              return x.status;
            }
            await new Promise((ok) => setTimeout(ok, 500));
          }
        }, { name: 'run', tone: 'primary' }), output));
  }

  const eventItem = (e) => h('li', { 'data-type': e.type, 'data-seq': e.seq },
    h('span', { class: 'type', text: e.type }), ' ', h('span', { class: 'muted', title: e.at, text: `${ago(e.at)} · #${e.seq}` }),
    e.cause ? h('span', { class: 'muted', text: ` · ${e.cause}` }) : null,
    h('div', { class: 'muted', text: JSON.stringify(e.data) }));
  // A command's end, from the log; its output is read on demand (admins).
  const ENDS = ['exec.completed', 'exec.timed_out', 'exec.failed', 'exec.cancelled', 'exec.expired'];
  const resultItem = (e) => {
    const out = h('pre', { hidden: true });
    const exec = e.data.exec_id;
    return h('li', { 'data-exec': exec }, h('span', { class: 'type', text: e.type.slice(5) }), ' ',
      h('code', { text: exec }), ' ', h('span', { class: 'muted', title: e.at, text: ago(e.at) }),
      e.data.exit_code !== undefined ? h('span', { class: 'muted', text: ` · exit ${e.data.exit_code ?? '–'}` }) : null, ' ',
      action('Output', async () => {
        const r = (await api('GET', `${path}/exec/${encodeURIComponent(exec)}/result`)).json;
        out.hidden = false;
        out.textContent = r.output_pruned ? '(pruned after its retention)' : `${r.stdout}${r.stderr ? `\n--- stderr\n${r.stderr}` : ''}`;
        return r.status;
      }, { name: 'output' }), out);
  };
  let lastSeq = 0;
  const addEvent = (e) => {
    if (e.seq <= lastSeq) return;
    lastSeq = e.seq;
    timeline.prepend(eventItem(e));
    if (ENDS.includes(e.type) && e.data && e.data.exec_id) {
      results.prepend(resultItem(e));
      while (results.children.length > 20) results.lastChild.remove();
    }
  };
  const loadQueue = coalesce(async () => {
    if (!ADMIN) { queue.replaceChildren(h('p', { class: 'muted', text: 'The command queue is for admins.' })); return; }
    try {
      const q = (await api('GET', `${path}/exec/queue`)).json;
      const items = [...(q.in_flight ? [q.in_flight] : []), ...(q.queued || [])];
      queue.replaceChildren(items.length
        ? h('ul', {}, items.map((c) => h('li', { 'data-exec': c.id }, `${c.id} · ${c.status || 'queued'} · `, h('code', { text: c.command || '' }),
          ' ', action('Cancel', async () => { await api('DELETE', `${path}/exec/queue/${encodeURIComponent(c.id)}`); loadQueue('q'); return 'cancelled'; },
            { name: 'cancel' }))))
        : h('p', { class: 'muted', text: 'No command queued or running.' }));
    } catch (e) { queue.replaceChildren(errorOf(e)); }
  });

  await load();
  try {
    let since = 0;
    for (let i = 0; i < 20; i++) {
      const r = (await api('GET', `${path}/history?since=${since}`)).json;
      r.events.forEach(addEvent);
      if (r.events.length === 0 || r.next_since === since) break;
      since = r.next_since;
    }
  } catch (e) { if (e.status !== 404) timeline.replaceChildren(errorOf(e)); }
  loadQueue('q');
  const refresh = coalesce(load);
  live((e) => {
    addEvent(e);
    refresh('node');
    if (e.type.startsWith('exec.')) loadQueue('q');
  }, `node=${encodeURIComponent(id)}`);
}

// ---- Bodies (/bodies) -----------------------------------------------------------

async function bodiesPage() {
  const panel = h('section', { class: 'panel', id: 'self-healing' }, h('h2', { text: 'Self-Healing' }));
  // When the body's own watchdog should clear an anomaly: since + the limit the body
  // reports (telemetry `watchdog_timeout_s`); past it, the watchdog failed: overdue.
  const anomalies = table(['Body', 'Anomaly', 'Since', 'Lasted', 'Watchdog clears it by'], 'anomalies');
  const clearsBy = (a) => {
    if (!a.expected_clear_at) return h('span', { class: 'muted', text: 'no watchdog reported' });
    const at = Date.parse(a.expected_clear_at);
    const left = Math.max(0, Math.round((at - Date.now()) / 1000));
    return h('span', { 'data-clears': a.expected_clear_at },
      h('span', { title: a.expected_clear_at, text: new Date(at).toLocaleTimeString() }),
      a.overdue ? [' ', badge('overdue', 'bad', 'watchdog')] : ` (in ${duration(left)})`);
  };
  panel.append(anomalies.el);
  const tbl = table(['Body', 'District / venue', 'Online', 'Stream', 'Provider', 'GPU %', 'VRAM MB',
    'Streams', 'GPU mismatch s', 'Heads', 'Force Stop'], 'bodies');
  main.append(panel, h('h2', { text: 'Bodies' }), tbl.el);
  const num = (v) => (v === null || v === undefined ? '–' : String(v));
  const bodyCells = (b) => [
    nodeLink(b.id, b.name), `${b.district || '–'} / ${b.venue || '–'}`,
    badge(b.node_status || '–', b.node_status === 'online' ? 'ok' : 'muted', 'online'),
    b.stream_status === 'streaming' ? badge('streaming', 'info', 'stream') : (b.stream_status || '–'),
    b.provider_status ? badge(b.provider_status, b.provider_status === 'running' ? 'ok' : 'bad', 'provider') : '–',
    num(b.gpu_utilization_pct), num(b.gpu_memory_used_mb), num(b.stream_count), num(b.gpu_mismatch_sec),
    (b.heads || []).map((x) => nodeLink(x.id, x.name)),
    // Always there for admins: a stuck stream is stopped from this row.
    action('Force Stop', async () => {
      const r = (await api('DELETE', `/api/v1/nodes/${encodeURIComponent(b.id)}/stream`)).json;
      return `${r.exec}${r.output ? `: ${r.output.trim()}` : ''}${r.reason ? ` (${r.reason})` : ''}`;
    }, { name: 'force-stop', tone: 'danger' }),
  ];
  const load = coalesce(async () => {
    try {
      const bodies = await all('/api/v1/bodies');
      const keep = new Set(bodies.map((b) => b.id));
      tbl.body.querySelectorAll('tr').forEach((tr) => { if (!keep.has(tr.dataset.key)) tr.remove(); });
      // A redrawn row keeps its Force Stop cell: a stop still waiting for the body
      // writes its answer into that cell, which must still be in the page then.
      for (const b of bodies) {
        const old = tbl.body.querySelector(`tr[data-key="${CSS.escape(b.id)}"]`)?.lastElementChild;
        const tr = row(tbl, b.id, bodyCells(b), false);
        if (old?.querySelector('[data-result]')) tr.lastElementChild.replaceWith(old);
      }
      const list = (await api('GET', '/api/v1/body-anomalies')).json;
      anomalies.body.replaceChildren();
      for (const a of list) {
        row(anomalies, `${a.node_id}/${a.type}`, [nodeLink(a.node_id, a.body_name), badge(a.type, 'bad', 'anomaly'),
          h('span', { title: a.since, text: ago(a.since) }), duration(a.for_s), clearsBy(a)]);
      }
      if (list.length === 0) anomalies.body.append(h('tr', {}, h('td', { colspan: 5, class: 'muted', text: 'No anomaly: every body is healthy.' })));
    } catch (e) { say(e.message, true); }
  });
  live(() => load('all'), 'types=node.*,anomaly.*,stream.*,head.*,session.*');
  load('all');
}

// ---- Heads (/heads) -------------------------------------------------------------

async function headsPage() {
  const tbl = table(['Head', 'Online', 'Status', 'Body', 'Version', 'WireGuard', 'App', 'Routing', 'Latency', 'Screenshot'], 'heads');
  const shot = h('div', { id: 'screenshot' });
  main.append(ADMIN ? h('p', {}, h('a', { href: '/enroll', text: 'Kiosk enrollment QR code' })) : null, tbl.el, shot);
  const d = (x, k) => (x.diagnostics && x.diagnostics[k] !== undefined ? String(x.diagnostics[k]) : '–');
  const load = coalesce(async () => {
    try {
      const heads = await all('/api/v1/heads');
      tbl.body.replaceChildren();
      for (const x of heads) {
        row(tbl, x.id, [nodeLink(x.id, x.name), badge(x.node_status, x.node_status === 'online' ? 'ok' : 'muted', 'online'),
          badge(x.status || '–', x.status === 'streaming' ? 'info' : x.status === 'error' ? 'bad' : 'muted', 'head-status'),
          x.assigned_body_name || '–', d(x, 'version'), d(x, 'wireguard'), d(x, 'app'), d(x, 'routing'), d(x, 'latency_ms'),
          action('Screenshot', async () => {
            const r = await fetch(`/api/v1/heads/${encodeURIComponent(x.id)}/screenshot`, { credentials: 'same-origin' });
            if (!r.ok) throw new Error(((await r.json().catch(() => null)) || {}).error || `${r.status}`);
            const url = URL.createObjectURL(await r.blob());
            shot.replaceChildren(h('h2', { text: `Screenshot of ${x.name}` }), h('img', { src: url, alt: `screenshot of ${x.name}`, style: 'max-width:100%' }));
            return 'shown below';
          }, { name: 'screenshot' })]);
      }
    } catch (e) { say(e.message, true); }
  });
  live(() => load('all'), 'types=node.*,head.*,session.*');
  load('all');
}

// ---- Sessions (/sessions) -------------------------------------------------------

async function sessionsPage() {
  const tbl = table(['Head', 'Body', 'Started', 'Ended', 'Duration', 'How it ended', 'Logs'], 'sessions');
  const logs = h('div', { id: 'session-logs' });
  main.append(tbl.el, logs);
  const showLogs = async (s) => {
    logs.replaceChildren(h('p', { class: 'muted', text: 'fetching the logs of both sides…' }));
    const r = (await api('GET', `/api/v1/sessions/${encodeURIComponent(s.id)}/logs`)).json;
    const side = (name, x) => h('section', { 'data-side': name }, h('h2', { text: `${name}` }),
      x.error ? h('p', { class: 'error', text: x.error }) : null, h('pre', { text: (x.lines || []).join('\n') || '(no lines)' }));
    logs.replaceChildren(h('div', { class: 'columns' }, side(`Body ${s.body_name || s.body_id}`, r.body), side(`Head ${s.head_name || s.head_id}`, r.head)));
    return 'shown below';
  };
  const load = coalesce(async () => {
    try {
      const list = (await api('GET', '/api/v1/sessions')).json;
      tbl.body.replaceChildren();
      for (const s of list) {
        row(tbl, s.id, [nodeLink(s.head_id, s.head_name), nodeLink(s.body_id, s.body_name),
          h('span', { title: s.started_at, text: ago(s.started_at) }),
          s.active ? badge('active', 'info', 'active') : h('span', { title: s.ended_at, text: ago(s.ended_at) }),
          duration(s.duration_s), s.end_reason || '', action('Logs', () => showLogs(s), { name: 'logs' })]);
      }
    } catch (e) { say(e.message, true); }
  });
  live(() => load('all'), 'types=session.*');
  load('all');
}

// ---- Rollouts (/rollouts, /rollouts/{id}) ---------------------------------------
// The library's rollouts, read through hydracluster (`/api/v1/library/…`), live from
// the library's event stream passed through the same way.

const ROLLOUT_TONE = { running: 'info', paused: 'warn', completed: 'ok', completed_with_failures: 'warn',
  aborted: 'bad', cancelled: 'muted', pending: 'muted', requested: 'info', provisioning: 'info', failed: 'bad' };

function progress(done, total, label, wave) {
  return h('div', { class: 'wave', 'data-wave': wave },
    h('div', { text: `${label}: ${done}/${total}` }),
    h('progress', { max: String(Math.max(total, 1)), value: String(done), 'aria-label': label }));
}

/** The waves of a rollout as progress bars: a node counts once it has finished. */
function waves(r) {
  return [[1, 'Wave 1 · bodies'], [2, 'Wave 2 · heads']].map(([wave, label]) => {
    const of = r.nodes.filter((n) => n.wave === wave);
    const done = of.filter((n) => n.state === 'completed' || n.state === 'failed').length;
    const failed = of.filter((n) => n.state === 'failed').length;
    return progress(done, of.length, `${label}${failed ? ` (${failed} failed)` : ''}`, wave);
  });
}

async function rolloutsPage() {
  const tbl = table(['Rollout', 'Experience', 'Environment', 'Version', 'State', 'Progress', 'Started'], 'rollouts');
  main.append(tbl.el);
  const load = coalesce(async () => {
    try {
      const list = (await api('GET', '/api/v1/library/rollouts')).json;
      tbl.body.replaceChildren();
      for (const r of list) {
        row(tbl, r.id, [h('a', { href: `/rollouts/${encodeURIComponent(r.id)}`, text: r.id }), r.experience_id, r.environment,
          r.version || '–', badge(r.state, ROLLOUT_TONE[r.state] || 'muted', 'state'),
          progress(r.counts.completed + r.counts.failed, r.counts.total, `wave ${r.wave || '–'}`, 'all'),
          h('span', { title: r.started_at, text: ago(r.started_at) })]);
      }
      if (list.length === 0) tbl.body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted', text: 'No rollout yet.' })));
    } catch (e) { say(e.message, true); }
  });
  live(() => load('all'), 'types=rollout.*,experience.*', '/api/v1/library/events');
  load('all');
}

async function rolloutPage() {
  const id = page.id;
  const path = `/api/v1/library/rollouts/${encodeURIComponent(id)}`;
  const facts = h('div', { class: 'panel', id: 'rollout' });
  const bars = h('div', { class: 'panel', id: 'waves' });
  const buttons = h('div', { class: 'actions', id: 'rollout-actions' });
  const tbl = table(['Node', 'Kind', 'Wave', 'State', 'Error', 'Version', 'Requested', 'Finished'], 'rollout-nodes');
  main.append(facts, bars, buttons, tbl.el);
  const act = (name, label, tone) => action(label, async () => {
    const r = (await api('POST', `${path}/${name}`, {})).json;
    load('r');
    return r && r.id && r.id !== id ? `started ${r.id}` : 'done';
  }, { name, tone });
  buttons.append(...[act('pause', 'Pause'), act('resume', 'Resume'), act('cancel', 'Cancel', 'danger'),
    act('rollback', 'Rollback'), act('retry', 'Retry')].filter(Boolean));
  const load = coalesce(async () => {
    try {
      const r = (await api('GET', path)).json;
      const dl = h('dl', { class: 'fields' });
      for (const k of ['experience_id', 'environment', 'build', 'version', 'district', 'venues', 'started_at', 'finished_at', 'reason']) {
        dl.append(h('dt', { text: k }), h('dd', { 'data-field': k, text: Array.isArray(r[k]) ? r[k].join(', ') : r[k] ?? '–' }));
      }
      if (r.origin) dl.append(h('dt', { text: 'origin' }), h('dd', {}, `${r.origin.kind} of `, h('a', { href: `/rollouts/${encodeURIComponent(r.origin.rollout_id)}`, text: r.origin.rollout_id })));
      facts.replaceChildren(h('p', {}, badge(r.state, ROLLOUT_TONE[r.state] || 'muted', 'state'), ` wave ${r.wave || '–'}`), dl);
      bars.replaceChildren(...waves(r),
        r.skipped.length ? h('p', { class: 'muted', text: `skipped: ${r.skipped.map((x) => `${x.node_id} (${x.reason})`).join(', ')}` }) : '');
      // Only what the rollout's state allows is offered; the library still decides.
      const open = r.state === 'running' || r.state === 'paused';
      const offered = { pause: r.state === 'running', resume: r.state === 'paused', cancel: open, rollback: !open, retry: !open };
      for (const [name, on] of Object.entries(offered)) {
        const b = buttons.querySelector(`[data-action=${name}]`);
        if (b) b.parentElement.hidden = !on;
      }
      for (const n of r.nodes) {
        row(tbl, n.node_id, [nodeLink(n.node_id), n.kind, String(n.wave), badge(n.state, ROLLOUT_TONE[n.state] || 'muted', 'node-state'),
          n.error || '', n.version || '–', n.requested_at ? ago(n.requested_at) : '–', n.finished_at ? ago(n.finished_at) : '–']);
      }
    } catch (e) { facts.replaceChildren(errorOf(e)); }
  });
  live((e) => { if (!e.data || !e.data.rollout_id || e.data.rollout_id === id) load('r'); }, 'types=rollout.*', '/api/v1/library/events');
  load('r');
}

// ---- Events (/events) -----------------------------------------------------------

function eventsPage() {
  const types = h('input', { name: 'types', placeholder: 'types, e.g. provision.*,exec.completed', 'aria-label': 'event types' });
  const node = h('input', { name: 'node', placeholder: 'node id', 'aria-label': 'node id' });
  const list = h('ol', { class: 'timeline', id: 'events' });
  let source = null;
  const start = () => {
    source?.close();
    list.replaceChildren();
    const q = new URLSearchParams();
    if (types.value.trim()) q.set('types', types.value.trim());
    if (node.value.trim()) q.set('node', node.value.trim());
    // The last 50 events first, then live.
    q.set('since', String(Math.max(0, Number(page.seq || 0) - 50)));
    source = live((e) => {
      list.prepend(h('li', { 'data-type': e.type, 'data-seq': e.seq }, h('span', { class: 'type', text: e.type }), ' ',
        h('span', { class: 'muted', text: `#${e.seq} · ${e.at}` }), ' ',
        e.data && e.data.node_id ? nodeLink(e.data.node_id) : null,
        h('div', { class: 'muted', text: JSON.stringify(e.data) })));
      while (list.children.length > 500) list.lastChild.remove();
    }, q.toString());
  };
  main.append(h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); start(); } },
    types, node, h('button', { type: 'submit', text: 'Filter' })), list);
  start();
}

const pages = {
  nodes: fleetPage, node: nodePage, bodies: bodiesPage, heads: headsPage, sessions: sessionsPage,
  rollouts: rolloutsPage, rollout: rolloutPage, events: eventsPage,
};
if (pages[page.page]) pages[page.page]();
