/* evolve ui: the genealogy as a tidy tree in SVG (root on top). Colour: score; size: number of children; the
   path to the best program highlighted; filters fade what they exclude. */
'use strict';

const Tree = (() => {
  const { svg, el, clear, fmt } = UI;
  const GAP_X = 22;
  const GAP_Y = 64;

  function layout(data) {
    const byId = new Map(data.nodes.map((n) => [n.program_id, { ...n, kids: [] }]));
    let root = byId.get(data.root);
    for (const n of byId.values()) {
      const parent = n.parent_id && byId.get(n.parent_id);
      if (parent && n !== root) parent.kids.push(n);
    }
    if (!root) return null;
    for (const n of byId.values()) n.kids.sort((a, b) => a.iteration - b.iteration);
    let next = 0;
    let depthMax = 0;
    (function place(n, depth) { // leaves left to right, parents centred over their children
      n.depth = depth;
      depthMax = Math.max(depthMax, depth);
      if (!n.kids.length) { n.slot = next; next += 1; return; }
      n.kids.forEach((k) => place(k, depth + 1));
      n.slot = (n.kids[0].slot + n.kids[n.kids.length - 1].slot) / 2;
    }(root, 0));
    return { root, nodes: [...byId.values()].filter((n) => n.depth !== undefined), leaves: next, depth: depthMax };
  }

  function render(container, data, opts) {
    clear(container);
    const tree = layout(data);
    if (!tree) { container.appendChild(el('p', { class: 'muted', text: 'no program yet' })); return; }
    const gapX = tree.leaves > 80 ? 14 : GAP_X;
    const width = Math.max(400, 40 + tree.leaves * gapX);
    const height = 50 + tree.depth * GAP_Y;
    const x = (n) => 20 + n.slot * gapX + gapX / 2;
    const y = (n) => 24 + n.depth * GAP_Y;
    const scores = tree.nodes.map((n) => n.score).filter((s) => s !== null);
    const lo = Math.min(...scores); const hi = Math.max(...scores);
    const onPath = new Set(opts.highlight ? data.best_path : []);
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'tree-svg', id: 'tree-svg' });
    const edges = svg('g', { class: 'edges' });
    const nodes = svg('g', { class: 'nodes' });
    for (const n of tree.nodes) {
      const shown = opts.visible(n);
      for (const k of n.kids) {
        const best = onPath.has(n.program_id) && onPath.has(k.program_id);
        const midY = (y(n) + y(k)) / 2;
        edges.appendChild(svg('path', {
          d: `M${x(n)},${y(n)}C${x(n)},${midY} ${x(k)},${midY} ${x(k)},${y(k)}`,
          class: `edge${best ? ' best-path' : ''}${shown && opts.visible(k) ? '' : ' faded'}`,
        }));
      }
      let t = hi > lo ? (n.score - lo) / (hi - lo) : 1;
      if (opts.direction === 'minimize') t = 1 - t;
      const scored = n.score !== null && n.status === 'ok';
      const radius = Math.min(14, 3.5 + 1.8 * Math.sqrt(n.children));
      const g = svg('g', {
        class: `node${onPath.has(n.program_id) ? ' best-path' : ''}${n.program_id === data.best ? ' best' : ''}${shown ? '' : ' faded'} st-${n.standing || 'candidate'}`,
        'data-id': n.program_id, 'data-status': n.status, 'data-standing': n.standing || 'candidate', 'data-island': n.island, transform: `translate(${x(n)},${y(n)})`,
      });
      g.appendChild(svg('circle', { r: radius, fill: scored ? UI.viridis(t) : '#fff', stroke: scored ? '#333' : UI.statusColor(n.status), 'stroke-width': scored ? 0.8 : 2 }));
      g.appendChild(svg('title', { text: `${n.program_id} · ${n.status} · score ${fmt(n.score)} · island ${n.island} · iteration ${n.iteration} · ${n.children} children · ${n.standing || 'candidate'}` }));
      g.addEventListener('click', (event) => {
        if (event.shiftKey) opts.expand(n.program_id);
        else window.location.href = UI.programUrl(opts.run, n.program_id);
      });
      nodes.appendChild(g);
      if (n.hidden > 0) {
        const more = svg('text', { x: radius + 3, y: 4, class: 'more', 'data-expand': n.program_id, text: `+${n.hidden}` },
          svg('title', { text: `${n.hidden} more children: show the tree below this program` }));
        more.addEventListener('click', (event) => { event.stopPropagation(); opts.expand(n.program_id); });
        g.appendChild(more);
      }
    }
    root.appendChild(edges);
    root.appendChild(nodes);
    container.appendChild(root);
  }

  return { render, layout };
})();
