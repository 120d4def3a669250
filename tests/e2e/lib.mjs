// What the browser tests share: waiting for what the page shows, catching the API
// answer an action caused, launching Chromium, and running steps in order.

import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

export const TIMEOUT = 10_000;
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `read()` satisfies `ok`, failing with what was last read. */
export async function eventually(what, read, ok, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await read();
    if (ok(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeout} ms`);
    await sleep(100);
  }
}

export const textOf = (locator) => async () =>
  (await locator.count()) ? (await locator.first().textContent()).trim() : null;

export async function expectText(locator, pattern, what = String(pattern)) {
  return eventually(`text ${what}`, textOf(locator), (t) => t !== null && pattern.test(t));
}

export async function expectCount(locator, n, what) {
  return eventually(`count of ${what}`, () => locator.count(), (c) => c === n);
}

export async function expectVisible(locator, visible = true) {
  await locator.waitFor({ state: visible ? 'visible' : 'hidden', timeout: TIMEOUT });
}

/** Runs `act` and returns the API answer to `method path` that it caused. */
export async function answerTo(page, method, path, act) {
  const [response] = await Promise.all([
    page.waitForResponse(
      (r) => r.request().method() === method && new URL(r.url()).pathname.startsWith(path),
      { timeout: TIMEOUT },
    ),
    act(),
  ]);
  return response;
}

/** A headless Chromium, and the folder of `screenshot` made. */
export async function launch(screenshot) {
  await mkdir(dirname(screenshot), { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Collects uncaught errors and console errors of `page` into `errors`. */
export function watchErrors(page, errors, prefix = '') {
  page.on('pageerror', (e) => errors.push(`${prefix}uncaught: ${e.message}`));
  page.on('console', (m) => {
    // A refused request (401, 403, 429) is logged by Chromium itself; those are expected.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`${prefix}${m.text()}`);
  });
}

/**
 * Runs `steps` ([name, async fn] pairs) in order, printing TAP-like lines, and stops at
 * the first failure (every later step builds on it), with a screenshot of the page.
 * True when every step passed.
 */
export async function runSteps(label, steps, { page, message, screenshot }) {
  let passed = 0;
  let failed = 0;
  for (const [name, run] of steps) {
    try {
      await run();
      passed += 1;
      console.log(`ok ${passed} - ${name}`);
    } catch (err) {
      failed += 1;
      console.log(`not ok ${passed + 1} - ${name}`);
      console.log(`  ${String(err.stack || err).replaceAll('\n', '\n  ')}`);
      const said = message ? await textOf(message)().catch(() => null) : null;
      if (said) console.log(`  the page says: ${said}`);
      const failureShot = screenshot.replace(/(\.png)?$/, '-failure.png');
      await page.screenshot({ path: failureShot, fullPage: true }).catch(() => {});
      console.log(`  screenshot of the failure: ${failureShot}`);
      break;
    }
  }
  const skipped = steps.length - passed - failed;
  console.log(`${label}: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed === 0 && skipped === 0;
}

/** Runs `main` (resolving to true when all passed) with a watchdog, and sets the exit code. */
export function runMain(label, main, seconds = 180) {
  // A hung browser must not hang CI.
  const watchdog = setTimeout(() => {
    console.error(`${label}: gave up after ${seconds} s`);
    process.exit(1);
  }, seconds * 1000);
  watchdog.unref();
  main().then(
    (ok) => {
      process.exitCode = ok ? 0 : 1;
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
