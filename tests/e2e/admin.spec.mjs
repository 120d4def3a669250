// End-to-end test of the admin page (`/#admin`) in a real headless Chromium: an admin
// finds users by name, pages through them, changes a limit and a role and sees the
// audit trail; a user who is not an admin never sees the page. Plans and boosts are
// tried when the server has them. Plain node, no test runner.
//
//   QUOTASK_E2E_BASE_URL         the running server (required)
//   QUOTASK_E2E_ADMIN            an admin's name, made with `quotask user create NAME --admin`
//   QUOTASK_E2E_ADMIN_PASSWORD   that admin's password
//   QUOTASK_E2E_DAILY_LIMIT      the server's QUOTASK_DEFAULT_DAILY_LIMIT (default 3)
//   QUOTASK_E2E_ADMIN_SCREENSHOT where to save the screenshot (default ./admin-screenshot.png)
//   QUOTASK_E2E_EXPECT_PLANS     1: fail, rather than skip those steps, if the server has no plans
//
// Run it on a fresh database, before other tests add users: the screenshot shows the
// users it makes. Exits 0 when every step passed; .ci/e2e.sh runs it.

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
const ADMIN = process.env.QUOTASK_E2E_ADMIN;
const ADMIN_PASSWORD = process.env.QUOTASK_E2E_ADMIN_PASSWORD;
const LIMIT = Number(process.env.QUOTASK_E2E_DAILY_LIMIT || 3);
const SCREENSHOT = process.env.QUOTASK_E2E_ADMIN_SCREENSHOT || 'admin-screenshot.png';
const DESKTOP = { width: 1100, height: 900 };
/** Users a page of the admin list shows (admin.js `PAGE_SIZE`). */
const PAGE_SIZE = 20;

if (!BASE_URL || !ADMIN || !ADMIN_PASSWORD) {
  console.error('QUOTASK_E2E_BASE_URL, QUOTASK_E2E_ADMIN and QUOTASK_E2E_ADMIN_PASSWORD must be set');
  process.exit(2);
}

const PASSWORD = 'a garden of tidy lists';
/** name, zone, own limit (or null: the default), tasks made today. */
const PEOPLE = [
  ['mai', 'Asia/Ho_Chi_Minh', 20, 14],
  ['linh.tran', 'Asia/Ho_Chi_Minh', null, LIMIT],
  ['oskar', 'Europe/Stockholm', null, 1],
  ['amara.o', 'Africa/Lagos', 50, 31],
  ['kenji', 'Asia/Tokyo', null, 2],
  ['sofia.r', 'Europe/Madrid', null, 2],
  ['ana.lima', 'America/Sao_Paulo', null, 0],
  ['tomasz', 'Europe/Warsaw', null, 0],
  ['priya', 'Asia/Kolkata', 10, 10],
  ['lucas.m', 'America/Toronto', null, 1],
  ['fatima', 'Africa/Casablanca', null, 0],
  ['jonas', 'Europe/Berlin', 8, 5],
  ['chen.wei', 'Asia/Shanghai', null, LIMIT],
  ['ines', 'Europe/Lisbon', null, 1],
  ['mateo', 'America/Bogota', null, 0],
  ['noor', 'Asia/Dubai', null, 2],
  ['emma.k', 'Europe/London', null, 0],
  ['kwame', 'Africa/Accra', null, 1],
  ['yuki', 'Asia/Tokyo', null, 0],
  ['olivia', 'Australia/Sydney', 12, 7],
  ['rafael', 'America/Mexico_City', null, 0],
  ['zeynep', 'Europe/Istanbul', null, 2],
  ['arjun', 'Asia/Kolkata', null, 0],
];
/** Plans the seed makes when the server has them: name, daily limit, adapt. */
const PLANS = [
  ['free', LIMIT, null],
  ['team', 25, { step: 5, after_days_at_limit: 3, max: 50, after_idle_days: 7, min: 10 }],
  ['pro', 100, null],
];
/** Who is on which plan, when the server has plans. */
const ON_PLANS = [['mai', 'team'], ['linh.tran', 'free'], ['amara.o', 'pro'], ['chen.wei', 'team'], ['noor', 'free']];
const ERRANDS = ['Reply to the supplier', 'Book the dentist', 'Renew the parking permit', 'Plan the team offsite'];

