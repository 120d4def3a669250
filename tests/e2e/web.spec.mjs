// End-to-end test of quotask's web page in a real headless Chromium, driven the way a
// person would use it: by labels, buttons and the keyboard. Plain node, no test runner.
//
//   QUOTASK_E2E_BASE_URL      the running server, e.g. http://127.0.0.1:5000 (required)
//   QUOTASK_E2E_DAILY_LIMIT   the server's QUOTASK_DEFAULT_DAILY_LIMIT (default 3)
//   QUOTASK_E2E_SCREENSHOT    where to save the screenshot (default ./screenshot.png)
//   CHROMIUM                  the browser (default /usr/bin/chromium)
//
// Exits 0 when every step passed, 1 otherwise; .ci/e2e.sh starts a server and runs it.

import assert from 'node:assert/strict';
import {
  TIMEOUT,
  answerTo,
  escape,
  expectCount,
  expectText,
  expectVisible,
  launch,
  runMain,
  runSteps,
  watchErrors,
} from './lib.mjs';

const BASE_URL = process.env.QUOTASK_E2E_BASE_URL;
const LIMIT = Number(process.env.QUOTASK_E2E_DAILY_LIMIT || 3);
const SCREENSHOT = process.env.QUOTASK_E2E_SCREENSHOT || 'screenshot.png';
/** Far from UTC, so that a page using the browser's or the server's date would show. */
const ZONE = 'Pacific/Kiritimati';
const DESKTOP = { width: 900, height: 900 };

if (!BASE_URL) {
  console.error('QUOTASK_E2E_BASE_URL is not set');
  process.exit(2);
}
if (!Number.isInteger(LIMIT) || LIMIT < 3) {
  console.error('QUOTASK_E2E_DAILY_LIMIT must be a whole number of at least 3');
  process.exit(2);
}

