#!/usr/bin/env node
/**
 * The demo app and the SDK over built-in TLS: a server with `[http] tls_cert`/`tls_key`
 * (a test CA's certificate for 127.0.0.1), a Chromium trusting that one certificate by its
 * SPKI hash (`--ignore-certificate-errors-spki-list`), two pages of the room app joining
 * one room. Passes when both pages are secure contexts on https://, their signaling
 * WebSocket is wss://, and each decodes the other's camera.
 *
 *   MANIFOLD_URL=https://127.0.0.1:8443 MANIFOLD_SPKI=<base64 sha256 of the SPKI> node https.test.mjs
 *
 * scripts/browser-test.sh makes the certificate and starts the server (dev mode, no key).
 */

import {
  CHROMIUM_ARGS,
  TestFailure,
  closeBrowser,
  launchBrowser,
  printBrowserLog,
  runTest,
  step,
  waitUntil,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 45_000;
const MEDIA_TIMEOUT_MS = 20_000;

const base = (process.env.MANIFOLD_URL ?? '').replace(/\/+$/, '');
const spki = process.env.MANIFOLD_SPKI ?? '';
const browserLog = [];
const browser = { context: null, userDataDir: null };

async function main() {
  if (!base.startsWith('https://') || !spki) {
    console.log('set MANIFOLD_URL=https://... and MANIFOLD_SPKI (see the header of https.test.mjs)');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: async () => printBrowserLog(browserLog),
    cleanup: () => closeBrowser(browser),
  });
}

async function run() {
  const context = await launchBrowser(browser, [
    ...CHROMIUM_ARGS,
    `--ignore-certificate-errors-spki-list=${spki}`,
  ]);
  const room = `https-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  /** @type {string[]} */
  const sockets = [];
  const join = async (/** @type {string} */ name) => {
    const page = await context.newPage();
    page.on('console', (m) => browserLog.push(`[${name}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => browserLog.push(`[${name}] uncaught: ${e.message}`));
    page.on('websocket', (socket) => sockets.push(socket.url()));
    step(`${name} opens the room app at ${base}/ and joins ${room}`);
    await page.goto(`${base}/?room=${room}&name=${name}`, { waitUntil: 'load' });
    const secure = await page.evaluate(() => ({ protocol: location.protocol, secure: window.isSecureContext }));
    if (secure.protocol !== 'https:' || !secure.secure) {
      throw new TestFailure(`${name}'s page is ${JSON.stringify(secure)}, not a secure https: context`);
    }
    await page.getByTestId('join-submit').click();
    return page;
  };
  const ada = await join('ada');
  const bob = await join('bob');
  for (const [name, page] of [['ada', ada], ['bob', bob]]) {
    await waitUntil(
      `${name} to decode the other's camera`,
      async () => (await decoded(page)) > 0,
      MEDIA_TIMEOUT_MS,
      async () => `framesDecoded ${await decoded(page)}`,
    );
    step(`${name} decodes video: framesDecoded ${await decoded(page)}`);
  }
  const signaling = sockets.filter((u) => u.includes('/rtc'));
  if (signaling.length < 2 || signaling.some((u) => !u.startsWith('wss://'))) {
    throw new TestFailure(`signaling sockets: ${JSON.stringify(signaling)}; want two, all wss://`);
  }
  step(`signaling over ${signaling.join(', ')}`);
  console.log('\nPASS: the room app and the SDK over HTTPS/WSS, media flowing both ways');
}

/**
 * Frames of video the page's room connection decoded, over all its inbound streams.
 * @param {import('playwright-core').Page} page
 */
async function decoded(page) {
  return page.evaluate(async () => {
    const pc = /** @type {any} */ (window).manifoldApp?.room?.peerConnection;
    if (!pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((/** @type {any} */ s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0;
    });
    return frames;
  });
}

process.exit(await main());
