/* evolve ui: the steering controls (token box, pin/ban buttons, notes) shared by the run and program pages. */
'use strict';

const Steer = (() => {
  const { el, clear } = UI;

  function message(text, bad) {
    const box = document.getElementById('steer-message');
    if (box) { box.textContent = text; box.className = bad ? 'bad' : 'muted'; }
  }

  function tokenBox() {
    const input = document.getElementById('token-input');
    const whoInput = document.getElementById('who-input');
    const state = document.getElementById('token-state');
    if (!input) return;
    const show = () => { state.textContent = UI.token() ? 'token set: actions enabled' : 'no token: view only'; };
    whoInput.value = UI.who();
    document.getElementById('token-box').addEventListener('submit', (event) => {
      event.preventDefault();
      if (input.value) UI.setToken(input.value.trim());
      UI.setWho(whoInput.value.trim());
      input.value = '';
      show();
    });
    show();
  }

  async function act(run, body, after) {
    try {
      const data = await UI.steer(run, body);
      message(`recorded: ${data.recorded.action} ${data.recorded.program_id || ''}`.trim(), false);
      if (after) after(data.state);
      return data;
    } catch (err) {
      message(err.message, true);
      return null;
    }
  }

  // The run page's panel: pinned and banned programs with undo buttons, notes and the note form.
  function panel(run, state) {
    const list = (id, ids, undo) => {
      const ul = clear(document.getElementById(id));
      if (!ids.length) ul.appendChild(el('li', { class: 'muted', text: 'none' }));
      for (const pid of ids) {
        ul.appendChild(el('li', { 'data-id': pid }, UI.link(run, pid), ' ',
          el('button', { type: 'button', class: 'small', text: undo, onclick: () => act(run, { action: undo, program_id: pid }, (s) => panel(run, s)) })));
      }
    };
    list('steer-pinned', state.pinned, 'unpin');
    list('steer-banned', state.banned, 'unban');
    const notes = clear(document.getElementById('steer-notes'));
    if (!state.notes.length) notes.appendChild(el('li', { class: 'muted', text: 'none' }));
    for (const n of state.notes.slice(-20)) {
      notes.appendChild(el('li', { class: 'note' }, el('span', { class: 'note-text', text: n.text }),
        el('span', { class: 'muted', text: ` (${n.who || '?'}, ${UI.when(n.at)})` })));
    }
    const damaged = document.getElementById('steer-damaged');
    const issues = state.damaged.map((d) => `line ${d.line}: ${d.reason}`).concat(state.warnings);
    if (state.incomplete_tail) issues.push(`an incomplete last line (${state.incomplete_tail} bytes)`);
    damaged.textContent = issues.length ? `steering log problems: ${issues.join('; ')}` : '';
  }

  function noteForm(run, after) {
    const form = document.getElementById('note-form');
    if (!form) return;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const text = document.getElementById('note-text');
      if (await act(run, { action: 'note', text: text.value }, after)) text.value = '';
    });
  }

  return { tokenBox, act, panel, noteForm, message };
})();