/** Calls the API as `token` (or nobody) from node, outside the browser. */
async function call(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${BASE_URL}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function signIn(username, password) {
  const res = await call('POST', '/v1/auth/signin', { username, password });
  assert.equal(res.status, 200, `sign-in of ${username}`);
  return res.body.access_token;
}

async function main() {
  const adminToken = await signIn(ADMIN, ADMIN_PASSWORD);
  // Plans and boosts are tried only where the server has them (as the page decides).
  const hasPlans = (await call('GET', '/v1/admin/plans', undefined, adminToken)).status === 200;
  if (process.env.QUOTASK_E2E_EXPECT_PLANS === '1') assert.ok(hasPlans, 'the server has plans');
  const browser = await launch(SCREENSHOT);
  const context = await browser.newContext({ viewport: DESKTOP, timezoneId: 'Europe/Lisbon', locale: 'en-GB' });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const browserErrors = [];
  watchErrors(page, browserErrors);

  const ui = {
    username: page.getByLabel('Username'),
    password: page.getByLabel('Password'),
    message: page.locator('#message'),
    tasksView: page.locator('#tasks-view'),
    adminView: page.locator('#admin-view'),
    nav: page.locator('#nav'),
    adminLink: page.getByRole('link', { name: 'Admin', exact: true }),
    search: page.getByLabel('Search users by name'),
    rows: page.locator('#user-rows > tr'),
    names: page.locator('#user-rows .name'),
    pageText: page.locator('#users-page'),
    next: page.getByRole('button', { name: 'Next', exact: true }),
    prev: page.getByRole('button', { name: 'Previous', exact: true }),
    detail: page.locator('#user-detail'),
    detailTitle: page.locator('#detail-title'),
    limit: page.getByLabel('Own daily limit'),
    role: page.getByLabel('Role', { exact: true }),
    save: page.getByRole('button', { name: 'Save changes' }),
    saved: page.locator('#user-saved'),
    audit: page.locator('#audit-rows > tr'),
    plans: page.locator('#plans'),
    row: (name) => page.locator('#user-rows > tr').filter({ has: page.getByText(name, { exact: true }) }),
    manage: (name) => page.getByRole('button', { name: `Manage ${name}`, exact: true }),
  };
  const names = async () => (await ui.names.allTextContents()).map((t) => t.trim());

  async function signInHere(username, password) {
    await expectVisible(ui.username);
    await ui.username.fill(username);
    await ui.password.fill(password);
    await ui.password.press('Enter');
    await expectText(page.locator('#who-name'), new RegExp(`^${escape(username)}$`));
  }

  async function search(text) {
    await ui.search.fill(text);
    return answerTo(page, 'GET', '/v1/admin/users', () => ui.search.press('Enter'));
  }

  const steps = [
    ['makes users with their own zones, limits and use of today through the API', async () => {
      for (const [name, timezone, limit, used] of PEOPLE) {
        const made = await call('POST', '/v1/auth/signup', { username: name, password: PASSWORD, timezone });
        assert.equal(made.status, 201, `sign-up of ${name}: ${JSON.stringify(made.body)}`);
        if (limit !== null) {
          const set = await call('PATCH', `/v1/admin/users/${made.body.id}`, { daily_limit: limit }, adminToken);
          assert.equal(set.status, 200);
        }
        if (used > 0) {
          const token = await signIn(name, PASSWORD);
          for (let i = 0; i < used; i += 1) {
            const task = await call('POST', '/v1/tasks', { content: ERRANDS[i % ERRANDS.length] }, token);
            assert.equal(task.status, 201, `task ${i + 1} of ${name}`);
          }
        }
      }
    }],

    ...(hasPlans ? [['makes plans, puts users on them and gives one a boost, through the API', async () => {
      for (const [name, dailyLimit, adapt] of PLANS) {
        const made = await call('POST', '/v1/admin/plans', { name, daily_limit: dailyLimit, ...(adapt ? { adapt } : {}) }, adminToken);
        assert.equal(made.status, 201, `plan ${name}: ${JSON.stringify(made.body)}`);
      }
      const everyone = (await call('GET', '/v1/admin/users?limit=100', undefined, adminToken)).body.items;
      const idOf = (name) => everyone.find((u) => u.username === name).id;
      for (const [name, plan] of ON_PLANS) {
        const set = await call('PATCH', `/v1/admin/users/${idOf(name)}`, { plan }, adminToken);
        assert.equal(set.status, 200, `${name} on ${plan}: ${JSON.stringify(set.body)}`);
      }
      const today = new Intl.DateTimeFormat('en-CA', { timeZone: 'Asia/Ho_Chi_Minh' }).format(new Date());
      const boost = { extra: 5, from: today, to: today, reason: 'Moving house this week' };
      const granted = await call('POST', `/v1/admin/users/${idOf('mai')}/boosts`, boost, adminToken);
      assert.equal(granted.status, 201, JSON.stringify(granted.body));
    }]] : []),

    ['shows a user who is not an admin no admin page, even at #admin, and the API refuses them', async () => {
      await page.goto(`${BASE_URL}/#admin`);
      await signInHere('oskar', PASSWORD);
      await expectVisible(ui.tasksView);
      assert.equal(await ui.adminView.isVisible(), false);
      assert.equal(await ui.nav.isVisible(), false, 'no admin link');
      const token = await page.evaluate(() => localStorage.getItem('quotask.access_token'));
      assert.equal((await call('GET', '/v1/admin/users', undefined, token)).status, 403);
      await page.getByRole('button', { name: 'Sign out' }).click();
      await expectVisible(ui.username);
    }],

    ['shows an admin the Admin link, and the users with today’s use against their limit', async () => {
      await page.goto(BASE_URL);
      await signInHere(ADMIN, ADMIN_PASSWORD);
      await expectVisible(ui.tasksView);
      const listed = await answerTo(page, 'GET', '/v1/admin/users', () => ui.adminLink.click());
      assert.equal(listed.status(), 200);
      await expectVisible(ui.adminView);
      assert.equal(await ui.tasksView.isVisible(), false);
      assert.equal(await ui.adminLink.getAttribute('aria-current'), 'page');
      await expectCount(ui.rows, PAGE_SIZE, 'users on the first page');
      assert.deepEqual((await names()).slice(0, 3), [ADMIN, 'mai', 'linh.tran'], 'in the order they signed up');
      await expectText(ui.row('mai').locator('.use-text'), /^14 of 20$/);
      await expectText(ui.row('linh.tran').locator('.use-text'), new RegExp(`^${LIMIT} of ${LIMIT}$`));
      assert.match(await ui.row('linh.tran').locator('.meter').getAttribute('class'), /\bfull\b/);
      await expectText(ui.row('tomasz').locator('.use-text'), new RegExp(`^0 of ${LIMIT}$`));
      await expectText(ui.row('mai').locator('.hint'), /^Asia\/Ho_Chi_Minh$/);
      await expectText(ui.row(ADMIN).locator('td').first(), /^Admin$/);
    }],

    ['pages through the users and back', async () => {
      assert.equal(await ui.prev.isDisabled(), true);
      await expectText(ui.pageText, /^Page 1$/);
      const next = await answerTo(page, 'GET', '/v1/admin/users', () => ui.next.click());
      assert.match(new URL(next.url()).search, /cursor=/);
      await expectCount(ui.rows, PEOPLE.length + 1 - PAGE_SIZE, 'users on the second page');
      await expectText(ui.pageText, /^Page 2$/);
      assert.deepEqual(await names(), PEOPLE.slice(PAGE_SIZE - 1).map(([name]) => name));
      assert.equal(await ui.next.isDisabled(), true);
      await answerTo(page, 'GET', '/v1/admin/users', () => ui.prev.click());
      await expectCount(ui.rows, PAGE_SIZE, 'users on the first page');
      await expectText(ui.pageText, /^Page 1$/);
    }],

    ['finds users whose name contains the search, case aside, and shows markup typed there as text', async () => {
      const found = await search('LI');
      assert.equal(new URL(found.url()).searchParams.get('q'), 'LI');
      await eventuallyNames(['linh.tran', 'ana.lima', 'olivia']);
      assert.equal(await ui.next.isDisabled(), true);
      const markup = '<img src=x alt=injected>';
      await search(markup);
      await expectCount(ui.rows, 0, 'users');
      await expectText(page.locator('#users-empty'), new RegExp(`^No user’s name contains “${escape(markup)}”\\.$`));
      assert.equal(await ui.adminView.locator('img').count(), 0, 'no markup was parsed');
      await search('');
      await expectCount(ui.rows, PAGE_SIZE, 'users');
    }],

    ['changes a limit and a role, and the audit trail shows both by whom', async () => {
      await answerTo(page, 'GET', '/v1/admin/users/', () => ui.manage('kenji').click());
      await expectVisible(ui.detail);
      await expectText(ui.detailTitle, /^kenji$/);
      await expectText(page.locator('#detail-summary'), new RegExp(`^Asia/Tokyo · joined .+ · 2 of ${LIMIT} used today( \\(default\\))?$`));
      // With plans, a limit no admin set is the default, not the user's own: the field is empty.
      assert.equal(await ui.limit.inputValue(), hasPlans ? '' : String(LIMIT));
      await expectCount(ui.audit, 0, 'audit entries');
      await expectVisible(page.locator('#audit-empty'));
      await ui.limit.fill('10');
      await ui.role.selectOption('admin');
      const saved = await answerTo(page, 'PATCH', '/v1/admin/users/', () => ui.save.click());
      assert.equal(saved.status(), 200);
      assert.deepEqual(saved.request().postDataJSON(), { daily_limit: 10, role: 'admin' });
      await expectText(ui.saved, /^Saved: daily limit 10, role Admin\.$/);
      await expectText(ui.row('kenji').locator('.use-text'), /^2 of 10$/);
      await expectText(ui.row('kenji').locator('td').first(), /^Admin$/);
      await expectCount(ui.audit, 2, 'audit entries');
      const cells = async (i) => (await ui.audit.nth(i).locator('td').allTextContents()).slice(1);
      assert.deepEqual(await cells(0), [`${ADMIN} (you)`, `Daily limit: ${LIMIT} → 10`]);
      assert.deepEqual(await cells(1), [`${ADMIN} (you)`, 'Role: User → Admin']);
      const stored = await call('GET', '/v1/admin/users?q=kenji', undefined, adminToken);
      assert.equal(stored.body.items[0].daily_limit, 10);
      assert.equal(stored.body.items[0].role, 'admin');
    }],

    ['says when nothing changed, and offers no way to drop one’s own admin role', async () => {
      await ui.save.click();
      await expectText(ui.saved, /^Nothing to change\.$/);
      await answerTo(page, 'GET', '/v1/admin/users/', () => ui.manage(ADMIN).click());
      await expectText(ui.detailTitle, new RegExp(`^${escape(ADMIN)}$`));
      assert.equal(await ui.role.isDisabled(), true);
      await expectVisible(page.locator('#user-role-hint'));
    }],

    ...(hasPlans ? planSteps() : [['hides plans and boosts, which this server does not have', async () => {
      assert.equal(await ui.plans.isVisible(), false);
      assert.equal(await page.locator('#boosts').isVisible(), false);
      assert.equal(await page.getByLabel('Plan', { exact: true }).isVisible(), false);
      assert.equal(await page.locator('th.plan-only').isVisible(), false);
    }]]),

    ['fits a phone screen without sideways scrolling', async () => {
      await page.setViewportSize({ width: 360, height: 740 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
      await page.setViewportSize(DESKTOP);
    }],

    ['saves a screenshot of a user’s details under the list', async () => {
      await answerTo(page, 'GET', '/v1/admin/users/', () => ui.manage('mai').click());
      await expectText(ui.detailTitle, /^mai$/);
      // Her limit, and with plans her plan and her boost.
      await expectCount(ui.audit, hasPlans ? 3 : 1, 'audit entries');
      await page.locator('body').click({ position: { x: 5, y: 5 } }); // no focus ring in the picture
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    }],

    ['goes back to the tasks by the Tasks link', async () => {
      await page.getByRole('link', { name: 'Tasks', exact: true }).click();
      await expectVisible(ui.tasksView);
      assert.equal(await ui.adminView.isVisible(), false);
    }],

    ['logs no errors or policy violations in the browser', async () => {
      assert.deepEqual(browserErrors, []);
    }],
  ];

  /** The steps on plans and boosts, for a server that has them. */
  function planSteps() {
    const planRows = page.locator('#plan-rows > tr');
    const planRow = (name) => planRows.filter({ has: page.getByText(name, { exact: true }) });
    const boosts = page.locator('#boost-list > li');
    return [
      ['lists the plans with their rules, makes one and changes it', async () => {
        await expectVisible(ui.plans);
        await expectCount(planRows, PLANS.length, 'plans');
        await expectText(planRow('team').locator('td').nth(1), /^\+5 after 3 days at the limit, up to 50; −5 after 7 idle days, down to 10$/);
        await expectText(ui.row('linh.tran').locator('td').nth(1), /^free$/);
        await page.getByLabel('Name', { exact: true }).fill('family');
        await page.getByLabel('Daily limit', { exact: true }).fill('15');
        const made = await answerTo(page, 'POST', '/v1/admin/plans', () =>
          page.getByRole('button', { name: 'Create plan' }).click(),
        );
        assert.equal(made.status(), 201);
        await expectCount(planRows, PLANS.length + 1, 'plans');
        await expectText(planRow('family').locator('td').first(), /^15$/);
        await page.getByRole('button', { name: 'Edit plan family' }).click();
        await page.getByLabel('Daily limit', { exact: true }).fill('20');
        const changed = await answerTo(page, 'PATCH', '/v1/admin/plans/family', () =>
          page.getByRole('button', { name: 'Save plan' }).click(),
        );
        assert.equal(changed.status(), 200);
        await expectText(planRow('family').locator('td').first(), /^20$/);
      }],

      ['puts a user on a plan, whose limit then applies, and drops another’s own limit', async () => {
        await answerTo(page, 'GET', '/v1/admin/users/', () => ui.manage('tomasz').click());
        await page.getByLabel('Plan', { exact: true }).selectOption('family');
        const saved = await answerTo(page, 'PATCH', '/v1/admin/users/', () => ui.save.click());
        assert.equal(saved.status(), 200);
        assert.deepEqual(saved.request().postDataJSON(), { plan: 'family' });
        await expectText(ui.row('tomasz').locator('.use-text'), /^0 of 20$/);
        await expectText(ui.audit.last().locator('td').last(), /^Plan: none → family$/);

        await answerTo(page, 'GET', '/v1/admin/users/', () => ui.manage('jonas').click());
        assert.equal(await ui.limit.inputValue(), '8');
        await ui.limit.fill('');
        await page.getByLabel('Plan', { exact: true }).selectOption('team');
        const dropped = await answerTo(page, 'PATCH', '/v1/admin/users/', () => ui.save.click());
        assert.equal(dropped.status(), 200);
        assert.deepEqual(dropped.request().postDataJSON(), { daily_limit: null, plan: 'team' });
        await expectText(ui.row('jonas').locator('.use-text'), /^5 of 25$/);
      }],

      ['grants a boost, shows its reason as text, and takes it back', async () => {
        await answerTo(page, 'GET', '/v1/admin/users/', () => ui.manage('priya').click());
        await expectText(ui.row('priya').locator('.use-text'), /^10 of 10$/);
        const markup = '<b>Quarter-end</b> <img src=x alt=injected>';
        await page.getByLabel('Extra tasks a day').fill('5');
        await page.getByLabel('Reason').fill(markup);
        const granted = await answerTo(page, 'POST', '/v1/admin/users/', () =>
          page.getByRole('button', { name: 'Grant boost' }).click(),
        );
        assert.equal(granted.status(), 201);
        await expectCount(boosts, 1, 'boosts');
        await expectText(boosts.first().locator('.hint'), new RegExp(`^${escape(markup)}$`));
        assert.equal(await page.locator('#boost-list b, #boost-list img').count(), 0, 'no markup was parsed');
        await expectText(page.locator('#detail-summary'), /· 10 of 15 used today \(own limit 10 \+ 5 boost\)$/);
        const taken = await answerTo(page, 'DELETE', '/v1/admin/users/', () =>
          page.getByRole('button', { name: `Take back the boost “${markup}”` }).click(),
        );
        assert.equal(taken.status(), 204);
        await expectCount(boosts, 0, 'boosts');
        await expectText(page.locator('#detail-summary'), /· 10 of 10 used today \(own limit\)$/);
      }],
    ];
  }

  async function eventuallyNames(expected) {
    await expectCount(ui.rows, expected.length, 'users');
    assert.deepEqual(await names(), expected);
  }

  try {
    return await runSteps('e2e admin', steps, { page, message: ui.message, screenshot: SCREENSHOT });
  } finally {
    await browser.close();
  }
}

runMain('e2e admin', main);
