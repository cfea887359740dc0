/* evolve ui: the program page's steering buttons and badges. */
'use strict';

(() => {
  const { el, clear, getJSON } = UI;
  const run = UI.runKey();
  const program = document.body.dataset.program;

  function badges(state) {
    const box = clear(document.getElementById('steer-badges'));
    if (state.pinned.includes(program)) box.appendChild(el('span', { class: 'badge pinned', id: 'badge-pinned', text: 'pinned' }));
    if (state.banned.includes(program)) box.appendChild(el('span', { class: 'badge banned', id: 'badge-banned', text: 'banned' }));
    document.body.dataset.steering = String(state.actions.length);
  }

  document.addEventListener('DOMContentLoaded', async () => {
    Steer.tokenBox();
    for (const button of document.querySelectorAll('button[data-steer]')) {
      button.addEventListener('click', () => Steer.act(run, { action: button.dataset.steer, program_id: program }, badges));
    }
    try {
      badges(await getJSON(`/api/run/${encodeURIComponent(run)}/steering`));
      UI.setLive(true);
      document.body.dataset.ready = '1';
    } catch (err) {
      UI.setLive(false, err.message);
    }
    UI.every(Number(document.body.dataset.poll) * 2, async () => badges(await getJSON(`/api/run/${encodeURIComponent(run)}/steering`)));
  });
})();
