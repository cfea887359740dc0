/* evolve ui: shared helpers. Untrusted text (program ids, statuses, messages, code) is only ever inserted with
   textContent or setAttribute, never as markup. */
'use strict';

const UI = (() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const TOKEN_KEY = 'evolve-ui-token';
  const WHO_KEY = 'evolve-ui-who';
  const STATUS_COLORS = {
    ok: '#2e7d32', rejected: '#9e9d24', wrong_output: '#ef6c00', runtime_error: '#c62828',
    compile_error: '#6a1b9a', timeout: '#1565c0', memory: '#00838f', invalid_edit: '#757575',
    evaluator_error: '#000000', system_error: '#5d4037', duplicate: '#b0bec5',
  };
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
    '#bcbd22', '#17becf'];
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function fill(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  const el = (tag, attrs, ...children) => fill(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => fill(document.createElementNS(SVGNS, tag), attrs, children);

  function clear(node) { while (node && node.firstChild) node.removeChild(node.firstChild); return node; }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return '-';
    if (typeof value !== 'number') return String(value);
    return Number(value.toPrecision(digits || 8)).toString();
  }

  function ago(seconds) {
    if (!seconds) return '-';
    const d = Math.max(0, Date.now() / 1000 - seconds);
    if (d < 90) return `${Math.round(d)} s ago`;
    if (d < 5400) return `${Math.round(d / 60)} min ago`;
    if (d < 172800) return `${Math.round(d / 3600)} h ago`;
    return `${Math.round(d / 86400)} days ago`;
  }

  function when(seconds) {
    if (!seconds) return '-';
    return new Date(seconds * 1000).toLocaleString();
  }

  function viridis(t) {
    t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - i;
    const c = VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  const statusColor = (s) => STATUS_COLORS[s] || '#9e9e9e';
  const runKey = () => document.body.dataset.run;
  const programUrl = (run, id) => `/run/${encodeURIComponent(run)}/program/${encodeURIComponent(id)}`;
  const link = (run, id, text) => el('a', { href: programUrl(run, id), text: text || id, class: 'pid' });
  const statusBadge = (s) => el('span', { class: `status s-${s}`, text: s });

  // The token arrives once in the URL (?token=...), is kept in this browser's storage and removed from the URL.
  function captureToken() {
    const params = new URLSearchParams(window.location.search);
    const given = params.get('token');
    if (given) {
      localStorage.setItem(TOKEN_KEY, given);
      params.delete('token');
      const rest = params.toString();
      history.replaceState(null, '', window.location.pathname + (rest ? `?${rest}` : '') + window.location.hash);
    }
  }
  const token = () => localStorage.getItem(TOKEN_KEY) || '';
  const setToken = (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY));
  const who = () => localStorage.getItem(WHO_KEY) || '';
  const setWho = (value) => localStorage.setItem(WHO_KEY, value || '');

  async function steer(run, body) {
    const response = await fetch(`/api/run/${encodeURIComponent(run)}/steer`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Evolve-Token': token() },
      body: JSON.stringify({ ...body, who: who() }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  // Calls fn every `ms` while the page is visible; fn returns a promise. Never overlaps two calls.
  function every(ms, fn) {
    if (!ms) return;
    let busy = false;
    setInterval(async () => {
      if (busy || document.hidden) return;
      busy = true;
      try { await fn(); } catch (err) { setLive(false, err.message); } finally { busy = false; }
    }, ms);
  }

  function setLive(ok, message) {
    const live = document.getElementById('live');
    if (!live) return;
    live.className = ok ? 'live on' : 'live off';
    live.textContent = ok ? 'live' : 'offline';
    live.title = message || (ok ? 'refreshing while the run writes' : '');
  }

  captureToken();
  return {
    el, svg, clear, getJSON, fmt, ago, when, viridis, statusColor, runKey, programUrl, link, statusBadge, token,
    setToken, who, setWho, steer, every, setLive, PALETTE, STATUS_COLORS,
  };
})();
