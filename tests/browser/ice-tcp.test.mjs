#!/usr/bin/env node
/**
 * ICE over TCP end to end: a Chromium whose WebRTC may not use UDP at all
 * (`--webrtc-ip-handling-policy=disable_non_proxied_udp`: with no proxy configured,
 * Chromium gathers no UDP candidate and checks no UDP pair) publishes its fake camera and
 * microphone from whip.html and plays the room from whep.html. Passes when both peer
 * connections' selected candidate pairs are TCP, the player decodes video that keeps
 * growing, and the server's /stats counts ICE-TCP frames both ways.
 *
 *   MANIFOLD_URL=http://127.0.0.1:18080 node ice-tcp.test.mjs   # server with media.ice_tcp on
 *
 * The server must run with `media.ice_tcp = true` and without an auth key (the pages and
 * /stats are used without a token); scripts/browser-test.sh starts it so.
 */

import { setTimeout as sleep } from 'node:timers/promises';
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

const OVERALL_TIMEOUT_MS = 60_000;
const MEDIA_TIMEOUT_MS = 20_000;

const base = (process.env.MANIFOLD_URL ?? '').replace(/\/+$/, '');
const browserLog = [];
const browser = { context: null, userDataDir: null };

async function main() {
  if (!base) {
    console.log('MANIFOLD_URL is not set; e.g. MANIFOLD_URL=http://127.0.0.1:18080 node ice-tcp.test.mjs');
    return 2;
  }
  return runTest(run, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    onFailure: async () => {
      console.log(`server /stats ice_tcp: ${JSON.stringify(await iceTcpStats().catch((e) => String(e)))}`);
      printBrowserLog(browserLog);
    },
    cleanup: () => closeBrowser(browser),
  });
}

async function run() {
  const before = await iceTcpStats();
  if (!before.enabled) throw new TestFailure(`the server at ${base} runs without media.ice_tcp`);
  const context = await launchBrowser(browser, [
    ...CHROMIUM_ARGS,
    '--webrtc-ip-handling-policy=disable_non_proxied_udp',
  ]);
  const room = `ice-tcp-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const open = async (/** @type {string} */ name) => {
    const page = await context.newPage();
    page.on('console', (m) => browserLog.push(`[${name}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => browserLog.push(`[${name}] uncaught: ${e.message}`));
    await page.goto(`${base}/${name}.html?room=${room}&autostart=1`, { waitUntil: 'load' });
    return page;
  };

  step(`publishing to room ${room} with UDP disabled`);
  const publisher = await open('whip');
  await waitUntil(
    'the publisher to send video over a selected pair',
    async () => (await transport(publisher, 'publisher')).framesSent > 0,
    MEDIA_TIMEOUT_MS,
    async () => JSON.stringify(await transport(publisher, 'publisher')),
  );
  const sent = await transport(publisher, 'publisher');
  step(`publisher: ${JSON.stringify(sent)}`);

  // The room may learn of the publisher's tracks a moment after its connection is up.
  let player = await open('whep');
  for (let attempt = 1; ; attempt++) {
    try {
      await waitUntil(
        'the player to decode video',
        async () => (await transport(player, 'player')).framesDecoded > 0,
        MEDIA_TIMEOUT_MS / 2,
        async () => JSON.stringify(await transport(player, 'player')),
      );
      break;
    } catch (error) {
      if (attempt >= 3) throw error;
      step(`attempt ${attempt}: ${error.message}; reloading the player`);
      await player.close();
      player = await open('whep');
    }
  }
  const first = await transport(player, 'player');
  await sleep(2_000);
  const later = await transport(player, 'player');
  step(`player: ${JSON.stringify(later)}`);

  const problems = [];
  for (const [who, t] of [
    ['publisher', await transport(publisher, 'publisher')],
    ['player', later],
  ]) {
    if (t.localProtocol !== 'tcp' || t.remoteProtocol !== 'tcp') {
      problems.push(`${who}'s selected pair is ${t.localProtocol}/${t.remoteProtocol}, not tcp/tcp`);
    }
    if (t.remoteTcpType !== 'passive') problems.push(`${who}'s remote candidate is tcptype ${t.remoteTcpType}`);
  }
  if (!(later.framesDecoded > first.framesDecoded)) {
    problems.push(`framesDecoded stopped growing (${first.framesDecoded} → ${later.framesDecoded})`);
  }
  const after = await iceTcpStats();
  step(`server ice_tcp: ${JSON.stringify(after)}`);
  if (!(after.frames_in > before.frames_in && after.frames_out > before.frames_out)) {
    problems.push('the server counted no ICE-TCP frames');
  }
  if (problems.length) throw new TestFailure(problems.join('; '));
  console.log('\nPASS: with UDP disabled, Chromium publishes and plays over ICE-TCP');
}

/**
 * The page's peer connection: the selected pair's candidates and the media counters.
 * @param {import('playwright-core').Page} page
 * @param {'publisher' | 'player'} role
 */
async function transport(page, role) {
  return page.evaluate(async (role) => {
    const pc = /** @type {any} */ (window).manifold?.[role]?.pc;
    if (!pc) return { state: 'no peer connection', framesSent: 0, framesDecoded: 0 };
    const report = await pc.getStats();
    const all = [...report.values()];
    const t = all.find((s) => s.type === 'transport');
    const pair = t?.selectedCandidatePairId ? report.get(t.selectedCandidatePairId) : null;
    const local = pair ? report.get(pair.localCandidateId) : null;
    const remote = pair ? report.get(pair.remoteCandidateId) : null;
    const sum = (/** @type {string} */ type, /** @type {string} */ key) =>
      all.filter((s) => s.type === type && s.kind === 'video').reduce((n, s) => n + (s[key] ?? 0), 0);
    return {
      state: pc.connectionState,
      localProtocol: local?.protocol ?? null,
      localTcpType: local?.tcpType ?? null,
      remoteProtocol: remote?.protocol ?? null,
      remoteTcpType: remote?.tcpType ?? null,
      remote: remote ? `${remote.address}:${remote.port}` : null,
      framesSent: sum('outbound-rtp', 'framesSent'),
      framesDecoded: sum('inbound-rtp', 'framesDecoded'),
    };
  }, role);
}

/** The server's ICE-TCP counters (`GET /stats`, dev mode: no token). */
async function iceTcpStats() {
  const response = await fetch(`${base}/stats`, { signal: AbortSignal.timeout(3_000) });
  if (!response.ok) throw new TestFailure(`GET /stats answered ${response.status}`);
  const body = await response.json();
  if (!body.ice_tcp) throw new TestFailure('GET /stats has no ice_tcp');
  return body.ice_tcp;
}

process.exit(await main());
