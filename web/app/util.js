/**
 * Small helpers for the demo app: DOM lookup, names, colours, times, toasts.
 * @module app/util
 */

/**
 * @template {HTMLElement} T
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {T}
 */
export function $(selector, root = document) {
  const element = root.querySelector(selector);
  if (!element) throw new Error(`page is missing ${selector}`);
  return /** @type {T} */ (element);
}

/**
 * Creates an element with attributes and children.
 * @param {string} tag
 * @param {Record<string, string | boolean | undefined>} [attributes] `class`, `data-*`,
 *   `hidden`, ...; false or undefined values are left out.
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElement}
 */
export function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === undefined) continue;
    element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) element.append(child);
  return element;
}

/**
 * Up to two initials of a name: "Ada Lovelace" → "AL", "bob" → "B".
 * @param {string} name
 * @returns {string}
 */
export function initials(name) {
  const words = name.trim().split(/[\s._-]+/).filter(Boolean);
  if (words.length === 0) return '?';
  const first = Array.from(words[0])[0] ?? '';
  const last = words.length > 1 ? Array.from(words[words.length - 1])[0] ?? '' : '';
  return (first + last).toUpperCase();
}

/**
 * A stable hue for a string, so each person keeps their avatar colour.
 * @param {string} text
 * @returns {number}
 */
export function hue(text) {
  let hash = 2166136261;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  return Math.abs(hash) % 360;
}

/**
 * "14:05" in the user's locale.
 * @param {number} ts Milliseconds since the epoch.
 * @returns {string}
 */
export function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * A room name from free text: lowercase letters, digits and dashes.
 * @param {string} text
 * @returns {string}
 */
export function slug(text) {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 48);
}

/**
 * A valid room name from what the user typed: letters, digits, `_`, `-` and `.` are kept
 * (case too), anything else becomes a dash.
 * @param {string} text
 * @returns {string}
 */
export function roomName(text) {
  return text
    .trim()
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64);
}

/**
 * A readable random room name, e.g. "calm-river-42".
 * @returns {string}
 */
export function randomRoomName() {
  const adjectives = ['calm', 'bright', 'swift', 'quiet', 'bold', 'brave', 'kind', 'wild', 'warm', 'clear'];
  const nouns = ['river', 'forest', 'harbor', 'meadow', 'summit', 'comet', 'canyon', 'island', 'garden', 'valley'];
  const pick = (/** @type {string[]} */ list) => list[Math.floor(Math.random() * list.length)];
  return `${pick(adjectives)}-${pick(nouns)}-${Math.floor(Math.random() * 90 + 10)}`;
}

/**
 * Shows a short notice in the corner.
 * @param {string} text
 * @param {{kind?: 'info' | 'error' | 'success', ms?: number}} [options]
 */
export function toast(text, { kind = 'info', ms = 3500 } = {}) {
  const host = document.getElementById('toasts');
  if (!host) return;
  const element = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, [text]);
  host.append(element);
  // Keep at most four on screen.
  while (host.children.length > 4) host.firstElementChild?.remove();
  setTimeout(() => {
    element.classList.add('leaving');
    setTimeout(() => element.remove(), 300);
  }, ms);
}

/**
 * Copies text to the clipboard, with a fallback for browsers without the async API.
 * @param {string} text
 * @returns {Promise<boolean>}
 */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h('textarea', { class: 'offscreen', readonly: true });
    /** @type {HTMLTextAreaElement} */ (area).value = text;
    document.body.append(area);
    /** @type {HTMLTextAreaElement} */ (area).select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}