const username = `e2e_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const password = 'correct horse battery';
/** Markup that must be shown as text, never parsed. */
const MARKUP = '<b>Bold</b> & <img src=x alt=injected>';
const contents = ['Water the plants', MARKUP, 'Buy bread', ...Array.from({ length: LIMIT - 3 }, (_, i) => `Task ${i + 4}`)];
const quotaLine = (left) =>
  new RegExp(`^${left} of ${LIMIT} left today, resets at \\d\\d:\\d\\d \\(${escape(ZONE)}\\)$`);

async function main() {
  const browser = await launch(SCREENSHOT);
  const context = await browser.newContext({ viewport: DESKTOP, timezoneId: ZONE, locale: 'en-GB' });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);

  const browserErrors = [];
  watchErrors(page, browserErrors);

  const ui = {
    authHeading: page.getByRole('heading', { name: /^(Sign in|Create an account)$/ }),
    username: page.getByLabel('Username'),
    password: page.getByLabel('Password'),
    timezone: page.getByLabel('Time zone'),
    newTask: page.getByLabel('New task'),
    quota: page.locator('#quota-text'),
    limit: page.locator('#limit-message'),
    message: page.locator('#message'),
    who: page.locator('#who-name'),
    tasks: page.locator('#task-list > li'),
    tasksView: page.locator('#tasks-view'),
    checkbox: (content) => page.getByRole('checkbox', { name: content, exact: true }),
  };
  const storedTokens = () =>
    page.evaluate(() => [localStorage.getItem('quotask.access_token'), localStorage.getItem('quotask.refresh_token')]);
  /** Everything the page's scripts can read: localStorage's keys and document.cookie. */
  const readableByScripts = () => page.evaluate(() => [Object.keys(localStorage).sort(), document.cookie]);
  /** The refresh cookie as the browser keeps it (Playwright sees HttpOnly cookies). */
  const refreshCookie = async () =>
    (await context.cookies(`${BASE_URL}/v1/auth/refresh`)).find((c) => c.name === 'quotask_refresh') || null;

  const steps = [
    ['serves the page with a same-origin policy and no caching', async () => {
      const response = await page.goto(BASE_URL);
      assert.equal(response.status(), 200);
      const headers = response.headers();
      assert.match(headers['content-type'], /^text\/html; charset=utf-8/);
      assert.match(headers['content-security-policy'], /^default-src 'self';/);
      assert.equal(headers['cache-control'], 'no-cache');
      await expectText(ui.authHeading, /^Sign in$/);
    }],

    ['signs up a new user in the browser’s time zone and signs them in', async () => {
      await page.getByRole('button', { name: 'Create an account' }).click();
      await expectText(ui.authHeading, /^Create an account$/);
      assert.equal(await ui.timezone.inputValue(), ZONE, 'the time zone defaults to the browser’s');
      await ui.username.fill(username);
      await ui.password.fill(password);
      const signup = await answerTo(page, 'POST', '/v1/auth/signup', () => ui.password.press('Enter'));
      assert.equal(signup.status(), 201);
      assert.equal((await signup.json()).timezone, ZONE);
      await expectVisible(ui.tasksView);
      await expectText(ui.who, new RegExp(`^${username}$`));
      await expectText(ui.quota, quotaLine(LIMIT));
      await expectText(page.locator('#empty'), /^Nothing for today yet\.$/);
      const [access, refresh] = await storedTokens();
      assert.ok(access, 'the access token is kept in localStorage');
      assert.equal(refresh, null, 'localStorage holds no refresh token');
      assert.deepEqual(await readableByScripts(), [['quotask.access_token'], ''], 'scripts see the access token only');
      const cookie = await refreshCookie();
      assert.ok(cookie && cookie.value.length >= 43, 'the refresh token is a cookie');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.secure, true);
      assert.equal(cookie.sameSite, 'Strict');
      assert.equal(cookie.path, '/v1/auth');
    }],

    [`adds ${LIMIT} tasks, the daily limit, showing markup as text`, async () => {
      for (const [i, content] of contents.entries()) {
        await ui.newTask.fill(content);
        const created = await answerTo(page, 'POST', '/v1/tasks', () => ui.newTask.press('Enter'));
        assert.equal(created.status(), 201, `task ${i + 1}`);
        await expectCount(ui.tasks, i + 1, 'tasks');
        await expectText(ui.quota, quotaLine(LIMIT - i - 1));
        assert.equal(await ui.newTask.inputValue(), '', 'the field is emptied');
      }
      assert.equal(await ui.checkbox(MARKUP).count(), 1, 'the markup task is labelled by its literal text');
      assert.equal(await page.locator('#task-list b, #task-list img').count(), 0, 'no markup was parsed');
    }],

    ['refuses one more with a clear limit message', async () => {
      await ui.newTask.fill('One too many');
      const refused = await answerTo(page, 'POST', '/v1/tasks', () => ui.newTask.press('Enter'));
      assert.equal(refused.status(), 429);
      assert.equal((await refused.json()).limit, LIMIT);
      await expectVisible(ui.limit);
      await expectText(
        ui.limit,
        new RegExp(`^Daily limit reached\\. You have added all ${LIMIT} tasks allowed today\\. New ones can be added from \\d\\d:\\d\\d \\(${escape(ZONE)}\\)\\.$`),
        'the limit message',
      );
      await expectCount(ui.tasks, LIMIT, 'tasks');
      assert.equal(await ui.newTask.inputValue(), 'One too many', 'the refused text is kept');
      await expectText(ui.quota, quotaLine(0));
    }],

    ['ticks a task done', async () => {
      const box = ui.checkbox('Water the plants');
      const patched = await answerTo(page, 'PATCH', '/v1/tasks/', () => box.check());
      assert.equal(patched.status(), 200);
      assert.equal((await patched.json()).done, true);
      assert.equal(await box.isChecked(), true);
      assert.match(await page.locator('li.task', { has: box }).getAttribute('class'), /\bdone\b/);
    }],

    ['still shows it done, and the user signed in, after a reload', async () => {
      await page.reload();
      await expectVisible(ui.tasksView);
      await expectText(ui.who, new RegExp(`^${username}$`));
      await expectCount(ui.tasks, LIMIT, 'tasks');
      assert.equal(await ui.checkbox('Water the plants').isChecked(), true);
      assert.equal(await ui.checkbox('Buy bread').isChecked(), false);
      assert.equal(await page.locator('#auth-view').isVisible(), false);
    }],

    ['deletes a task, which does not give its place back', async () => {
      const removed = await answerTo(page, 'DELETE', '/v1/tasks/', () =>
        page.getByRole('button', { name: 'Delete “Buy bread”' }).click(),
      );
      assert.equal(removed.status(), 204);
      await expectCount(ui.tasks, LIMIT - 1, 'tasks');
      assert.equal(await ui.checkbox('Buy bread').count(), 0);
      await expectText(ui.quota, quotaLine(0));
    }],

    ['renews a refused access token with the refresh cookie', async () => {
      const oldRefresh = (await refreshCookie()).value;
      await page.evaluate(() => localStorage.setItem('quotask.access_token', 'not-a-token'));
      const renewed = await answerTo(page, 'POST', '/v1/auth/refresh', () => page.reload());
      assert.equal(renewed.status(), 200);
      assert.equal((await renewed.json()).refresh_token, undefined, 'the answer’s body has no refresh token');
      await expectVisible(ui.tasksView);
      await expectCount(ui.tasks, LIMIT - 1, 'tasks');
      const [access, refresh] = await storedTokens();
      assert.ok(access && access !== 'not-a-token', 'a new access token is stored');
      assert.equal(refresh, null, 'localStorage still holds no refresh token');
      const cookie = await refreshCookie();
      assert.ok(cookie && cookie.value !== oldRefresh, 'the spent refresh cookie is replaced');
    }],

    ['moves a refresh token an earlier page left in localStorage into the cookie', async () => {
      const signedIn = await page.request.post(`${BASE_URL}/v1/auth/signin`, { data: { username, password } });
      const { refresh_token: old } = await signedIn.json();
      assert.ok(old, 'an API client still gets the refresh token in the body');
      await context.clearCookies();
      await page.evaluate((token) => {
        localStorage.setItem('quotask.access_token', 'not-a-token');
        localStorage.setItem('quotask.refresh_token', token);
      }, old);
      const renewed = await answerTo(page, 'POST', '/v1/auth/refresh', () => page.reload());
      assert.equal(renewed.status(), 200);
      await expectVisible(ui.tasksView);
      assert.deepEqual((await readableByScripts())[0], ['quotask.access_token'], 'the old token is gone');
      const cookie = await refreshCookie();
      assert.ok(cookie && cookie.value !== old, 'its successor is the cookie');
    }],

    ['fits a phone screen without sideways scrolling', async () => {
      await page.setViewportSize({ width: 360, height: 740 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
      assert.ok(await page.getByRole('button', { name: 'Add' }).isVisible());
      await page.setViewportSize(DESKTOP);
    }],

    ['still refuses a new task after the reload, and saves a screenshot', async () => {
      await ui.newTask.fill('Call the bank');
      const refused = await answerTo(page, 'POST', '/v1/tasks', () =>
        page.getByRole('button', { name: 'Add' }).click(),
      );
      assert.equal(refused.status(), 429);
      await expectText(ui.limit, /^Daily limit reached\./);
      await ui.newTask.fill('');
      await page.locator('body').click({ position: { x: 5, y: 5 } }); // no focus ring in the picture
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    }],

    ['makes a personal access token, shows it once with a copy button, and revokes it', async () => {
      const listed = await answerTo(page, 'GET', '/v1/me/tokens', () =>
        page.getByText('Personal access tokens', { exact: true }).click(),
      );
      assert.equal(listed.status(), 200);
      await expectText(page.locator('#tokens-empty'), /^No tokens yet\.$/);
      await page.getByLabel('Token name').fill('backup script');
      await page.getByLabel('Read the daily allowance').check();
      const created = await answerTo(page, 'POST', '/v1/me/tokens', () =>
        page.getByRole('button', { name: 'Create token' }).click(),
      );
      assert.equal(created.status(), 201);
      const body = await created.json();
      assert.deepEqual(body.scopes, ['tasks:read', 'quota:read'], 'the ticked scopes');
      const shown = page.getByLabel('New token');
      await expectVisible(shown);
      assert.equal(await shown.inputValue(), body.token, 'the token is shown');
      assert.match(body.token, /^qtk_[A-Za-z0-9_-]{43}$/);

      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE_URL });
      await page.getByRole('button', { name: 'Copy', exact: true }).click();
      await expectText(page.locator('#token-copy'), /^Copied$/);
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), body.token, 'copied');

      const asToken = (path) => fetch(`${BASE_URL}${path}`, { headers: { Authorization: `Bearer ${body.token}` } });
      assert.equal((await asToken('/v1/me/quota')).status, 200, 'the token reads the allowance');
      assert.equal((await asToken('/v1/me')).status, 403, 'but not the account');

      await page.reload();
      await expectVisible(ui.tasksView);
      await answerTo(page, 'GET', '/v1/me/tokens', () => page.getByText('Personal access tokens', { exact: true }).click());
      await expectCount(page.locator('#token-list > li'), 1, 'tokens');
      await expectText(page.locator('#token-list > li strong'), /^backup script$/);
      await expectVisible(shown, false);
      assert.equal(await shown.inputValue(), '', 'not shown again');

      const revoked = await answerTo(page, 'DELETE', '/v1/me/tokens/', () =>
        page.getByRole('button', { name: 'Revoke “backup script”' }).click(),
      );
      assert.equal(revoked.status(), 204);
      await expectCount(page.locator('#token-list > li'), 0, 'tokens');
      await expectText(page.locator('#tokens-empty'), /^No tokens yet\.$/);
      assert.equal((await asToken('/v1/me/quota')).status, 401, 'revoked at once');
    }],

    ['signs out, and stays signed out after a reload', async () => {
      const out = await answerTo(page, 'POST', '/v1/auth/signout', () =>
        page.getByRole('button', { name: 'Sign out' }).click(),
      );
      assert.equal(out.status(), 204);
      await expectText(ui.authHeading, /^Sign in$/);
      assert.deepEqual(await storedTokens(), [null, null]);
      assert.equal(await refreshCookie(), null, 'the refresh cookie is cleared');
      await page.reload();
      await expectText(ui.authHeading, /^Sign in$/);
      assert.equal(await ui.tasksView.isVisible(), false);
    }],

    ['explains a wrong password, then signs in with the right one', async () => {
      await ui.username.fill(username);
      await ui.password.fill('not the password');
      const refused = await answerTo(page, 'POST', '/v1/auth/signin', () =>
        page.getByRole('button', { name: 'Sign in', exact: true }).click(),
      );
      assert.equal(refused.status(), 401);
      await expectText(ui.message, /^That username and password do not match an account\.$/);
      await ui.password.fill(password);
      await ui.password.press('Enter');
      await expectVisible(ui.tasksView);
      await expectCount(ui.tasks, LIMIT - 1, 'tasks');
      await expectVisible(ui.message, false);
    }],

    ['shows a validation problem’s messages', async () => {
      await ui.newTask.fill('   ');
      const refused = await answerTo(page, 'POST', '/v1/tasks', () => ui.newTask.press('Enter'));
      assert.equal(refused.status(), 422);
      await expectText(ui.message, /Task must not be empty/);
      assert.equal(await ui.newTask.getAttribute('aria-invalid'), 'true');
    }],

    ['shows the API docs under their own policy, which forbids framing', async () => {
      const docs = await context.newPage();
      docs.on('pageerror', (e) => browserErrors.push(`docs uncaught: ${e.message}`));
      docs.on('console', (m) => {
        if (m.type() === 'error') browserErrors.push(`docs: ${m.text()}`);
      });
      try {
        const response = await docs.goto(`${BASE_URL}/docs/`);
        assert.equal(response.status(), 200);
        const csp = response.headers()['content-security-policy'] || '';
        assert.match(csp, /^default-src 'self';/);
        assert.match(csp, /frame-ancestors 'none'/);
        await expectText(docs.locator('.swagger-ui .info .title'), /^quotask/, 'the docs title');
        await expectVisible(docs.locator('.opblock-tag', { hasText: 'accounts' }).first());
      } finally {
        await docs.close();
      }
    }],

    ['logs no errors or policy violations in the browser', async () => {
      assert.deepEqual(browserErrors, []);
    }],
  ];

  try {
    return await runSteps('e2e', steps, { page, message: ui.message, screenshot: SCREENSHOT });
  } finally {
    await browser.close();
  }
}

runMain('e2e', main);
