/* evolve ui: the run page. Loads every view from /api/run/<key>/..., then polls the run's version and reloads the
   views when it changes (new rows, new segments), and the steering panel when the steering log grows. */
'use strict';

(() => {
  const { el, clear, fmt, getJSON } = UI;
  const run = UI.runKey();
  const api = (part, query) => `/api/run/${encodeURIComponent(run)}/${part}${query ? `?${query}` : ''}`;
  const state = { version: null, steering: null, loadMs: 0, loadedAt: 0, treeRoot: '', recentPage: 0, auditPage: 0, topStanding: null, hiddenIslands: new Set(), overview: null, progress: null, tree: null, hiddenStatuses: new Set() };

  function row(cells) { return el('tr', {}, ...cells.map((c) => (c instanceof Node ? el('td', {}, c) : el('td', { text: c })))); }
  function numCell(v) { return el('td', { class: 'num', text: fmt(v) }); }

  function standingCell(p) {
    const cell = el('td', { class: 'standing-cell' }, el('span', { class: `standing st-${p.standing || 'candidate'}`, text: p.standing || 'candidate' }));
    if (p.decision) cell.appendChild(el('span', { class: `decision d-${p.decision}`, text: p.decision }));
    return cell;
  }

  function programRows(tbody, rows, empty) {
    clear(tbody);
    for (const p of rows) {
      tbody.appendChild(el('tr', { 'data-id': p.program_id, 'data-standing': p.standing || 'candidate' }, el('td', {}, UI.link(run, p.program_id)),
        numCell(p.score), el('td', {}, UI.statusBadge(p.status)), numCell(p.island), numCell(p.iteration),
        el('td', { text: p.mutator || '' }), standingCell(p)));
    }
    if (!rows.length) tbody.appendChild(row([empty || 'none yet']));
  }

  function facts(o) {
    document.getElementById('f-state').textContent = o.state || '-';
    document.getElementById('f-programs').textContent = String(o.programs);
    // "Best" means best promoted, as in the CLI and the report; the fittest of all is shown beside it when it differs.
    const best = document.getElementById('f-best');
    document.getElementById('f-best-label').textContent = o.oversight ? 'best promoted' : 'best';
    best.textContent = o.best ? fmt(o.best.score) : (o.oversight ? 'none promoted yet' : '-');
    if (o.best) best.setAttribute('href', UI.programUrl(run, o.best.program_id)); else best.removeAttribute('href');
    if (o.best) best.dataset.id = o.best.program_id;
    const fittest = o.best_visible;
    const differs = o.oversight && fittest && (!o.best || fittest.program_id !== o.best.program_id);
    document.getElementById('f-visible-box').hidden = !differs;
    if (differs) {
      const link = document.getElementById('f-visible');
      link.textContent = fmt(fittest.score);
      link.setAttribute('href', UI.programUrl(run, fittest.program_id));
      link.dataset.id = fittest.program_id;
    }
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

  async function loadTree(root, drawable) {
    if (root !== undefined) state.treeRoot = root;
    const limit = document.getElementById('tree-limit').value;
    [state.tree] = await Promise.all([getJSON(api('tree', `limit=${limit}&root=${encodeURIComponent(state.treeRoot)}`)), drawable]);
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

  async function loadTop() {
    // Until a person picks one, the server chooses as evolve archive top does: promoted programs once there are
    // standings ('auto'), so this need not wait for the overview.
    const standing = state.topStanding === null ? 'auto' : document.getElementById('top-standing').value;
    const top = await getJSON(api('programs', `order=best&per_page=10&status=ok&standing=${encodeURIComponent(standing)}`));
    if (state.topStanding === null) {
      state.topStanding = top.standing;
      document.getElementById('top-standing').value = top.standing;
    }
    programRows(document.querySelector('#top tbody'), top.rows, top.standing ? `no ${top.standing} program` : 'none yet');
  }

  function auditRow(e) {
    const program = e.program_id ? UI.link(run, e.program_id, e.program_id) : document.createTextNode('-');
    const numbers = Object.keys(e.numbers || {}).length ? JSON.stringify(e.numbers) : '';
    const summary = el('td', { class: 'summary', text: e.summary });
    if (numbers) summary.appendChild(el('div', { class: 'muted numbers', text: numbers.length > 400 ? `${numbers.slice(0, 400)}…` : numbers }));
    return el('tr', { 'data-kind': e.kind, 'data-id': e.program_id || '' }, el('td', { text: UI.when(e.at) }),
      el('td', {}, el('span', { class: `standing audit-${e.kind}`, text: e.kind })), el('td', {}, program), summary);
  }

  async function loadAudit() {
    const data = await getJSON(api('audit', `page=${state.auditPage}&per_page=25`));
    const tbody = clear(document.querySelector('#audit tbody'));
    for (const e of data.entries) tbody.appendChild(auditRow(e));
    if (!data.entries.length) tbody.appendChild(row(['nothing recorded']));
    const counts = Object.entries(data.standings).filter(([s, n]) => n && s !== 'candidate').map(([s, n]) => `${s} ${n}`);
    const made = Object.entries(data.decisions).filter(([, n]) => n).map(([d, n]) => `${d} ${n}`);
    document.getElementById('oversight-summary').textContent = data.decided
      ? `standings: ${counts.join(', ')} (every other program is a candidate: never checked)${made.length ? `; decisions: ${made.join(', ')}` : ''}`
      : 'no standings recorded: no program of this run has been checked on held-out data (or the run is older than oversight).';
    const pages = Math.max(1, Math.ceil(data.total / data.per_page));
    document.getElementById('audit-page').textContent = `${data.total} entries, most recent first; page ${data.page + 1} of ${pages}`;
    document.getElementById('audit-prev').disabled = data.page === 0;
    document.getElementById('audit-next').disabled = data.page + 1 >= pages;
    document.getElementById('audit-note').textContent = data.sandbox_levels ? ''
      : 'Sandbox level changes are left out on a run this large: evolve archive audit RUN lists them.';
    document.body.dataset.audit = String(data.total);
  }

  function paramsText(s) {
    const parts = [];
    if (Object.keys(s.params || {}).length) parts.push(JSON.stringify(s.params));
    if ((s.ignored || []).length) parts.push(`dropped: ${s.ignored.join('; ')}`);
    return parts.join(' ');
  }

  async function loadStrategies() {
    const data = await getJSON(api('strategies'));
    const section = document.getElementById('strategies-section');
    section.hidden = !(data.strategies.length || data.scratchpad.length || data.failed);
    if (section.hidden) return;
    document.getElementById('strategies-note').textContent = data.strategies.length
      ? `fitness: share of children that beat their parent, shrunk toward the run's rate (${fmt(data.base_rate, 3)}); active strategies in bold.${data.failed ? ` ${data.failed} generation(s) gave no usable strategy.` : ''}`
      : 'no strategies';
    const tbody = clear(document.querySelector('#strategies tbody'));
    for (const s of data.strategies) {
      const name = el(s.active ? 'b' : 'span', { text: s.id });
      const text = el('details', {}, el('summary', { text: s.text.length > 90 ? `${s.text.slice(0, 90)}…` : s.text }), el('pre', { text: s.text }));
      tbody.appendChild(el('tr', { 'data-id': s.id, class: s.active ? 'active' : '' }, el('td', {}, name), el('td', { text: s.parent || '' }),
        numCell(s.iteration), numCell(s.children), numCell(s.improved), el('td', { class: 'num', text: s.fitness.toFixed(3) }),
        el('td', { text: paramsText(s) }), el('td', {}, text)));
    }
    const pad = clear(document.getElementById('scratchpad'));
    data.scratchpad.forEach((n, i) => {
      const head = el('summary', { text: `iteration ${n.iteration}` });
      if (!n.adopted) head.appendChild(el('span', { class: 'bad', text: ` (not adopted: ${n.error || 'empty'})` }));
      pad.appendChild(el('details', { open: i === 0 ? 'open' : null, class: 'notes' }, head, el('pre', { text: n.notes })));
    });
    if (!data.scratchpad.length) pad.appendChild(el('p', { class: 'muted', text: 'no scratchpad notes' }));
  }

  async function loadAll() {
    // Every request at once: the views are independent, and the server answers them as they come. The charts
    // need the overview (islands, direction) before they are drawn, not before they are asked for.
    const overview = getJSON(api('overview')).then((o) => {
      state.overview = o;
      facts(o);
      const islandSelect = document.getElementById('tree-island');
      if (islandSelect.options.length === 1) {
        for (const i of o.islands) islandSelect.appendChild(el('option', { value: i, text: String(i) }));
      }
    });
    const after = (part, draw) => Promise.all([getJSON(api(part)), overview]).then(([data]) => draw(data));
    await Promise.all([
      overview,
      after('progress', (data) => { state.progress = data; drawProgress(); }),
      after('outcomes', drawOutcomes),
      after('maps', drawMaps),
      after('failures', drawFailures),
      loadTree(undefined, overview), loadTop(), loadAudit(), loadStrategies(), loadRecent(),
    ]);
  }

  async function refresh() {
    // The first time, the version the page was rendered with (taken before any view was read): one request less.
    const given = state.version === null && document.body.dataset.firstVersion;
    const version = given ? { data: given, steering: Number(document.body.dataset.firstSteering) } : await getJSON(api('version'));
    UI.setLive(true);
    // A large run changes every few seconds and takes a while to redraw: wait at least twice as long as the last
    // redraw took before the next one, so one open page never keeps the server busy.
    const rested = Date.now() - state.loadedAt >= 2 * state.loadMs;
    const first = state.steering === null; // the first refresh always loads the views: the steering panel with them
    if (version.data !== state.version && rested) {
      const started = Date.now();
      await Promise.all([loadAll(), first ? loadSteering() : null]);
      state.loadMs = Date.now() - started;
      state.loadedAt = Date.now();
      state.version = version.data;
      document.body.dataset.version = version.data;
      document.body.dataset.programs = String(state.overview.programs); // every view now shows this many
    }
    if (version.steering !== state.steering) {
      if (!first) await Promise.all([loadAudit(), loadSteering()]); // each steering action is an audit entry
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
    document.getElementById('top-standing').addEventListener('change', () => loadTop());
    document.getElementById('audit-prev').addEventListener('click', () => { state.auditPage = Math.max(0, state.auditPage - 1); loadAudit(); });
    document.getElementById('audit-next').addEventListener('click', () => { state.auditPage += 1; loadAudit(); });
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
