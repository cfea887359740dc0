/* evolve ui: hand-written SVG charts (scatter + best-so-far, stacked outcome shares, heatmaps, lines). */
'use strict';

const Charts = (() => {
  const { svg, el, clear, fmt } = UI;

  function ticks(lo, hi, count) {
    if (!(Number.isFinite(lo) && Number.isFinite(hi)) || hi <= lo) return [lo];
    const raw = (hi - lo) / Math.max(1, count);
    let step = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) { if (raw <= step * m) { step *= m; break; } }
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && out.length < 40; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  // A frame with axes for x in [x0, x1] and y in [y0, y1]; returns the svg, scales and the plot group.
  function frame(container, opts) {
    const width = opts.width || Math.max(360, Math.min(container.clientWidth || 900, 1100));
    const height = opts.height || 300;
    const m = { l: 64, r: 16, t: 26, b: 38 };
    let [x0, x1] = opts.x;
    let [y0, y1] = opts.y;
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) { y1 += 0.5; y0 -= 0.5; }
    const pad = (y1 - y0) * 0.05;
    if (!opts.exactY) { y0 -= pad; y1 += pad; }
    const sx = (v) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
    const sy = (v) => height - m.b - ((v - y0) / (y1 - y0)) * (height - m.t - m.b);
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'chart-svg' });
    const axes = svg('g', { class: 'axes' });
    for (const t of ticks(y0, y1, 5)) {
      axes.appendChild(svg('line', { x1: m.l, x2: width - m.r, y1: sy(t), y2: sy(t), class: 'gridline' }));
      axes.appendChild(svg('text', { x: m.l - 6, y: sy(t) + 4, 'text-anchor': 'end', class: 'tick', text: opts.yfmt ? opts.yfmt(t) : fmt(t, 4) }));
    }
    for (const t of ticks(x0, x1, 8)) {
      axes.appendChild(svg('text', { x: sx(t), y: height - m.b + 16, 'text-anchor': 'middle', class: 'tick', text: fmt(t, 6) }));
    }
    axes.appendChild(svg('line', { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: 'axis' }));
    axes.appendChild(svg('line', { x1: m.l, x2: m.l, y1: m.t, y2: height - m.b, class: 'axis' }));
    if (opts.xlabel) axes.appendChild(svg('text', { x: width - m.r, y: height - 4, 'text-anchor': 'end', class: 'label', text: opts.xlabel }));
    if (opts.ylabel) axes.appendChild(svg('text', { x: 4, y: 12, class: 'label', text: opts.ylabel }));
    root.appendChild(axes);
    const plot = svg('g', { class: 'plot' });
    root.appendChild(plot);
    clear(container).appendChild(root);
    return { root, plot, sx, sy, width, height };
  }

  function legend(container, items, onToggle) {
    clear(container);
    for (const item of items) {
      const entry = el('label', { class: 'legend-item' },
        onToggle && item.key !== undefined ? el('input', { type: 'checkbox', checked: item.on !== false ? 'checked' : null, onchange: (e) => onToggle(item.key, e.target.checked) }) : null,
        el('span', { class: 'swatch', 'data-color': item.color }), item.name);
      entry.querySelector('.swatch').style.background = item.color;
      container.appendChild(entry);
    }
  }

  // Score over iterations: every (sampled) scored program as a dot coloured by island, best so far as a step line.
  function progress(container, data, opts) {
    const points = data.points.filter((p) => p.score !== null && (!opts.hidden || !opts.hidden.has(p.island)));
    const scores = points.map((p) => p.score).concat(data.best.map((b) => b.score));
    if (!scores.length) { clear(container).appendChild(el('p', { class: 'muted', text: 'no scored program yet' })); return; }
    const last = Math.max(data.last_iteration, 1);
    const f = frame(container, { x: [0, last], y: [Math.min(...scores), Math.max(...scores)], xlabel: 'iteration', ylabel: `${data.score_metric} (${data.direction})` });
    // Up to 4,000 dots: built off the page and attached at once, with one click handler for all, and each dot's
    // tooltip made when the pointer first reaches it (a title per dot would double the chart's elements).
    const dots = svg('g', { class: 'dots' });
    const byId = new Map();
    for (const p of points) {
      byId.set(p.id, p);
      dots.appendChild(svg('circle', { cx: f.sx(p.iteration), cy: f.sy(p.score), r: 2.6, class: 'dot', fill: UI.PALETTE[p.island % UI.PALETTE.length], 'data-id': p.id }));
    }
    dots.addEventListener('click', (e) => { if (e.target.dataset.id) window.location.href = UI.programUrl(opts.run, e.target.dataset.id); });
    dots.addEventListener('mouseover', (e) => {
      const p = byId.get(e.target.dataset.id);
      if (p && !e.target.firstChild) e.target.appendChild(svg('title', { text: `${p.id}: ${fmt(p.score)} (island ${p.island}, iteration ${p.iteration})` }));
    });
    f.plot.appendChild(dots);
    if (data.best.length) {
      let d = '';
      data.best.forEach((b, i) => {
        const x = f.sx(b.iteration); const y = f.sy(b.score);
        d += i === 0 ? `M${x},${y}` : `H${x}V${y}`;
      });
      d += `H${f.sx(last)}`;
      f.plot.appendChild(svg('path', { d, class: 'best-line', id: 'best-line' }));
      for (const b of data.best) {
        const mark = svg('circle', { cx: f.sx(b.iteration), cy: f.sy(b.score), r: 3.5, class: 'best-dot' },
          svg('title', { text: `new best ${fmt(b.score)} at iteration ${b.iteration}: ${b.program_id}` }));
        mark.addEventListener('click', () => { window.location.href = UI.programUrl(opts.run, b.program_id); });
        f.plot.appendChild(mark);
      }
    }
  }

  // Shares of each status per window of iterations, stacked (an area per status).
  function outcomes(container, data, order) {
    const bins = data.bins;
    if (!bins.length) { clear(container).appendChild(el('p', { class: 'muted', text: 'no program yet' })); return []; }
    const statuses = order.filter((s) => bins.some((b) => b.counts[s]));
    for (const b of bins) for (const s of Object.keys(b.counts)) if (!statuses.includes(s)) statuses.push(s);
    const x0 = bins[0].start; const x1 = Math.max(bins[bins.length - 1].end + 1, x0 + 1);
    const f = frame(container, { x: [x0, x1], y: [0, 1], exactY: true, height: 240, xlabel: 'iteration', ylabel: 'share of programs', yfmt: (t) => `${Math.round(t * 100)}%` });
    const totals = bins.map((b) => Object.values(b.counts).reduce((a, c) => a + c, 0) || 1);
    bins.forEach((b, i) => { // one stacked bar per window of iterations, spanning it
      let below = 0;
      const left = f.sx(b.start); const right = f.sx(Math.min(x1, b.end + 1));
      for (const s of statuses) {
        const share = (b.counts[s] || 0) / totals[i];
        if (!share) continue;
        f.plot.appendChild(svg('rect', {
          x: left, width: Math.max(1, right - left - 0.5), y: f.sy(below + share), height: f.sy(below) - f.sy(below + share),
          fill: UI.statusColor(s), class: 'area', 'data-status': s,
        }, svg('title', { text: `${s}: ${b.counts[s]} of ${totals[i]} (iterations ${b.start} to ${b.end})` })));
        below += share;
      }
    });
    return statuses;
  }

  // One island's grid: cells coloured by the elite's score on the run's scale; a click opens the elite.
  function heatmap(container, map, opts) {
    const cell = Math.max(14, Math.min(40, Math.floor(320 / Math.max(map.width, map.height))));
    const m = { l: 44, t: 26, b: 34 };
    const width = m.l + map.width * cell + 10;
    const height = m.t + map.height * cell + m.b;
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'heatmap', 'data-island': map.island });
    root.appendChild(svg('text', { x: m.l, y: 16, class: 'label', text: `island ${map.island}: ${map.elites}/${map.n_cells} cells` }));
    for (let y = 0; y < map.height; y += 1) {
      for (let x = 0; x < map.width; x += 1) {
        root.appendChild(svg('rect', { x: m.l + x * cell, y: m.t + (map.height - 1 - y) * cell, width: cell - 1, height: cell - 1, class: 'empty-cell' }));
      }
    }
    const [lo, hi] = opts.range;
    for (const c of map.cells) {
      let t = hi > lo ? (c.score - lo) / (hi - lo) : 1;
      if (opts.direction === 'minimize') t = 1 - t;
      const rect = svg('rect', {
        x: m.l + c.x * cell, y: m.t + (map.height - 1 - c.y) * cell, width: cell - 1, height: cell - 1,
        fill: UI.viridis(t), class: `cell st-${c.standing || 'candidate'}`, 'data-id': c.program_id, 'data-x': c.x, 'data-y': c.y,
        'data-standing': c.standing || 'candidate',
      }, svg('title', { text: `${c.program_id}: ${fmt(c.score)} (iteration ${c.iteration}; ${c.standing || 'candidate'})` }));
      rect.addEventListener('click', () => { window.location.href = UI.programUrl(opts.run, c.program_id); });
      root.appendChild(rect);
    }
    if (map.x) root.appendChild(svg('text', { x: m.l + (map.width * cell) / 2, y: height - 8, 'text-anchor': 'middle', class: 'label', text: `${map.x.name} (${fmt(map.x.min, 4)} to ${fmt(map.x.max, 4)})` }));
    if (map.y) {
      root.appendChild(svg('text', { x: 12, y: m.t + (map.height * cell) / 2, 'text-anchor': 'middle', class: 'label', transform: `rotate(-90 12 ${m.t + (map.height * cell) / 2})`, text: map.y.name }));
    }
    container.appendChild(el('figure', { class: 'map' }, root));
  }

  // Lines of (x, y) per series, each with a name and colour: the runs comparison.
  function lines(container, series, opts) {
    const all = series.flatMap((s) => s.points);
    if (!all.length) { clear(container).appendChild(el('p', { class: 'muted', text: 'nothing to compare yet' })); return; }
    const xs = all.map((p) => p[0]).concat(series.map((s) => s.end)); const ys = all.map((p) => p[1]);
    const f = frame(container, { x: [Math.min(...xs), Math.max(...xs)], y: [Math.min(...ys), Math.max(...ys)], height: 360, xlabel: opts.xlabel, ylabel: opts.ylabel });
    for (const s of series) {
      if (!s.points.length) continue;
      let d = '';
      s.points.forEach((p, i) => { d += i === 0 ? `M${f.sx(p[0])},${f.sy(p[1])}` : `H${f.sx(p[0])}V${f.sy(p[1])}`; });
      d += `H${f.sx(s.end)}`;
      f.plot.appendChild(svg('path', { d, stroke: s.color, class: 'series', 'data-run': s.key }, svg('title', { text: s.name })));
    }
  }

  return { progress, outcomes, heatmap, lines, legend, ticks };
})();
