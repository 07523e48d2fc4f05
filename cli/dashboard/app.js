'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const SEVS = ['sev1', 'sev2', 'sev3'];
  const STATUSES = ['unresolved', 'open', 'ack', 'resolved', 'all'];
  const EVENT_KINDS = ['created', 'acked', 'resolved', 'snoozed', 'snooze_expired', 'silence_ended',
    'reopened', 'escalated', 'auto_resolved', 'flapping', 'flapping_ended', 'deduplicated',
    'unsnoozed', 'silenced', 'note', 'updated', 'message',
    'playbook_started', 'playbook_succeeded', 'playbook_failed'];
  const NOTIFY_KINDS = new Set(['created', 'reopened', 'escalated', 'snooze_expired', 'silence_ended']);
  const LIMIT = 500;

  const state = {
    token: null,
    session: null,
    filters: { status: 'unresolved', severity: new Set(SEVS), agent: '' },
    incidents: [],
    selectedId: null,
    detailId: null,
    detail: null,
    es: null,
    esOpen: false,
    db: null,
    position: null,
    baseline: null,
    seen: new Set(),
    listSeq: 0,
    detailSeq: 0,
    needToken: false,
    busy: false,
    loadedOnce: false,
  };

  /* ---------- helpers ---------- */

  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'class') n.className = v;
        else if (k === 'text') n.textContent = v;
        else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
        else n.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c == null || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  function parseTime(s) {
    if (!s) return null;
    let t = String(s).trim().replace(' ', 'T');
    t = t.replace(/(\.\d{3})\d+/, '$1');
    t = t.replace(/([+-]\d\d)$/, '$1:00').replace(/([+-]\d\d)(\d\d)$/, '$1:$2');
    const d = new Date(t);
    return isNaN(d.getTime()) ? null : d;
  }

  const pad = (n) => String(n).padStart(2, '0');
  function absUTC(s) {
    const d = parseTime(s);
    if (!d) return s ? String(s) : '';
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }

  function relTime(s, now = Date.now()) {
    const d = parseTime(s);
    if (!d) return '—';
    let sec = Math.round((now - d.getTime()) / 1000);
    const future = sec < 0;
    sec = Math.abs(sec);
    let txt;
    if (sec < 10) return future ? 'in a moment' : 'just now';
    if (sec < 60) txt = `${sec} s`;
    else if (sec < 3600) txt = `${Math.floor(sec / 60)} min`;
    else if (sec < 86400) {
      const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60);
      txt = h < 6 && m ? `${h} h ${m} min` : `${h} h`;
    } else {
      const days = Math.floor(sec / 86400);
      txt = days === 1 ? '1 day' : `${days} days`;
    }
    return future ? `in ${txt}` : `${txt} ago`;
  }

  function timeEl(s, cls) {
    if (!s) return el('span', { class: 'muted' }, '—');
    return el('time', { class: 'rel' + (cls ? ' ' + cls : ''), datetime: s, title: absUTC(s), 'data-rel': s }, relTime(s));
  }

  function isFuture(s) {
    const d = parseTime(s);
    return !!d && d.getTime() > Date.now();
  }

  function sevLabel(s) { return s ? String(s).toUpperCase() : '?'; }
  function sevClass(s) { return SEVS.includes(s) ? s : 'sevx'; }
  const STATUS_LABEL = { open: 'open', ack: 'ack', resolved: 'resolved' };

  function sevBadge(sev) {
    return el('span', { class: `sev sev-${sevClass(sev)}` }, sevLabel(sev));
  }
  function statusBadge(st, inc) {
    let label = STATUS_LABEL[st] || String(st || '?');
    let cls = `st st-${STATUS_LABEL[st] ? st : 'x'}`;
    if (inc && st !== 'resolved' && isFuture(inc.snoozed_until)) { label = 'snoozed'; cls += ' st-snoozed'; }
    return el('span', { class: cls }, label);
  }

  function canAct() {
    const s = state.session;
    return !!s && s.role === 'operator' && s.read_only === false;
  }

  let toastTimer = null;
  function toast(msg, kind = 'error') {
    const t = $('toast');
    t.textContent = msg;
    t.className = 'toast toast-' + kind;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 10000 : 4000);
  }

  /* ---------- auth / fetch ---------- */

  class HttpError extends Error {
    constructor(status, message, body) { super(message); this.status = status; this.body = body; }
  }

  function initToken() {
    const url = new URL(location.href);
    const t = url.searchParams.get('token');
    if (t) {
      try { sessionStorage.setItem('gate_bridge.token', t); } catch (e) { /* storage disabled */ }
      state.token = t;
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + (url.search ? url.search : '') + url.hash);
    } else {
      try { state.token = sessionStorage.getItem('gate_bridge.token'); } catch (e) { state.token = null; }
    }
  }

  async function api(path, opts = {}) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method: opts.method || 'GET',
        headers,
        body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
        cache: 'no-store',
      });
    } catch (e) {
      throw new HttpError(0, 'Server unreachable');
    }
    let body = null;
    const text = await res.text();
    if (text) { try { body = JSON.parse(text); } catch (e) { body = null; } }
    if (res.status === 401) { askToken(); }
    if (!res.ok) {
      const msg = (body && body.error && body.error.message) || `HTTP ${res.status} ${res.statusText || ''}`.trim();
      throw new HttpError(res.status, msg, body);
    }
    return body;
  }

  function askToken() {
    if (state.needToken) return;
    state.needToken = true;
    showOverlay('token-dialog');
    const inp = $('token-input');
    inp.value = '';
    setTimeout(() => inp.focus(), 0);
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('token-input').value.trim();
    if (!v) return;
    state.token = v;
    try { sessionStorage.setItem('gate_bridge.token', v); } catch (err) { /* ignore */ }
    state.needToken = false;
    hideOverlay('token-dialog');
    loadSession();
    connect(true);
    refreshAll();
  });

  /* ---------- URL state ---------- */

  function readURL() {
    const p = new URLSearchParams(location.search);
    const st = p.get('status');
    state.filters.status = STATUSES.includes(st) ? st : 'unresolved';
    if (p.has('severity')) {
      const list = (p.get('severity') || '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => SEVS.includes(s));
      state.filters.severity = new Set(list);
    } else state.filters.severity = new Set(SEVS);
    state.filters.agent = p.get('agent') || '';
    const inc = p.get('incident');
    state.detailId = inc && /^\d+$/.test(inc) ? inc : null;
    state.selectedId = state.detailId;
  }

  function writeURL() {
    const p = new URLSearchParams(location.search);
    p.delete('token');
    const f = state.filters;
    if (f.status !== 'unresolved') p.set('status', f.status); else p.delete('status');
    if (f.severity.size !== SEVS.length) p.set('severity', SEVS.filter((s) => f.severity.has(s)).join(','));
    else p.delete('severity');
    if (f.agent) p.set('agent', f.agent); else p.delete('agent');
    if (state.detailId) p.set('incident', state.detailId); else p.delete('incident');
    const q = p.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  }

  function syncFilterControls() {
    $('filter-status').value = state.filters.status;
    for (const s of SEVS) $('filter-' + s).checked = state.filters.severity.has(s);
    $('filter-agent').value = state.filters.agent;
  }

  /* ---------- refresh scheduling ---------- */

  function throttle(fn, ms) {
    let timer = null, last = 0, again = false, running = false;
    const run = async () => {
      timer = null; last = Date.now(); running = true; again = false;
      try { await fn(); } finally {
        running = false;
        if (again) schedule();
      }
    };
    const schedule = () => {
      if (running) { again = true; return; }
      if (timer) return;
      timer = setTimeout(run, Math.max(0, ms - (Date.now() - last)));
    };
    return schedule;
  }

  const scheduleList = throttle(loadList, 250);
  const scheduleCounts = throttle(loadCounts, 250);
  const scheduleDetail = throttle(loadDetail, 250);

  function refreshAll() {
    scheduleCounts();
    scheduleList();
    if (state.detailId) scheduleDetail();
  }

  /* ---------- session, counts ---------- */

  async function loadSession() {
    try {
      const s = await api('api/session');
      state.session = s;
      const info = $('session-info');
      info.textContent = '';
      const role = s.role === 'operator' && !s.read_only ? 'operator' : (s.role === 'operator' ? 'operator (read-only)' : 'viewer');
      info.append(el('span', { class: 'role role-' + (canAct() ? 'operator' : 'viewer') }, role));
      if (s.name) info.append(el('span', { class: 'who' }, String(s.name)));
      if (!s.auth) info.title = 'No tokens configured: read-only, loopback only';
      $('version').textContent = s.version ? `gate_bridge ${s.version}` : 'gate_bridge';
      document.body.classList.toggle('can-act', canAct());
      if (state.detail) renderDetail();
    } catch (e) {
      if (e.status !== 401) $('version').textContent = 'gate_bridge';
    }
  }

  async function loadCounts() {
    try {
      const c = await api('api/counts');
      for (const k of ['sev1', 'sev2', 'sev3', 'open', 'ack']) {
        const n = Number(c[k] || 0);
        const node = $('count-' + k);
        node.textContent = String(n);
        node.parentElement.classList.toggle('zero', n === 0);
      }
      if (c.position != null) setPosition(c.position);
      const total = Number(c.sev1 || 0) + Number(c.sev2 || 0) + Number(c.sev3 || 0);
      document.title = (total ? `(${total}) ` : '') + 'gate_bridge — incidents';
    } catch (e) { retryLater(e, scheduleCounts); }
  }

  // a server or database hiccup (a pool connection lost in a restart): try again shortly
  function retryLater(e, again) {
    if (e && (e.status === 0 || e.status >= 500)) setTimeout(() => { if (state.esOpen && state.db === 'up') again(); }, 1500);
  }

  function setPosition(p) {
    const n = Number(p);
    if (!Number.isFinite(n)) return;
    if (state.position == null || n > state.position) state.position = n;
    if (state.baseline == null) state.baseline = n;
    $('stream-position').textContent = `stream @ ${state.position}`;
  }

  /* ---------- list ---------- */

  function listQuery() {
    const f = state.filters;
    const p = new URLSearchParams();
    p.set('status', f.status);
    if (f.severity.size !== SEVS.length) p.set('severity', SEVS.filter((s) => f.severity.has(s)).join(','));
    if (f.agent) p.set('agent', f.agent);
    p.set('limit', String(LIMIT));
    return 'api/incidents?' + p.toString();
  }

  async function loadList() {
    const seq = ++state.listSeq;
    if (state.filters.severity.size === 0) {
      state.incidents = [];
      renderList();
      return;
    }
    try {
      const r = await api(listQuery());
      if (seq !== state.listSeq) return;
      state.incidents = Array.isArray(r && r.incidents) ? r.incidents : [];
      $('list-error').hidden = true;
      state.loadedOnce = true;
      renderList();
      $('last-update').textContent = 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC';
    } catch (e) {
      if (seq !== state.listSeq) return;
      const b = $('list-error');
      b.textContent = e.status === 401 ? 'Access token required.' : `Could not load incidents: ${e.message}`;
      b.hidden = false;
      retryLater(e, scheduleList);
      if (!state.loadedOnce) {
        $('incident-table').hidden = true;
        $('empty-state').hidden = true;
        $('list-status').textContent = '';
      }
    }
  }

  function flagsCell(inc) {
    const td = el('td', { class: 'c-flags' });
    if (inc.status !== 'resolved' && isFuture(inc.snoozed_until)) {
      td.append(el('span', { class: 'flag flag-snoozed', title: 'Snoozed until ' + absUTC(inc.snoozed_until) },
        'snoozed ', el('span', { class: 'rel', 'data-rel': inc.snoozed_until }, relTime(inc.snoozed_until))));
    }
    if (inc.silenced) td.append(el('span', { class: 'flag flag-silenced', title: inc.silence_id != null ? `Silenced by silence #${inc.silence_id}` : 'Silenced' }, 'silenced'));
    if (inc.flapping) td.append(el('span', { class: 'flag flag-flapping', title: 'Flapping: re-fires are not announced' }, 'flapping'));
    return td;
  }

  // The issues opened for an incident (GitHub, Jira), by destination name;
  // only http(s) URLs become links.
  function issueRefs(inc) {
    const refs = inc && inc.external_refs && typeof inc.external_refs === 'object' ? inc.external_refs : {};
    return Object.keys(refs).sort().map((name) => {
      const r = refs[name] && typeof refs[name] === 'object' ? refs[name] : {};
      const url = typeof r.url === 'string' && /^https?:\/\/\S+$/i.test(r.url) ? r.url : null;
      const label = r.kind === 'jira' ? String(r.key || r.id || '?') : '#' + String(r.id || '?');
      return { name, kind: String(r.kind || ''), label, url };
    });
  }
  function issueLink(ref) {
    const title = `${ref.kind === 'jira' ? 'Jira' : ref.kind === 'github' ? 'GitHub' : 'External'} issue (destination ${ref.name})`;
    const attrs = { class: 'issue-link issue-' + ref.kind.replace(/[^a-z]/g, ''), title, 'data-destination': ref.name };
    if (!ref.url) return el('span', attrs, ref.label);
    return el('a', { ...attrs, href: ref.url, target: '_blank', rel: 'noopener noreferrer' }, ref.label);
  }

  function rowFor(inc) {
    const id = String(inc.id);
    const tr = el('tr', {
      'data-incident-id': id, 'data-status': inc.status, 'data-severity': inc.severity,
      tabindex: '0', class: 'row sevrow-' + sevClass(inc.severity) + (inc.status === 'resolved' ? ' is-resolved' : ''),
      'aria-selected': String(id === state.selectedId),
    });
    if (id === state.detailId) tr.classList.add('is-open');
    const summary = inc.summary || inc.key || '(no summary)';
    tr.append(
      el('td', { class: 'c-sev' }, sevBadge(inc.severity)),
      el('td', { class: 'c-status' }, statusBadge(inc.status, inc)),
      el('td', { class: 'c-incident' },
        el('div', { class: 'summary', title: summary }, summary),
        el('div', { class: 'key' }, el('span', { class: 'iid' }, '#' + id),
          el('span', { class: 'flags-inline' }, ...flagsCell(inc).childNodes), ' ', el('span', { title: inc.key || '' }, inc.key || ''),
          el('span', { class: 'agent-inline' }, inc.agent ? ' · ' + inc.agent : ''),
          ...issueRefs(inc).map(issueLink))),
      el('td', { class: 'c-agent', title: inc.agent || '' }, inc.agent || '—'),
      el('td', { class: 'c-occ num' }, inc.occurrences != null ? String(inc.occurrences) : '—'),
      el('td', { class: 'c-seen' }, timeEl(inc.last_seen_at)),
      flagsCell(inc),
    );
    return tr;
  }

  function emptyText() {
    const f = state.filters;
    if (f.severity.size === 0) return 'No severity selected.';
    const filtered = f.agent || f.severity.size !== SEVS.length;
    if (f.status === 'unresolved' && !filtered) return 'No unresolved incidents — all gates passing.';
    if (f.status === 'open' && !filtered) return 'No open incidents — nothing waiting for an acknowledgement.';
    if (f.status === 'ack' && !filtered) return 'No acknowledged incidents.';
    if (f.status === 'resolved' && !filtered) return 'No resolved incidents yet.';
    return 'No incidents match these filters.';
  }

  let rowCache = new Map();
  function renderList() {
    const tbody = $('incident-rows');
    const active = document.activeElement;
    const focusedId = active && active.closest && active.closest('#incident-rows tr') ? active.getAttribute('data-incident-id') : null;
    const prevIndex = focusedId ? [...tbody.children].indexOf(rowById(focusedId)) : -1;
    const next = new Map();
    const rows = [];
    for (const inc of state.incidents) {
      const id = String(inc.id);
      const json = JSON.stringify(inc);
      const old = rowCache.get(id);
      let tr;
      if (old && old.json === json) tr = old.tr;
      else {
        tr = rowFor(inc);
        if (old || (rowCache.size && state.listRendered)) {
          tr.classList.add('flash');
          setTimeout(() => tr.classList.remove('flash'), 1700);
        }
      }
      tr.setAttribute('aria-selected', String(id === state.selectedId));
      tr.classList.toggle('is-open', id === state.detailId);
      next.set(id, { json, tr });
      rows.push(tr);
    }
    rows.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
    while (tbody.children.length > rows.length) tbody.lastChild.remove();
    rowCache = next;
    state.listRendered = true;
    const n = state.incidents.length;
    $('incident-table').hidden = n === 0;
    $('empty-state').hidden = n !== 0;
    $('empty-text').textContent = emptyText();
    const clear = state.filters.status !== 'resolved' && !state.filters.agent && state.filters.severity.size === SEVS.length;
    $('empty-state').classList.toggle('is-clear', clear);
    $('empty-icon').textContent = clear ? '✓' : '∅';
    $('reset-filters').hidden = clear || (state.filters.status === 'resolved' && !state.filters.agent && state.filters.severity.size === SEVS.length);
    $('list-status').textContent = n === LIMIT ? `first ${n} incidents` : `${n} incident${n === 1 ? '' : 's'}`;
    if (focusedId && document.activeElement !== rowById(focusedId)) {
      const r = rowById(focusedId) || (rows.length && prevIndex >= 0 ? rows[Math.min(prevIndex, rows.length - 1)] : null);
      if (r) {
        r.focus({ preventScroll: true });
        if (r.getAttribute('data-incident-id') !== state.selectedId) select(r.getAttribute('data-incident-id'), { focus: false });
      }
    }
  }

  function rowById(id) {
    return id == null ? null : $('incident-rows').querySelector(`tr[data-incident-id="${CSS.escape(String(id))}"]`);
  }

  function select(id, opts = {}) {
    state.selectedId = id == null ? null : String(id);
    for (const r of $('incident-rows').children) r.setAttribute('aria-selected', String(r.getAttribute('data-incident-id') === state.selectedId));
    const r = rowById(state.selectedId);
    if (r && opts.focus !== false) {
      r.focus({ preventScroll: true });
      r.scrollIntoView({ block: 'nearest' });
    }
  }

  function moveSelection(delta) {
    const rows = [...$('incident-rows').children];
    if (!rows.length) return;
    let i = rows.findIndex((r) => r.getAttribute('data-incident-id') === state.selectedId);
    if (i < 0) i = delta > 0 ? -1 : rows.length;
    i = Math.max(0, Math.min(rows.length - 1, i + delta));
    const id = rows[i].getAttribute('data-incident-id');
    select(id);
    if (state.detailId && state.detailId !== id && !window.matchMedia('(max-width: 900px)').matches) openDetail(id);
  }

  $('incident-rows').addEventListener('click', (e) => {
    if (e.target.closest('a[href]')) return;   // an issue's link opens the issue
    const tr = e.target.closest('tr[data-incident-id]');
    if (!tr) return;
    const id = tr.getAttribute('data-incident-id');
    select(id);
    openDetail(id);
  });
  $('incident-rows').addEventListener('focusin', (e) => {
    const tr = e.target.closest('tr[data-incident-id]');
    if (tr && tr.getAttribute('data-incident-id') !== state.selectedId) select(tr.getAttribute('data-incident-id'), { focus: false });
  });

  /* ---------- detail ---------- */

  function openDetail(id) {
    state.detailId = String(id);
    state.selectedId = state.detailId;
    if (!state.detail || String(state.detail.incident.id) !== state.detailId) {
      state.detail = null;
      renderDetailLoading();
    }
    writeURL();
    for (const r of $('incident-rows').children) r.classList.toggle('is-open', r.getAttribute('data-incident-id') === state.detailId);
    document.body.classList.add('detail-open');
    loadDetail();
  }

  function closeDetail() {
    if (!state.detailId) return;
    const id = state.detailId;
    state.detailId = null;
    state.detail = null;
    state.detailSeq++;
    $('incident-detail').hidden = true;
    $('incident-detail').replaceChildren();
    document.body.classList.remove('detail-open');
    for (const r of $('incident-rows').children) r.classList.remove('is-open');
    writeURL();
    const r = rowById(id);
    if (r) r.focus({ preventScroll: true });
  }

  function renderDetailLoading() {
    const d = $('incident-detail');
    d.hidden = false;
    d.replaceChildren(el('div', { class: 'detail-head' },
      el('div', { class: 'detail-title' }, el('span', { class: 'muted' }, `Incident #${state.detailId}`)),
      closeButton()), el('p', { class: 'muted pad' }, 'Loading…'));
  }

  function closeButton() {
    return el('button', { type: 'button', class: 'btn btn-ghost btn-icon detail-close', 'aria-label': 'Close detail (Esc)', title: 'Close (Esc)', onclick: closeDetail }, '×');
  }

  async function loadDetail() {
    const id = state.detailId;
    if (!id) return;
    const seq = ++state.detailSeq;
    try {
      const r = await api('api/incidents/' + encodeURIComponent(id));
      if (seq !== state.detailSeq || id !== state.detailId) return;
      if (!r || !r.incident) throw new HttpError(0, 'Malformed response');
      state.detail = r;
      renderDetail();
    } catch (e) {
      if (seq !== state.detailSeq || id !== state.detailId) return;
      retryLater(e, scheduleDetail);
      if (state.detail && e.status !== 404) return;
      const d = $('incident-detail');
      d.hidden = false;
      d.replaceChildren(el('div', { class: 'detail-head' },
        el('div', { class: 'detail-title' }, el('span', { class: 'muted' }, `Incident #${id}`)), closeButton()),
        el('p', { class: 'banner banner-error' }, e.status === 404 ? `Incident #${id} not found.` : `Could not load incident #${id}: ${e.message}`));
    }
  }

  function kv(dl, label, ...value) {
    dl.append(el('dt', null, label), el('dd', null, ...value));
  }
  function whoWhen(by, at) {
    if (!at && !by) return [el('span', { class: 'muted' }, '—')];
    const out = [];
    if (at) out.push(timeEl(at), el('span', { class: 'muted abs' }, ' ' + absUTC(at)));
    if (by) out.push(el('span', { class: 'muted' }, ' by '), el('strong', null, by));
    return out;
  }

  /*
   * A runbook's link: an http(s) URL as it is, a page of docs/runbooks/ at
   * its path beside the dashboard (serve carries those pages), else none.
   */
  function runbookHref(url) {
    if (typeof url !== 'string') return null;
    if (/^https?:\/\/\S+$/i.test(url)) return url;
    if (/^docs\/runbooks\/[a-z0-9_.-]+\.md(#[A-Za-z0-9_-]*)?$/.test(url)) return url;
    return null;
  }
  function docLink(href, cls, ...text) {
    return el('a', { href, class: cls, target: '_blank', rel: 'noopener noreferrer' }, ...text);
  }

  /*
   * A suggested playbook: p is the registry's word on it (the API's
   * playbooks), or only its name where the token's role may not read the
   * registry.
   */
  function playbookItem(p, incidentId, resolved) {
    const name = typeof p === 'string' ? p : String(p.name);
    if (typeof p === 'string' && /^https?:\/\/\S+$/i.test(p)) return el('li', null, docLink(p, null, p));
    const href = typeof p === 'object' ? runbookHref(p.runbook_url) : null;
    const nameEl = el('code', { class: 'pb-name' }, name);
    const li = el('li', { class: 'pb', 'data-playbook': name },
      href ? docLink(href, 'pb-link', nameEl) : nameEl);
    if (typeof p !== 'object') return li;
    if (!p.registered) {
      li.append(el('span', { class: 'muted small' }, ' not in the registry'));
      return li;
    }
    li.append(' ', el('span', { class: 'pb-title' }, p.title || ''),
      ' ', el('span', { class: `flag pb-risk pb-risk-${p.risk === 'low' ? 'low' : 'high'}`, title: p.risk === 'low' ? 'Low risk: safe to repeat' : 'High risk: changes what users get' }, p.risk + ' risk'));
    if (p.auto_run) li.append(' ', el('span', { class: 'flag pb-auto', title: 'Runs by itself once per incident (tick)' }, 'auto'));
    if (href) li.append(' ', docLink(href, 'pb-runbook', 'runbook'));
    if (p.action && canAct()) {
      li.append(' ', el('button', {
        type: 'button', class: 'btn btn-small pb-run', disabled: resolved || state.busy,
        title: resolved ? 'The incident is resolved' : `Run ${name} on #${incidentId}`,
        onclick: () => doRun(incidentId, name, p.risk),
      }, 'Run'));
    } else if (!p.action) {
      li.append(' ', el('span', { class: 'muted small' }, 'by hand'));
    }
    return li;
  }

  function detailText(ev) {
    const d = ev.detail && typeof ev.detail === 'object' ? { ...ev.detail } : ev.detail;
    const parts = [];
    if (d && typeof d === 'object') {
      if (d.note != null && d.note !== '') { parts.push(el('div', { class: 'tl-note' }, String(d.note))); delete d.note; }
      if (ev.event === 'escalated' && d.from && d.to) {
        parts.push(el('div', null, sevBadge(d.from), ' → ', sevBadge(d.to)));
        delete d.from; delete d.to;
      }
      if (d.until || d.snoozed_until) {
        const u = d.until || d.snoozed_until;
        parts.push(el('div', { class: 'muted' }, (ev.event === 'snooze_expired' ? 'was snoozed until ' : 'until ') + absUTC(u)));
        delete d.until; delete d.snoozed_until;
      }
      if (ev.event === 'created') return parts;
      const rest = Object.entries(d);
      if (rest.length) {
        const txt = rest.map(([k, v]) => `${k} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`).join(' · ');
        parts.push(el('div', { class: 'tl-detail', title: JSON.stringify(d, null, 2) }, txt.length > 240 ? txt.slice(0, 237) + '…' : txt));
      }
    } else if (d != null) parts.push(el('code', { class: 'tl-detail' }, String(d)));
    return parts;
  }

  function renderDetail() {
    const r = state.detail;
    if (!r) return;
    const inc = r.incident;
    const id = String(inc.id);
    const st = inc.status;
    const d = $('incident-detail');
    const wasFocused = d.contains(document.activeElement) ? document.activeElement.id : null;
    const scroll = d.getAttribute('data-shown') === id ? d.scrollTop : 0;

    const head = el('div', { class: 'detail-head' },
      el('div', { class: 'detail-title' }, sevBadge(inc.severity), statusBadge(st, inc), el('span', { class: 'iid' }, '#' + id)),
      closeButton());

    const title = el('h2', { class: 'detail-summary' }, inc.summary || '(no summary)');
    const key = el('div', { class: 'detail-key' }, el('code', null, inc.key || ''));

    let actions = null;
    if (canAct()) {
      const resolved = st === 'resolved';
      actions = el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'btn btn-primary', id: 'action-ack', disabled: resolved || st === 'ack', onclick: () => doAck(id), title: 'Acknowledge (a)' }, 'Ack', el('kbd', null, 'a')),
        el('button', { type: 'button', class: 'btn', id: 'action-resolve', disabled: resolved, onclick: () => openResolve(id), title: 'Resolve (r)' }, 'Resolve', el('kbd', null, 'r')),
        el('button', { type: 'button', class: 'btn', id: 'action-snooze', disabled: resolved, onclick: () => openSnooze(id), title: 'Snooze (s)' }, 'Snooze', el('kbd', null, 's')));
    }

    const dl = el('dl', { class: 'kv' });
    kv(dl, 'Agent', inc.agent || '—');
    kv(dl, 'Kind', inc.kind || '—', inc.violation_type ? el('span', { class: 'muted' }, ' · ' + inc.violation_type) : null);
    if (inc.subject != null && inc.subject !== '') kv(dl, 'Subject', typeof inc.subject === 'object' ? JSON.stringify(inc.subject) : String(inc.subject));
    kv(dl, 'Occurrences', el('span', { class: 'num' }, inc.occurrences != null ? String(inc.occurrences) : '—'));
    kv(dl, 'First seen', ...whoWhen(null, inc.first_seen_at));
    kv(dl, 'Last seen', ...whoWhen(null, inc.last_seen_at));
    kv(dl, 'Acked', ...whoWhen(inc.acked_by, inc.acked_at));
    if (inc.snoozed_until) {
      kv(dl, 'Snoozed until', isFuture(inc.snoozed_until) ? timeEl(inc.snoozed_until) : el('span', { class: 'muted' }, 'expired'), el('span', { class: 'muted abs' }, ' ' + absUTC(inc.snoozed_until)));
    }
    kv(dl, 'Resolved', ...whoWhen(inc.resolved_by, inc.resolved_at));
    if (inc.resolution_note) kv(dl, 'Note', el('span', { class: 'note' }, inc.resolution_note));
    const flags = [];
    if (inc.silenced) flags.push(el('span', { class: 'flag flag-silenced' }, inc.silence_id != null ? `silenced (#${inc.silence_id})` : 'silenced'));
    if (inc.flapping) flags.push(el('span', { class: 'flag flag-flapping' }, 'flapping'));
    if (!inc.silenced && inc.silence_id != null) flags.push(el('span', { class: 'muted' }, `silence #${inc.silence_id}`));
    kv(dl, 'Flags', ...(flags.length ? flags : [el('span', { class: 'muted' }, 'none')]));
    const refs = issueRefs(inc);
    if (refs.length) {
      kv(dl, 'Issues', el('span', { class: 'issues' }, ...refs.map((x) =>
        el('span', { class: 'issue' }, issueLink(x), el('span', { class: 'muted' }, ' ' + x.name)))));
    }

    const sections = [];
    const pbs = Array.isArray(r.playbooks) ? r.playbooks : (Array.isArray(inc.playbooks) ? inc.playbooks : []);
    sections.push(el('section', { class: 'dsec', id: 'detail-playbooks' }, el('h3', null, 'Playbooks'),
      pbs.length ? el('ul', { class: 'playbooks' }, ...pbs.map((p) => playbookItem(p, id, st === 'resolved'))) : el('p', { class: 'muted small' }, 'No playbook matched.'),
      el('p', { class: 'runbooks small muted' }, 'Runbooks: ',
        docLink('docs/runbooks/severity-tiers.md#what-the-tiers-mean', null, `what ${sevLabel(inc.severity)} means`), ' · ',
        docLink('docs/runbooks/escalation.md', null, 'on-call escalation'), ' · ',
        docLink('docs/runbooks/README.md', null, 'all runbooks'))));

    const tl = Array.isArray(r.timeline) ? r.timeline : [];
    const ol = el('ol', { class: 'timeline' });
    for (const ev of tl) {
      ol.append(el('li', { class: 'tl-item tl-' + String(ev.event).replace(/[^a-z_]/g, '') + (ev.silenced ? ' tl-silenced' : ''), 'data-event': ev.event },
        el('div', { class: 'tl-time' }, timeEl(ev.at), el('div', { class: 'abs muted' }, absUTC(ev.at).replace(' UTC', ''))),
        el('div', { class: 'tl-body' },
          el('div', { class: 'tl-line' },
            el('span', { class: 'tl-event' }, String(ev.event || '?').replace(/_/g, ' ')),
            ev.actor ? el('span', { class: 'tl-actor' }, ev.actor) : null,
            ev.silenced ? el('span', { class: 'flag flag-silenced', title: 'Recorded but not announced (silence or flapping)' }, 'silenced') : null,
            ev.position == null ? el('span', { class: 'muted small' }, 'uncommitted') : el('span', { class: 'tl-pos muted' }, '@' + ev.position)),
          ...detailText(ev))));
    }
    sections.push(el('section', { class: 'dsec' }, el('h3', null, 'Timeline ', el('span', { class: 'muted count' }, String(tl.length))),
      tl.length ? ol : el('p', { class: 'muted small' }, 'No events.')));

    const dv = Array.isArray(r.deliveries) ? r.deliveries : [];
    // a delivery being sent, or due within the minute (an issue being
    // opened, say): look again shortly, as no event tells of its outcome
    clearTimeout(state.detailPoll);
    const soon = (x) => { const t = parseTime(x.next_attempt_at); return !t || t.getTime() - Date.now() < 60000; };
    if (dv.some((x) => x.status === 'sending' || (x.status === 'pending' && soon(x)))) {
      state.detailPoll = setTimeout(() => { if (state.detailId === id) scheduleDetail(); }, 3000);
    }
    if (dv.length) {
      const tb = el('tbody');
      for (const x of dv) {
        tb.append(el('tr', { class: 'dv-' + String(x.status || '').replace(/[^a-z_]/g, '') },
          el('td', { class: 'dv-dest' }, x.destination != null ? String(x.destination) : '—'),
          el('td', null, x.event != null ? String(x.event) : '—', x.request ? el('span', { class: 'muted' }, ' · ' + String(x.request)) : null),
          el('td', null, el('span', { class: 'dv-status' }, x.status != null ? String(x.status) : '—')),
          el('td', { class: 'num' }, x.attempts != null ? String(x.attempts) : '—'),
          el('td', { class: 'num' }, x.last_status != null ? String(x.last_status) : '—'),
          el('td', null, x.last_error ? el('span', { class: 'dv-err' }, String(x.last_error)) : (x.delivered_at ? timeEl(x.delivered_at) : ''))));
      }
      sections.push(el('section', { class: 'dsec' }, el('h3', null, 'Deliveries'),
        el('div', { class: 'scroll-x' }, el('table', { class: 'deliveries' },
          el('thead', null, el('tr', null, el('th', null, 'Destination'), el('th', null, 'Event'), el('th', null, 'Status'),
            el('th', { class: 'num' }, 'Tries'), el('th', { class: 'num' }, 'Last'), el('th', null, 'Error / delivered'))), tb))));
    }

    const details = inc.details;
    const hasDetails = details != null && !(typeof details === 'object' && Object.keys(details).length === 0);
    sections.push(el('section', { class: 'dsec' }, el('h3', null, 'Details'),
      hasDetails ? el('pre', { class: 'json' }, typeof details === 'string' ? details : JSON.stringify(details, null, 2)) : el('p', { class: 'muted small' }, 'No details.')));

    d.hidden = false;
    d.setAttribute('data-shown', id);
    d.replaceChildren(head, el('div', { class: 'detail-body' }, title, key, actions, dl, ...sections));
    d.scrollTop = scroll;
    if (wasFocused && $(wasFocused)) $(wasFocused).focus({ preventScroll: true });
  }

  /* ---------- actions ---------- */

  function incidentForAction() {
    const id = state.detailId || state.selectedId;
    if (!id) return null;
    if (state.detail && String(state.detail.incident.id) === id) return state.detail.incident;
    return state.incidents.find((i) => String(i.id) === id) || null;
  }

  async function act(id, verb, body, okMsg) {
    if (state.busy) return;
    state.busy = true;
    document.body.classList.add('busy');
    for (const b of document.querySelectorAll('.actions .btn, .pb-run')) b.disabled = true;
    try {
      const r = await api(`api/incidents/${encodeURIComponent(id)}/${verb}`, { method: 'POST', body });
      toast(typeof okMsg === 'function' ? okMsg(r) : okMsg, r && r.outcome === 'failed' ? 'error' : 'ok');
      if (r && r.incident && state.detail && String(state.detail.incident.id) === String(id)) {
        state.detail.incident = { ...state.detail.incident, ...r.incident };
      }
    } catch (e) {
      toast(`${verb[0].toUpperCase() + verb.slice(1)} #${id} failed: ${e.message}`, 'error');
    } finally {
      state.busy = false;
      document.body.classList.remove('busy');
      if (state.detail) renderDetail();
      refreshAll();
    }
  }

  function doAck(id) { act(id, 'ack', {}, `Acknowledged #${id}`); }
  function doRun(id, playbook, risk) {
    if (risk !== 'low' && !window.confirm(`${playbook} is a high-risk playbook. Run it on #${id}?`)) return;
    act(id, 'run', { playbook }, (r) => `${playbook} on #${id}: ${r && r.outcome ? r.outcome : 'done'}`);
  }

  let dialogId = null;
  function subjectLine(id) {
    const inc = (state.detail && String(state.detail.incident.id) === String(id)) ? state.detail.incident : state.incidents.find((i) => String(i.id) === String(id));
    return inc ? `#${id} · ${sevLabel(inc.severity)} · ${inc.summary || inc.key || ''}` : `#${id}`;
  }
  function openResolve(id) {
    dialogId = String(id);
    $('resolve-subject').textContent = subjectLine(id);
    $('resolve-note').value = '';
    showOverlay('resolve-dialog');
    $('resolve-note').focus();
  }
  function openSnooze(id) {
    dialogId = String(id);
    $('snooze-subject').textContent = subjectLine(id);
    $('snooze-custom').value = '';
    showOverlay('snooze-dialog');
    $('snooze-1h').focus();
  }
  $('resolve-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const note = $('resolve-note').value.trim();
    hideOverlay('resolve-dialog');
    act(dialogId, 'resolve', note ? { note } : {}, `Resolved #${dialogId}`);
  });
  $('resolve-note').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $('resolve-form').requestSubmit(); }
  });
  function snoozeFor(duration) {
    hideOverlay('snooze-dialog');
    act(dialogId, 'snooze', { duration }, `Snoozed #${dialogId} for ${duration}`);
  }
  for (const b of document.querySelectorAll('#snooze-dialog [data-duration]')) {
    b.addEventListener('click', () => snoozeFor(b.getAttribute('data-duration')));
  }
  $('snooze-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('snooze-custom').value.trim();
    if (!v) { $('snooze-custom').focus(); toast('Choose a duration or type an interval, e.g. "90 minutes".'); return; }
    snoozeFor(v);
  });

  /* ---------- overlays ---------- */

  let lastFocus = null;
  function showOverlay(id) {
    if (!document.querySelector('.overlay:not([hidden])')) lastFocus = document.activeElement;
    $(id).hidden = false;
    const f = $(id).querySelector('textarea, input, button:not([data-close])') || $(id).querySelector('button');
    if (f) f.focus();
  }
  function hideOverlay(id) {
    $(id).hidden = true;
    if (!document.querySelector('.overlay:not([hidden])') && lastFocus && document.contains(lastFocus)) lastFocus.focus({ preventScroll: true });
  }
  for (const o of document.querySelectorAll('.overlay')) {
    o.addEventListener('click', (e) => {
      if (e.target === o && o.id !== 'token-dialog') hideOverlay(o.id);
      if (e.target.closest('[data-close]')) hideOverlay(o.id);
    });
  }
  $('help-button').addEventListener('click', () => showOverlay('help-overlay'));
  $('toast').addEventListener('click', () => { $('toast').hidden = true; });

  /* ---------- filters ---------- */

  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('reset-filters').addEventListener('click', () => {
    state.filters = { status: 'unresolved', severity: new Set(SEVS), agent: '' };
    syncFilterControls();
    filtersChanged();
  });

  function filtersChanged() {
    writeURL();
    rowCache = new Map();
    state.listSeq++;
    scheduleList();
  }
  $('filter-status').addEventListener('change', (e) => {
    state.filters.status = STATUSES.includes(e.target.value) ? e.target.value : 'unresolved';
    filtersChanged();
  });
  for (const s of SEVS) {
    $('filter-' + s).addEventListener('change', (e) => {
      if (e.target.checked) state.filters.severity.add(s); else state.filters.severity.delete(s);
      filtersChanged();
    });
  }
  let agentTimer = null;
  $('filter-agent').addEventListener('input', (e) => {
    clearTimeout(agentTimer);
    agentTimer = setTimeout(() => {
      const v = e.target.value.trim();
      if (v === state.filters.agent) return;
      state.filters.agent = v;
      filtersChanged();
    }, 300);
  });
  $('filter-agent').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      clearTimeout(agentTimer);
      state.filters.agent = e.target.value.trim();
      filtersChanged();
    }
  });
  for (const b of document.querySelectorAll('[data-filter-sev]')) {
    b.addEventListener('click', () => {
      const s = b.getAttribute('data-filter-sev');
      const only = state.filters.severity.size === 1 && state.filters.severity.has(s);
      state.filters.severity = only ? new Set(SEVS) : new Set([s]);
      if (state.filters.status === 'resolved') state.filters.status = 'unresolved';
      syncFilterControls();
      filtersChanged();
    });
  }
  for (const b of document.querySelectorAll('[data-filter-status]')) {
    b.addEventListener('click', () => {
      const s = b.getAttribute('data-filter-status');
      state.filters.status = state.filters.status === s ? 'unresolved' : s;
      syncFilterControls();
      filtersChanged();
    });
  }

  /* ---------- live stream ---------- */

  function setBadge(kind, text, title) {
    const b = $('live-badge');
    b.setAttribute('data-state', kind);
    b.textContent = text;
    b.title = title || '';
  }

  function updateBadge() {
    const sb = $('stale-banner');
    const lost = state.everConnected && (!state.esOpen || state.db === 'down');
    sb.hidden = !lost || !state.loadedOnce;
    sb.textContent = state.esOpen && state.db === 'down'
      ? 'The server cannot reach its database: showing the last known state until it is back.'
      : 'Disconnected from the event stream, reconnecting: the list may be out of date.';
    if (!state.esOpen) {
      if (state.db === null && !state.everConnected) setBadge('connecting', 'Connecting…', 'Connecting to the event stream');
      else setBadge('down', 'Offline', 'Event stream disconnected — reconnecting');
    } else if (state.db === 'up') setBadge('live', 'Live', 'Connected; database up');
    else if (state.db === 'down') setBadge('down', 'Database down', 'Connected to the server, but its database is unreachable');
    else setBadge('connecting', 'Connecting…', 'Waiting for the stream status');
  }

  let reconnectTimer = null, backoff = 2000;
  function connect(reset) {
    clearTimeout(reconnectTimer);
    if (state.es) { state.es.close(); state.es = null; }
    state.esOpen = false;
    if (reset) state.db = null;
    updateBadge();
    const p = new URLSearchParams();
    if (state.token) p.set('token', state.token);
    if (state.lastEventId != null && !reset) p.set('after', String(state.lastEventId));
    const q = p.toString();
    const es = new EventSource('events' + (q ? '?' + q : ''));
    state.es = es;
    es.onopen = () => {
      if (es !== state.es) return;
      state.esOpen = true;
      state.everConnected = true;
      backoff = 2000;
      updateBadge();
    };
    es.onerror = () => {
      if (es !== state.es) return;
      state.esOpen = false;
      state.db = null;
      state.everConnected = true;
      updateBadge();
      if (es.readyState === EventSource.CLOSED) {
        reconnectTimer = setTimeout(async () => {
          if (state.needToken) return;
          try { await api('api/session'); } catch (e) { if (e.status === 401) return; }
          connect(false);
        }, backoff);
        backoff = Math.min(backoff * 2, 15000);
      }
    };
    es.addEventListener('status', (m) => {
      if (es !== state.es) return;
      let d = {};
      try { d = JSON.parse(m.data); } catch (e) { return; }
      state.esOpen = true;
      const prev = state.db;
      state.db = d.database === 'up' ? 'up' : 'down';
      const p = Number(d.position);
      if (d.position != null && Number.isFinite(p)) {
        if (state.position != null && p < state.position) {
          // the stream restarted lower (a database restored or crashed): start over from there
          state.position = p;
          state.baseline = p;
          state.lastEventId = p;
          state.seen.clear();
        }
        setPosition(p);
      }
      updateBadge();
      if (state.db === 'up' && prev !== 'up') refreshAll();
    });
    for (const k of EVENT_KINDS) es.addEventListener(k, (m) => { if (es === state.es) onEvent(m); });
  }

  function onEvent(m) {
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (!ev || typeof ev !== 'object') return;
    if (!ev.event) ev.event = m.type;
    const pos = ev.position != null ? Number(ev.position) : (m.lastEventId ? Number(m.lastEventId) : null);
    let fresh = true;
    if (pos != null && Number.isFinite(pos)) {
      fresh = !state.seen.has(pos);
      state.seen.add(pos);
      if (state.seen.size > 2000) state.seen = new Set([...state.seen].slice(-1000));
      state.lastEventId = pos;
      setPosition(pos);
    }
    scheduleCounts();
    scheduleList();
    if (state.detailId && String(ev.incident_id) === state.detailId) scheduleDetail();
    if (fresh) maybeNotify(ev, pos);
  }

  /* ---------- notifications ---------- */

  function notifSupported() { return typeof window.Notification === 'function'; }
  function updateNotifButton() {
    const b = $('enable-notifications');
    if (!notifSupported()) { b.hidden = true; return; }
    b.hidden = false;
    const p = Notification.permission;
    b.disabled = p !== 'default';
    b.textContent = p === 'granted' ? 'Notifications on' : p === 'denied' ? 'Notifications blocked' : 'Enable notifications';
    b.title = p === 'granted' ? 'New SEV1/SEV2 incidents raise a desktop notification' : p === 'denied' ? 'Allow notifications for this site in the browser settings' : 'Notify me of new SEV1/SEV2 incidents';
    b.classList.toggle('is-on', p === 'granted');
  }
  $('enable-notifications').addEventListener('click', async () => {
    if (!notifSupported()) return;
    try { await Notification.requestPermission(); } catch (e) { /* older API */ }
    updateNotifButton();
  });

  function maybeNotify(ev, pos) {
    if (!notifSupported() || Notification.permission !== 'granted') return;
    if (!NOTIFY_KINDS.has(ev.event)) return;
    if (ev.silenced !== false) return;
    if (ev.severity !== 'sev1' && ev.severity !== 'sev2') return;
    if (!state.loadedOnce || pos == null || state.baseline == null || pos <= state.baseline) return;
    try {
      const verb = { created: '', reopened: ' reopened', escalated: ' escalated', snooze_expired: ' snooze ended', silence_ended: ' silence ended' }[ev.event] || '';
      const n = new Notification(`${sevLabel(ev.severity)} ${ev.key || ''}${verb}`.trim(), {
        body: ev.summary || '', tag: String(ev.incident_id), icon: 'favicon.svg', renotify: false,
      });
      n.onclick = () => { window.focus(); if (ev.incident_id != null) openDetail(String(ev.incident_id)); n.close(); };
    } catch (e) { /* notifications unavailable in this context */ }
  }

  /* ---------- keyboard ---------- */

  function topOverlay() { return document.querySelector('.overlay:not([hidden])'); }

  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    const ov = topOverlay();
    if (e.key === 'Escape') {
      if (ov) { if (ov.id !== 'token-dialog') { hideOverlay(ov.id); e.preventDefault(); } return; }
      const t = e.target;
      if (t && t.id === 'filter-agent') { t.blur(); return; }
      if (state.detailId) { closeDetail(); e.preventDefault(); }
      return;
    }
    if (ov) {
      if (e.key === 'Tab') {
        const f = [...ov.querySelectorAll('button:not([disabled]), input, textarea, select')].filter((x) => x.offsetParent !== null);
        if (!f.length) return;
        const i = f.indexOf(document.activeElement);
        if (e.shiftKey && i <= 0) { f[f.length - 1].focus(); e.preventDefault(); }
        else if (!e.shiftKey && (i < 0 || i === f.length - 1)) { f[0].focus(); e.preventDefault(); }
      }
      return;
    }
    const t = e.target;
    const typing = t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
    if (typing) return;
    const onButton = t && (t.tagName === 'BUTTON' || t.tagName === 'A');
    switch (e.key) {
      case 'j': case 'ArrowDown': moveSelection(1); e.preventDefault(); break;
      case 'k': case 'ArrowUp': moveSelection(-1); e.preventDefault(); break;
      case 'Enter':
        if (onButton) return;
        if (state.selectedId) { openDetail(state.selectedId); e.preventDefault(); }
        break;
      case '/': e.preventDefault(); $('filter-agent').focus(); $('filter-agent').select(); break;
      case '?': e.preventDefault(); showOverlay('help-overlay'); break;
      case 'a': case 'r': case 's': {
        if (!canAct()) {
          toast(state.session && !state.session.auth ? 'This server is read-only: it was started without --tokens.' : 'Actions need an operator token.', 'info');
          return;
        }
        const inc = incidentForAction();
        if (!inc) return;
        e.preventDefault();
        if (inc.status === 'resolved') { toast(`#${inc.id} is already resolved.`, 'info'); return; }
        if (e.key === 'a') { if (inc.status === 'ack') toast(`#${inc.id} is already acknowledged.`, 'info'); else doAck(String(inc.id)); }
        else if (e.key === 'r') openResolve(String(inc.id));
        else openSnooze(String(inc.id));
        break;
      }
      default: break;
    }
  });

  /* ---------- clocks ---------- */

  setInterval(() => {
    const now = Date.now();
    for (const n of document.querySelectorAll('[data-rel]')) n.textContent = relTime(n.getAttribute('data-rel'), now);
  }, 15000);

  /* ---------- start ---------- */

  initToken();
  readURL();
  syncFilterControls();
  writeURL();
  updateNotifButton();
  updateBadge();
  if (state.detailId) { document.body.classList.add('detail-open'); renderDetailLoading(); }
  loadSession();
  loadCounts();
  loadList();
  if (state.detailId) loadDetail();
  connect(true);
})();
