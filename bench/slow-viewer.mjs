// Drives bench/slow-viewer.sh's browsers: a publisher and a fast viewer in one network
// namespace, a slow viewer in another behind a token bucket. Each is its own headless
// Chromium (Debian's, through playwright-core from tests/browser), started inside its
// namespace by bench/chromium-ns.sh. Prints and writes what each viewer decoded between
// the end of a warm-up and the end of the run.
import { createRequire } from 'node:module';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

const base = process.env.MANIFOLD_URL;
const seconds = Number(process.env.SECONDS_TO_RUN || 30);
const simulcast = process.env.SIMULCAST !== '0';
const warmup = Math.min(10, Math.floor(seconds / 3));
const room = `slow-${Date.now().toString(36)}`;
const origin = new URL(base).origin;

const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--autoplay-policy=no-user-gesture-required',
  `--unsafely-treat-insecure-origin-as-secure=${origin}`,
];

async function browserIn(ns) {
  return chromium.launch({
    executablePath: join(here, 'chromium-ns.sh'),
    env: { ...process.env, MANIFOLD_NS: ns },
    args,
    timeout: 60_000,
  });
}

async function open(browser) {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`  [page] ${m.text()}`); });
  await page.goto(`${base}/whep.html`, { waitUntil: 'load' });
  return page;
}

async function joinRoom(page, name, publish) {
  await page.evaluate(async ({ room, name, publish, simulcast }) => {
    const { Room } = await import('/sdk/manifold.js');
    const r = await Room.connect(location.origin, null, { room, name, autoSubscribe: !publish });
    window.room = r;
    window.streamStates = [];
    r.on('streamStateChanged', (e) => window.streamStates.push({ state: e.state, quality: e.quality }));
    r.on('trackSubscribed', ({ mediaStreamTrack }) => {
      const el = document.createElement(mediaStreamTrack.kind === 'video' ? 'video' : 'audio');
      el.autoplay = true;
      el.muted = true;
      el.playsInline = true;
      el.srcObject = new MediaStream([mediaStreamTrack]);
      document.body.append(el);
    });
    if (publish) {
      await r.publishCamera({ width: 1280, height: 720, frameRate: 30 }, simulcast ? {} : { simulcast: false });
      await r.publishMicrophone();
    }
  }, { room, name, publish, simulcast });
}

async function inbound(page) {
  return page.evaluate(async () => {
    const stats = await window.room.peerConnection.getStats();
    for (const s of stats.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        return {
          framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0, freezeCount: s.freezeCount ?? 0,
          totalFreezesDuration: s.totalFreezesDuration ?? 0, packetsLost: s.packetsLost ?? 0,
          packetsReceived: s.packetsReceived ?? 0, nackCount: s.nackCount ?? 0,
          pliCount: s.pliCount ?? 0, bytesReceived: s.bytesReceived ?? 0,
          keyFramesDecoded: s.keyFramesDecoded ?? 0,
        };
      }
    }
    return null;
  });
}

async function outbound(page) {
  return page.evaluate(async () => {
    const out = {};
    const stats = await window.room.peerConnection.getStats();
    for (const s of stats.values()) {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out[s.rid || '-'] = { bytesSent: s.bytesSent, frameWidth: s.frameWidth ?? 0, keyFramesEncoded: s.keyFramesEncoded ?? 0 };
      }
    }
    return out;
  });
}

function diff(a, b, k) { return (b?.[k] ?? 0) - (a?.[k] ?? 0); }

function summary(name, a, b, secs, states) {
  const lost = diff(a, b, 'packetsLost');
  const received = diff(a, b, 'packetsReceived');
  return {
    viewer: name,
    resolution: b ? `${b.frameWidth}x${b.frameHeight}` : 'none',
    fps: +(diff(a, b, 'framesDecoded') / secs).toFixed(1),
    framesDecoded: diff(a, b, 'framesDecoded'),
    freezes: diff(a, b, 'freezeCount'),
    freezeSeconds: +diff(a, b, 'totalFreezesDuration').toFixed(2),
    kbps: Math.round((diff(a, b, 'bytesReceived') * 8) / secs / 1000),
    lossPercent: received + lost > 0 ? +((100 * lost) / (received + lost)).toFixed(1) : 0,
    nacks: diff(a, b, 'nackCount'),
    plis: diff(a, b, 'pliCount'),
    keyframes: diff(a, b, 'keyFramesDecoded'),
    streamStates: states,
  };
}

const browsers = [];
try {
  const pubBrowser = await browserIn(process.env.NS_FAST);
  const fastBrowser = await browserIn(process.env.NS_FAST);
  const slowBrowser = await browserIn(process.env.NS_SLOW);
  browsers.push(pubBrowser, fastBrowser, slowBrowser);
  const pub = await open(pubBrowser);
  await joinRoom(pub, 'publisher', true);
  const fast = await open(fastBrowser);
  await joinRoom(fast, 'fast', false);
  const slow = await open(slowBrowser);
  await joinRoom(slow, 'slow', false);
  console.log(`room ${room}: publisher and two viewers joined; warming up ${warmup} s, then ${seconds - warmup} s measured`);
  await new Promise((r) => setTimeout(r, warmup * 1000));
  const a = { fast: await inbound(fast), slow: await inbound(slow), pub: await outbound(pub) };
  const secs = seconds - warmup;
  await new Promise((r) => setTimeout(r, secs * 1000));
  const b = { fast: await inbound(fast), slow: await inbound(slow), pub: await outbound(pub) };
  const states = await slow.evaluate(() => window.streamStates);
  const fastStates = await fast.evaluate(() => window.streamStates);
  const rows = [summary('fast', a.fast, b.fast, secs, fastStates), summary(`slow (${process.env.RATE})`, a.slow, b.slow, secs, states)];
  const layers = Object.fromEntries(Object.entries(b.pub).map(([rid, s]) => [rid, {
    kbps: Math.round(((s.bytesSent - (a.pub[rid]?.bytesSent ?? 0)) * 8) / secs / 1000), frameWidth: s.frameWidth,
  }]));
  console.log(`publisher layers (kbit/s sent while measured): ${JSON.stringify(layers)}`);
  console.log('| viewer | resolution | fps | frames | freezes (s) | kbit/s | loss % | NACKs | PLIs |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(`| ${r.viewer} | ${r.resolution} | ${r.fps} | ${r.framesDecoded} | ${r.freezes} (${r.freezeSeconds}) | ${r.kbps} | ${r.lossPercent} | ${r.nacks} | ${r.plis} |`);
  }
  console.log(`slow viewer's stream_state events: ${JSON.stringify(states)}`);
  console.log(`fast viewer's stream_state events: ${JSON.stringify(fastStates)}`);
  if (process.env.OUT) {
    await writeFile(process.env.OUT, JSON.stringify({ rate: process.env.RATE, simulcast, seconds: secs, viewers: rows, publisher: layers }, null, 2));
  }
} finally {
  for (const b of browsers) await b.close().catch(() => {});
}
