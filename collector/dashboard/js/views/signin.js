// Sign-in: paste a read or admin token. It goes to the collector in a POST
// body and is dropped from the page right after; the session is a cookie
// the page cannot read.

import * as api from '../api.js';
import { h, put, note } from '../dom.js';

export function render(main, { done, message }) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: 'pw_...', 'aria-describedby': 'token-help',
  });
  const status = h('div', { id: 'signin-status', 'aria-live': 'polite' }, message ? note(message) : null);
  const form = h('form', { class: 'signin', id: 'signin' },
    h('h1', {}, 'Sign in'),
    h('label', { for: 'token' }, 'Token'),
    input,
    h('p', { id: 'token-help', class: 'help' },
      'A read or admin token (portwatch-collector token create --role read --name NAME). ',
      'It is exchanged for a session and not kept by this page.'),
    h('button', { type: 'submit', id: 'signin-button' }, 'Sign in'),
    status);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value;
    input.value = '';
    try {
      await api.signIn(token);
    } catch (e) {
      put(status, note(e.message, 'error'));
      input.focus();
      return;
    }
    done();
  });
  put(main, form);
  input.focus();
}
