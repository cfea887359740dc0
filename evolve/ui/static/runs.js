/* evolve ui: the runs list (refreshing) and the comparison of runs on one chart. */
'use strict';

(() => {
  const { el, clear, fmt, getJSON } = UI;

  // Rows are updated in place (keyed by run), so ticked boxes and the focus survive each refresh.
  function runCells(r) {
    return [
      el('td', { text: r.problem }),
      el('td', {}, el('a', { href: `/run/${encodeURIComponent(r.key)}`, class: 'run-link', text: r.run_id })),
      el('td', { text: r.error ? `unreadable: ${r.error}` : r.state || '-' }),
      el('td', { class: 'num' }, r.best_program ? el('a', { href: UI.programUrl(r.key, r.best_program), text: fmt(r.best_score) }) : '-'),
      el('td', { class: 'num', text: String(r.programs) }),
      el('td', { text: UI.when(r.created_at) }),
      el('td', { text: UI.ago(r.last_write) }),
    ];
  }

  async function loadRuns() {
    const data = await getJSON('/api/runs');
    const tbody = document.getElementById('runs-body');
    const rows = new Map([...tbody.querySelectorAll('tr[data-key]')].map((tr) => [tr.dataset.key, tr]));
    for (const tr of tbody.querySelectorAll('tr:not([data-key])')) tr.remove();
    data.runs.forEach((r, i) => {
      let tr = rows.get(r.key);
      if (!tr) {
        tr = el('tr', { 'data-key': r.key }, el('td', {}, el('input', { type: 'checkbox', name: 'run', value: r.key })));
      }
      while (tr.children.length > 1) tr.removeChild(tr.lastChild);
      for (const cell of runCells(r)) tr.appendChild(cell);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
      rows.delete(r.key);
    });
    for (const tr of rows.values()) tr.remove();
    if (!data.runs.length) tbody.appendChild(el('tr', {}, el('td', { colspan: 8, class: 'muted', text: `no runs under ${data.root} yet` })));
    document.body.dataset.runs = String(data.runs.length);
    UI.setLive(true);
  }

  async function loadCompare() {
    const keys = [...document.querySelectorAll('#compare-keys li')].map((li) => li.textContent);
    if (!keys.length) return;
    const data = await getJSON(`/api/compare?${keys.map((k) => `run=${encodeURIComponent(k)}`).join('&')}`);
    const series = [];
    const tbody = clear(document.querySelector('#compare-table tbody'));
    data.runs.forEach((r, i) => {
      const color = UI.PALETTE[i % UI.PALETTE.length];
      if (r.error) { tbody.appendChild(el('tr', {}, el('td', { text: r.key }), el('td', { colspan: 3, class: 'bad', text: r.error }))); return; }
      series.push({ key: r.key, name: `${r.problem} / ${r.run_id}`, color, end: r.last_iteration, points: r.best.map((b) => [b.iteration, b.score]) });
      const name = el('td', {}, el('span', { class: 'swatch' }), el('a', { href: `/run/${encodeURIComponent(r.key)}`, text: ` ${r.run_id}` }));
      name.querySelector('.swatch').style.background = color;
      const best = r.best.length ? r.best[r.best.length - 1].score : null;
      tbody.appendChild(el('tr', { 'data-key': r.key }, name, el('td', { text: r.problem }), el('td', { class: 'num', text: fmt(best) }),
        el('td', { class: 'num', text: String(r.last_iteration) })));
    });
    const metric = data.runs.find((r) => !r.error);
    Charts.lines(document.getElementById('compare-chart'), series, { xlabel: 'iteration', ylabel: metric ? `best ${metric.score_metric} so far` : '' });
    document.body.dataset.compared = String(series.length);
  }

  document.addEventListener('DOMContentLoaded', async () => {
    const page = document.body.dataset.page;
    try {
      if (page === 'runs') await loadRuns();
      if (page === 'compare') await loadCompare();
      document.body.dataset.ready = '1';
    } catch (err) {
      UI.setLive(false, err.message);
      document.body.dataset.error = err.message;
    }
    const poll = Number(document.body.dataset.poll);
    if (page === 'runs') UI.every(poll, loadRuns);
    if (page === 'compare') UI.every(poll * 3, loadCompare);
  });
})();
