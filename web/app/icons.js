/**
 * Inline SVG icons (24×24, stroked with currentColor), so the app loads no assets.
 * @module app/icons
 */

const PATHS = {
  mic: '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0"/><path d="M12 18v3"/>',
  micOff: '<path d="M15 9.3V6a3 3 0 0 0-5.7-1.3"/><path d="M9 9v2a3 3 0 0 0 4.6 2.5"/><path d="M19 11a7 7 0 0 1-1.1 3.8"/><path d="M5 11a7 7 0 0 0 11 5.7"/><path d="M12 18v3"/><path d="M3 3l18 18"/>',
  camera: '<rect x="2.5" y="6" width="13" height="12" rx="2.5"/><path d="M15.5 10.5l6-3.5v10l-6-3.5"/>',
  cameraOff: '<path d="M10 6h3a2.5 2.5 0 0 1 2.5 2.5v3"/><path d="M15.5 15.5A2.5 2.5 0 0 1 13 18H5a2.5 2.5 0 0 1-2.5-2.5v-7A2.5 2.5 0 0 1 5 6"/><path d="M15.5 10.5l6-3.5v10l-3.2-1.9"/><path d="M3 3l18 18"/>',
  screen: '<rect x="2.5" y="4" width="19" height="13" rx="2"/><path d="M8 21h8"/><path d="M12 17v4"/><path d="M12 13V8"/><path d="M9.5 10.5L12 8l2.5 2.5"/>',
  screenOff: '<rect x="2.5" y="4" width="19" height="13" rx="2"/><path d="M8 21h8"/><path d="M12 17v4"/><path d="M9.5 8.5l5 5"/><path d="M14.5 8.5l-5 5"/>',
  chat: '<path d="M20 15a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2h12a2 2 0 0 1 2 2z"/>',
  link: '<path d="M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7"/><path d="M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7"/>',
  leave: '<path d="M10.7 13.3a15 15 0 0 0 3 2.3l1.6-1.6a1.5 1.5 0 0 1 1.6-.3 9.5 9.5 0 0 0 3 .7A1.5 1.5 0 0 1 21.5 16v3a1.5 1.5 0 0 1-1.6 1.5A18 18 0 0 1 3.5 4.1 1.5 1.5 0 0 1 5 2.5h3a1.5 1.5 0 0 1 1.5 1.3 9.5 9.5 0 0 0 .7 3 1.5 1.5 0 0 1-.3 1.6L8.3 10"/><path d="M22 2L2 22"/>',
  send: '<path d="M21 3L10 14"/><path d="M21 3l-6.5 18-4.5-7-7-4.5z"/>',
  close: '<path d="M6 6l12 12"/><path d="M18 6L6 18"/>',
  users: '<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0"/><path d="M16 4.6a3.5 3.5 0 0 1 0 6.8"/><path d="M18.5 14.3A6.5 6.5 0 0 1 21.5 20"/>',
  lock: '<rect x="4" y="11" width="16" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>',
  alert: '<circle cx="12" cy="12" r="9.5"/><path d="M12 7.5v5.5"/><path d="M12 16.5v.01"/>',
  check: '<path d="M4.5 12.5l5 5 10-11"/>',
};

/** @typedef {keyof typeof PATHS} IconName */

/**
 * The markup of one icon.
 * @param {IconName} name
 * @param {{size?: number, label?: string}} [options] With `label`, the icon is announced;
 *   otherwise it is hidden from assistive technology.
 * @returns {string}
 */
export function icon(name, { size = 20, label } = {}) {
  const a11y = label ? `role="img" aria-label="${label}"` : 'aria-hidden="true"';
  return `<svg class="icon icon-${name}" width="${size}" height="${size}" viewBox="0 0 24 24" fill="none" `
    + `stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" ${a11y}>`
    + `${PATHS[name]}</svg>`;
}
