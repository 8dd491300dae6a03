/**
 * The chat panel: the message list, a recipient picker for private messages, and the
 * composer (Enter sends, Shift+Enter breaks the line). Errors show under the composer.
 * @module app/chat
 */

import { icon } from './icons.js';
import { $, clock, h, hue } from './util.js';

/** @typedef {import('../sdk/manifold.js').ChatMessage} ChatMessage */

const MAX_CHARS = 2000;

export class ChatPanel {
  #root;
  #list;
  #input;
  #to;
  #error;
  #empty;
  /** @type {(text: string, to: string | null) => Promise<void>} */
  #send;
  /** @type {(count: number) => void} */
  #onUnread;
  #unread = 0;
  #open = true;
  /** @type {Map<string, string>} participant id → name, for "to Bob". */
  #names = new Map();

  /**
   * @param {HTMLElement} root
   * @param {{send: (text: string, to: string | null) => Promise<void>, onUnread: (count: number) => void}} options
   */
  constructor(root, { send, onUnread }) {
    this.#root = root;
    this.#send = send;
    this.#onUnread = onUnread;
    this.#list = $('[data-testid="chat-messages"]', root);
    this.#input = /** @type {HTMLTextAreaElement} */ ($('[data-testid="chat-input"]', root));
    this.#to = /** @type {HTMLSelectElement} */ ($('[data-testid="chat-to"]', root));
    this.#error = $('[data-testid="chat-error"]', root);
    this.#empty = $('.chat-empty', root);
    const form = /** @type {HTMLFormElement} */ ($('form', root));
    $('[data-testid="chat-send"]', root).innerHTML = icon('send', { size: 18, label: 'Send' });

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#submit();
      }
    });
    this.#input.addEventListener('input', () => {
      this.#autosize();
      if (this.#input.value.length <= MAX_CHARS) this.#showError('');
    });
    this.#to.addEventListener('change', () => this.#updatePlaceholder());
  }

  /** Whether the panel is visible (unread counting stops while it is). */
  set open(open) {
    this.#open = open;
    if (open) {
      this.#unread = 0;
      this.#onUnread(0);
      this.#list.scrollTop = this.#list.scrollHeight;
    }
  }

  get open() {
    return this.#open;
  }

  /** Focuses the message box. */
  focus() {
    this.#input.focus();
  }

  /**
   * The people private messages can go to.
   * @param {{id: string, name: string}[]} participants
   */
  setRecipients(participants) {
    this.#names = new Map(participants.map((p) => [p.id, p.name]));
    const selected = this.#to.value;
    const options = [h('option', { value: '' }, ['Everyone'])];
    for (const p of [...participants].sort((a, b) => a.name.localeCompare(b.name))) {
      options.push(h('option', { value: p.id }, [p.name]));
    }
    this.#to.replaceChildren(...options);
    // Keep a private conversation's recipient while they are here.
    this.#to.value = this.#names.has(selected) ? selected : '';
    this.#updatePlaceholder();
  }

  /**
   * Appends a message.
   * @param {ChatMessage} message
   * @param {string} localId This client's participant id.
   */
  add(message, localId) {
    this.#empty.hidden = true;
    const stick = this.#list.scrollHeight - this.#list.scrollTop - this.#list.clientHeight < 40;
    const author = message.local ? 'You' : message.from.name;
    const meta = [h('span', { class: 'msg-author', style: `--hue: ${hue(message.from.identity || message.from.name)}` }, [author])];
    if (message.private) {
      let badge;
      if (message.local || message.from.id === localId) {
        badge = `Private to ${this.#names.get(message.to ?? '') ?? 'someone who left'}`;
      } else {
        badge = 'Private to you';
      }
      const lock = h('span', { class: 'msg-badge' });
      lock.innerHTML = icon('lock', { size: 12 });
      lock.append(badge);
      meta.push(lock);
    }
    meta.push(h('time', { datetime: new Date(message.ts).toISOString() }, [clock(message.ts)]));
    const item = h('li', {
      class: `msg${message.local ? ' msg-own' : ''}${message.private ? ' msg-private' : ''}`,
      'data-testid': 'chat-message',
      'data-from': message.from.id,
      'data-private': message.private ? 'true' : undefined,
      'data-request': message.requestId !== null ? String(message.requestId) : undefined,
    }, [h('div', { class: 'msg-meta' }, meta), h('div', { class: 'msg-text' }, [message.text])]);
    this.#list.append(item);
    if (stick || message.local) this.#list.scrollTop = this.#list.scrollHeight;
    if (!this.#open && !message.local) {
      this.#unread++;
      this.#onUnread(this.#unread);
    }
  }

  /**
   * Marks one of our messages as not delivered.
   * @param {number} requestId
   * @param {string} reason
   * @returns {boolean} Whether it was one of ours.
   */
  markFailed(requestId, reason) {
    const item = this.#list.querySelector(`[data-request="${requestId}"]`);
    if (!item) return false;
    if (!item.classList.contains('msg-failed')) {
      item.classList.add('msg-failed');
      item.append(h('div', { class: 'msg-failure' }, [`Not delivered: ${reason}`]));
    }
    return true;
  }

  /** Adds a line about the room itself ("Bob joined"). @param {string} text */
  notice(text) {
    this.#empty.hidden = true;
    this.#list.append(h('li', { class: 'msg-notice' }, [text]));
    this.#list.scrollTop = this.#list.scrollHeight;
  }

  /** Empties the list. */
  clear() {
    this.#list.replaceChildren();
    this.#empty.hidden = false;
    this.#showError('');
    this.#input.value = '';
  }

  async #submit() {
    const text = this.#input.value;
    if (!text.trim()) return;
    if (text.length > MAX_CHARS) {
      this.#showError(`Messages are limited to ${MAX_CHARS} characters (this one has ${text.length}).`);
      return;
    }
    const to = this.#to.value || null;
    this.#input.value = '';
    this.#autosize();
    this.#showError('');
    try {
      await this.#send(text, to);
    } catch (error) {
      this.#showError(error instanceof Error ? error.message : String(error));
    }
  }

  /** @param {string} text */
  #showError(text) {
    this.#error.textContent = text;
    this.#error.hidden = !text;
  }

  #updatePlaceholder() {
    const to = this.#to.value;
    this.#input.placeholder = to ? `Message ${this.#names.get(to)} privately` : 'Message everyone';
    this.#root.classList.toggle('chat-private', Boolean(to));
  }

  #autosize() {
    this.#input.style.height = 'auto';
    this.#input.style.height = `${Math.min(this.#input.scrollHeight, 140)}px`;
  }
}
