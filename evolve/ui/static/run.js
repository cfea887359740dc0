/* evolve ui: the run page. Loads every view from /api/run/<key>/..., then polls the run's version and reloads the
   views when it changes (new rows, new segments), and the steering panel when the steering log grows. */
'use strict';

(() => {
  const { el, clear, fmt, getJSON } = UI;
  const run = UI.runKey();
  const api = (part, query) => `/api/run/${encodeURIComponent(run)}/${part}${query ? `?${query}` : ''}`;
  const state = { version: null, steering: null, loadMs: 0, loadedAt: 0, treeRoot: '', recentPage: 0, hiddenIslands: new Set(), overview: null, progress: null, tree: null, hiddenStatuses: new Set() };

  function row(cells) { return el('tr', {}, ...cells.map((c) => (c instanceof Node ? el('td', {}, c) : el('td', { text: c })))); }
  function numCell(v) { return el('td', { class: 'num', text: fmt(v) }); }

  function programRows(tbody, rows) {
    clear(tbody);
    for (const p of rows) {
      tbody.appendChild(el('tr', { 'data-id': p.program_id }, el('td', {}, UI.link(run, p.program_id)), numCell(p.score),
        el('td', {}, UI.statusBadge(p.status)), numCell(p.island), numCell(p.iteration), el('td', { text: p.mutator || '' })));
    }
    if (!rows.length) tbody.appendChild(row(['none yet']));
  }

  function facts(o) {
    document.getElementById('f-state').textContent = o.state || '-';
    document.getElementById('f-programs').textContent = String(o.programs);
    const best = document.getElementById('f-best');
    best.textContent = o.best ? fmt(o.best.score) : '-';
    if (o.best) best.setAttribute('href', UI.programUrl(run, o.best.program_id));
    document.getElementById('f-seed').textContent = o.seed ? fmt(o.seed.score) : '-';
    document.getElementById('f-last').textContent = o.last_iteration === null ? '-' : String(o.last_iteration);
    const write = document.getElementById('f-write');
    write.dataset.time = o.last_write || '';
    write.textContent = UI.ago(o.last_write);
    document.getElementById('f-bad').textContent = o.bad_files.length ? `unreadable segments skipped: ${o.bad_files.join(', ')}` : '';
  }

  function drawProgress() {
    const data = state.progress;
    const islands = state.overview.islands;
    Charts.legend(document.getElementById('progress-legend'),
      islands.map((i) => ({ key: i, name: `island ${i}`, color: UI.PALETTE[i % UI.PALETTE.length], on: !state.hiddenIslands.has(i) }))
        .concat([{ name: 'best so far', color: '#d84315' }]),
      (key, on) => { if (key === undefined) return; if (on) state.hiddenIslands.delete(key); else state.hiddenIslands.add(key); drawProgress(); });
    Charts.progress(document.getElementById('progress-chart'), data, { run, hidden: state.hiddenIslands });
    document.getElementById('progress-note').textContent = data.stride > 1
      ? `${data.scored} scored programs; one in ${data.stride} drawn. The best-so-far line uses them all.`
      : `${data.scored} scored programs.`;
  }

  function drawOutcomes(data) {
    const order = Object.keys(UI.STATUS_COLORS);
    const shown = Charts.outcomes(document.getElementById('outcomes-chart'), data, order);
    Charts.legend(document.getElementById('outcomes-legend'), shown.map((s) => ({ name: s, color: UI.statusColor(s) })));
  }

  function drawMaps(data) {
    const box = clear(document.getElementById('maps'));
    const scores = data.maps.flatMap((m) => m.cells.map((c) => c.score)).filter((s) => s !== null).sort((a, b) => a - b);
    // The colour scale spans the better 90% of the elites: one far-off outlier must not flatten every other cell.
    const q = (f) => scores[Math.min(scores.length - 1, Math.floor(f * scores.length))];
    const maximize = state.overview.direction !== 'minimize';
    const range = scores.length ? [q(maximize ? 0.1 : 0), q(maximize ? 1 : 0.9)] : [0, 1];
    for (const map of data.maps) Charts.heatmap(box, map, { run, range, direction: state.overview.direction });
    if (!data.maps.length) box.appendChild(el('p', { class: 'muted', text: 'no grid' }));
  }

  function treeVisible(n) {
    const island = document.getElementById('tree-island').value;
    return (island === '' || String(n.island) === island) && !state.hiddenStatuses.has(n.status);
  }

  function drawTree() {
    const data = state.tree;
    const statuses = [...new Set(data.nodes.map((n) => n.status))].sort();
    const box = clear(document.getElementById('tree-statuses'));
    for (const s of statuses) {
      box.appendChild(el('label', { class: 'legend-item' }, el('input', {
        type: 'checkbox', checked: state.hiddenStatuses.has(s) ? null : 'checked', 'data-status': s,
        onchange: (e) => { if (e.target.checked) state.hiddenStatuses.delete(s); else state.hiddenStatuses.add(s); drawTree(); },
      }), UI.statusBadge(s)));
    }
    const anc = clear(document.getElementById('tree-ancestors'));
    if (data.ancestors.length) {
      anc.appendChild(document.createTextNode('ancestors: '));
      data.ancestors.forEach((pid, i) => {
        if (i) anc.appendChild(document.createTextNode(' → '));
        anc.appendChild(el('a', { href: '#tree-section', text: pid.slice(0, 10), onclick: () => loadTree(pid) }));
      });
    }
    if (data.truncated) anc.appendChild(el('span', { text: ` (showing ${data.nodes.length} programs; "+n" marks hidden children)` }));
    Tree.render(document.getElementById('tree'), data, {
      run, direction: state.overview.direction, highlight: document.getElementById('tree-best').checked,
      visible: treeVisible, expand: (pid) => loadTree(pid),
    });
  }

  async function loadTree(root) {
    if (root !== undefined) state.treeRoot = root;
    const limit = document.getElementById('tree-limit').value;
    state.tree = await getJSON(api('tree', `limit=${limit}&root=${encodeURIComponent(state.treeRoot)}`));
    drawTree();
  }

  function drawFailures(data) {
    const tbody = clear(document.querySelector('#failures tbody'));
    document.getElementById('failures-note').textContent = data.total
      ? `${data.total} failed programs (${Object.entries(data.statuses).map(([s, n]) => `${s}: ${n}`).join(', ')}); reasons grouped over the latest ${data.sampled}.`
      : 'no failures.';
    for (const g of data.groups) {
      tbody.appendChild(el('tr', { 'data-status': g.status }, el('td', {}, UI.statusBadge(g.status)), el('td', { class: 'reason', text: g.reason }),
        numCell(g.count), el('td', { text: `${g.first} to ${g.last}` }), el('td', {}, UI.link(run, g.example, g.example.slice(0, 12)))));
    }
  }

  async function loadRecent() {
    const data = await getJSON(api('programs', `order=recent&per_page=20&page=${state.recentPage}`));
    programRows(document.querySelector('#recent tbody'), data.rows);
    const pages = Math.max(1, Math.ceil(data.total / data.per_page));
    document.getElementById('recent-page').textContent = `page ${data.page + 1} of ${pages}`;
    document.getElementById('recent-prev').disabled = data.page === 0;
    document.getElementById('recent-next').disabled = data.page + 1 >= pages;
  }

  async function loadSteering() {
    Steer.panel(run, await getJSON(api('steering')));
  }

  async function loadAll() {
    state.overview = await getJSON(api('overview'));
    facts(state.overview);
    const islandSelect = document.getElementById('tree-island');
    if (islandSelect.options.length === 1) {
      for (const i of state.overview.islands) islandSelect.appendChild(el('option', { value: i, text: String(i) }));
    }
    const [progress, outcomes, maps, failures, top] = await Promise.all([
      getJSON(api('progress')), getJSON(api('outcomes')), getJSON(api('maps')), getJSON(api('failures')),
      getJSON(api('programs', 'order=best&per_page=10&status=ok')),
    ]);
    state.progress = progress;
    drawProgress();
    drawOutcomes(outcomes);
    drawMaps(maps);
    drawFailures(failures);
    programRows(document.querySelector('#top tbody'), top.rows);
    await Promise.all([loadTree(), loadRecent()]);
  }

  async function refresh() {
    const version = await getJSON(api('version'));
    UI.setLive(true);
    // A large run changes every few seconds and takes a while to redraw: wait at least twice as long as the last
    // redraw took before the next one, so one open page never keeps the server busy.
    const rested = Date.now() - state.loadedAt >= 2 * state.loadMs;
    if (version.data !== state.version && rested) {
      const started = Date.now();
      await loadAll();
      state.loadMs = Date.now() - started;
      state.loadedAt = Date.now();
      state.version = version.data;
      document.body.dataset.version = version.data;
      document.body.dataset.programs = String(state.overview.programs); // every view now shows this many
    }
    if (version.steering !== state.steering) {
      await loadSteering();
      state.steering = version.steering;
      document.body.dataset.steering = String(version.steering);
    }
    const write = document.getElementById('f-write');
    write.textContent = UI.ago(Number(write.dataset.time));
  }

  document.addEventListener('DOMContentLoaded', async () => {
    Steer.tokenBox();
    Steer.noteForm(run, (s) => Steer.panel(run, s));
    document.getElementById('tree-island').addEventListener('change', drawTree);
    document.getElementById('tree-best').addEventListener('change', drawTree);
    document.getElementById('tree-limit').addEventListener('change', () => loadTree());
    document.getElementById('tree-reset').addEventListener('click', () => loadTree(''));
    document.getElementById('recent-prev').addEventListener('click', () => { state.recentPage = Math.max(0, state.recentPage - 1); loadRecent(); });
    document.getElementById('recent-next').addEventListener('click', () => { state.recentPage += 1; loadRecent(); });
    try {
      await refresh();
      document.body.dataset.ready = '1';
    } catch (err) {
      UI.setLive(false, err.message);
      document.body.dataset.error = err.message;
    }
    UI.every(Number(document.body.dataset.poll), refresh);
  });
})();
