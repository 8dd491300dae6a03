/**
 * What a browser test needs around its steps: a failure type printed without a stack,
 * timestamped steps, polling with a deadline, bounded cleanup, Debian's Chromium with fake
 * media (launched and removed again), the pages' console when a test fails, and `runTest`,
 * which runs the test under an overall time limit and turns it into an exit code.
 *
 * @module harness
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

/** A failed expectation: printed as is, without a stack. */
export class TestFailure extends Error {}

const started = Date.now();

/**
 * Prints one step, with the seconds since the test started.
 * @param {string} text
 */
export function step(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

/**
 * Polls `check` every 100 ms until it holds; a TestFailure after `timeoutMs`, with what
 * `describe` says.
 * @param {string} what
 * @param {() => Promise<boolean>} check
 * @param {number} timeoutMs
 * @param {() => Promise<string>} [describe]
 */
export async function waitUntil(what, check, timeoutMs, describe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) {
      const detail = describe ? await describe().catch((error) => String(error)) : '';
      throw new TestFailure(`timed out after ${timeoutMs / 1000} s waiting for ${what}${detail ? `: ${detail}` : ''}`);
    }
    await sleep(100);
  }
}

/**
 * Waits for `promise`, but no longer than `ms`; cleanup must never hang the test.
 * @param {Promise<unknown> | undefined} promise
 * @param {number} ms
 */
export async function bounded(promise, ms) {
  if (!promise) return;
  await Promise.race([promise.catch(() => {}), sleep(ms)]);
}

/** Chromium's flags: fake camera and microphone, loopback ICE, hidden pages at full speed. */
export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/**
 * A browser and its profile directory, as a test holds them until `closeBrowser`.
 * @typedef {{context: import('playwright-core').BrowserContext | null, userDataDir: string | null}} Browser
 */

/**
 * Launches Debian's Chromium (`CHROMIUM` overrides `/usr/bin/chromium`; never a
 * downloaded one) headless, with a fresh profile, into `browser`.
 * @param {Browser} browser
 * @param {string[]} [args] Default: CHROMIUM_ARGS.
 * @returns {Promise<import('playwright-core').BrowserContext>}
 */
export async function launchBrowser(browser, args = CHROMIUM_ARGS) {
  browser.userDataDir = await mkdtemp(join(tmpdir(), 'manifold-chromium-'));
  browser.context = await chromium.launchPersistentContext(browser.userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
  });
  return browser.context;
}

/**
 * Closes the browser (at most 10 s) and removes its profile directory.
 * @param {Browser} browser
 */
export async function closeBrowser(browser) {
  await bounded(browser.context?.close(), 10_000);
  if (browser.userDataDir) await rm(browser.userDataDir, { recursive: true, force: true }).catch(() => {});
}

/**
 * Prints what the pages said, after a failure.
 * @param {string[]} lines
 */
export function printBrowserLog(lines) {
  console.log('\nBrowser console:');
  console.log(lines.length ? lines.map((line) => `  ${line}`).join('\n') : '  (nothing)');
}

/**
 * Runs `run` within `timeoutMs`; on failure prints why and calls `onFailure` (its
 * diagnostics; at most 45 s), then `cleanup` whatever happened (at most 15 s). Resolves
 * with the exit code: 0 passed, 1 failed.
 * @param {() => Promise<void>} run
 * @param {{timeoutMs: number, onFailure?: () => Promise<void> | void, cleanup?: () => Promise<void> | void}} options
 * @returns {Promise<number>}
 */
export async function runTest(run, { timeoutMs, onFailure, cleanup }) {
  let timer;
  const overall = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TestFailure(`gave up after ${timeoutMs / 1000} s`)), timeoutMs);
  });
  let failed = false;
  try {
    await Promise.race([run(), overall]);
  } catch (error) {
    failed = true;
    console.log(`\nFAIL: ${error instanceof TestFailure ? error.message : error?.stack ?? error}`);
    await bounded(Promise.resolve(onFailure?.()), 45_000);
  } finally {
    clearTimeout(timer);
    await bounded(Promise.resolve(cleanup?.()), 15_000);
  }
  console.log(failed ? '\nbrowser: 0 passed, 1 failed' : '\nbrowser: 1 passed, 0 failed');
  return failed ? 1 : 0;
}
