// The quotask web page: sign up or in, then today's tasks and the daily allowance, and
// the user's personal access tokens; for admins, the admin page (admin.js) at #admin.
// Plain DOM, no build step. Anything that came from a user or the server is written
// with textContent or as an attribute, never parsed as markup.
'use strict';

import { adminPage } from './admin.js';

(() => {
  const ACCESS = 'quotask.access_token';
  /** Where earlier versions of this page kept the refresh token; moved to the cookie. */
  const OLD_REFRESH = 'quotask.refresh_token';
  /**
   * Asks the server for the refresh token as an HttpOnly cookie (sent only to
   * /v1/auth/*) instead of in the answer's body, so no script here ever holds it.
   */
  const REFRESH_AS_COOKIE = { 'X-Refresh-Cookie': '1' };
  /** How a field named in a problem document is called on this page. */
  const FIELD_LABELS = {
    username: 'Username',
    password: 'Password',
    timezone: 'Time zone',
    content: 'Task',
    name: 'Token name',
    scopes: 'Scopes',
    daily_limit: 'Daily limit',
    role: 'Role',
    plan: 'Plan',
    extra: 'Extra tasks',
    from: 'From',
    to: 'To',
    reason: 'Reason',
    q: 'Search',
  };
  /** The input a field named in a problem document is typed into, where its id differs. */
  const FIELD_INPUTS = { content: 'new-task', name: 'token-name' };
  /** What each scope of a personal access token lets it do, in the page's words. */
  const SCOPE_LABELS = {
    'tasks:read': 'read tasks',
    'tasks:write': 'add, change and delete tasks',
    'quota:read': 'read the daily allowance',
    'events:read': 'follow changes live',
  };

  const byId = (id) => document.getElementById(id);
  const ui = {
    account: byId('account'),
    nav: byId('nav'),
    navTasks: byId('nav-tasks'),
    navAdmin: byId('nav-admin'),
    whoName: byId('who-name'),
    signOut: byId('sign-out'),
    message: byId('message'),
    loading: byId('loading'),
    authView: byId('auth-view'),
    authTitle: byId('auth-title'),
    authIntro: byId('auth-intro'),
    authForm: byId('auth-form'),
    username: byId('username'),
    usernameHint: byId('username-hint'),
    password: byId('password'),
    passwordHint: byId('password-hint'),
    timezoneField: byId('timezone-field'),
    timezone: byId('timezone'),
    authSubmit: byId('auth-submit'),
    switchText: byId('switch-text'),
    authSwitch: byId('auth-switch'),
    tasksView: byId('tasks-view'),
    quotaText: byId('quota-text'),
    quotaBar: byId('quota-bar'),
    limitMessage: byId('limit-message'),
    addForm: byId('add-form'),
    newTask: byId('new-task'),
    addButton: byId('add-button'),
    todayDate: byId('today-date'),
    taskList: byId('task-list'),
    empty: byId('empty'),
    tokensPanel: byId('tokens-panel'),
    tokenForm: byId('token-form'),
    tokenName: byId('token-name'),
    tokenOnce: byId('token-once'),
    tokenValue: byId('token-value'),
    tokenCopy: byId('token-copy'),
    tokenList: byId('token-list'),
    tokensEmpty: byId('tokens-empty'),
  };

  /** What the page currently shows. */
  const state = { mode: 'signin', me: null, day: null, resetTimer: 0, tokensLoaded: false };

  /** An answer other than 2xx, with its problem document (or `{}`). */
  class Problem extends Error {
    constructor(status, doc) {
      super(doc.detail || doc.title || `HTTP ${status}`);
      this.status = status;
      this.doc = doc;
    }
  }

  /** The stored session is gone or refused, and refreshing it did not help. */
  class SignedOut extends Error {}

  /** The access token (short-lived) is kept here; the refresh token is the cookie. */
  const tokens = {
    get access() {
      return localStorage.getItem(ACCESS);
    },
    save(pair) {
      localStorage.setItem(ACCESS, pair.access_token);
    },
    clear() {
      localStorage.removeItem(ACCESS);
      localStorage.removeItem(OLD_REFRESH);
    },
  };

  // ---- talking to the API ------------------------------------------------------

  async function send(method, path, body, access, extraHeaders = {}) {
    const headers = { Accept: 'application/json, application/problem+json', ...extraHeaders };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (access) headers.Authorization = `Bearer ${access}`;
    try {
      return await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch {
      throw new Problem(0, { detail: 'The service could not be reached. Check the connection and try again.' });
    }
  }

  async function readJson(res) {
    const text = res.status === 204 ? '' : await res.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  /**
   * Calls the API. With `auth`, a 401 is answered by one refresh of the session and
   * one retry; if that fails too, SignedOut is thrown.
   */
  async function api(method, path, body, { auth = true, headers = {} } = {}) {
    let access = null;
    if (auth) {
      access = tokens.access;
      if (!access) throw new SignedOut();
    }
    let res = await send(method, path, body, access, headers);
    if (auth && res.status === 401) {
      access = await renewedAccess(access);
      if (!access) throw new SignedOut();
      res = await send(method, path, body, access);
      if (res.status === 401) throw new SignedOut();
    }
    const doc = await readJson(res);
    if (!res.ok) throw new Problem(res.status, doc !== null && typeof doc === 'object' ? doc : {});
    return doc;
  }

  let refreshing = null;

  /**
   * An access token to use instead of `stale`, or null if the session is over. Only
   * one refresh runs at a time, in this tab and (where the browser has Web Locks)
   * across tabs, which share the cookie: a refresh token is spent on use, and spending
   * it twice would end the session. If another tab already refreshed, its token is taken.
   */
  function renewedAccess(stale) {
    const current = tokens.access;
    if (current && current !== stale) return Promise.resolve(current);
    if (!refreshing) {
      const renew = () => {
        const latest = tokens.access;
        return latest && latest !== stale ? latest : refreshSession();
      };
      const locked = navigator.locks ? navigator.locks.request('quotask.refresh', renew) : Promise.resolve().then(renew);
      refreshing = locked.finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  /**
   * Spends the refresh cookie for a new pair. A refresh token an earlier version of
   * this page left in localStorage is spent instead, once, and its successor becomes
   * the cookie.
   */
  async function refreshSession() {
    const old = localStorage.getItem(OLD_REFRESH);
    const body = old ? { refresh_token: old } : {};
    const res = await send('POST', '/v1/auth/refresh', body, null, REFRESH_AS_COOKIE);
    if (res.status < 500) localStorage.removeItem(OLD_REFRESH);
    if (res.ok) {
      const pair = await res.json();
      tokens.save(pair);
      return pair.access_token;
    }
    // A refused token ends the session; an outage does not.
    if (res.status >= 500) throw new Problem(res.status, (await readJson(res)) || {});
    return null;
  }

  // ---- messages ----------------------------------------------------------------

  function clearMessage() {
    ui.message.hidden = true;
    ui.message.replaceChildren();
    for (const input of document.querySelectorAll('[aria-invalid="true"]')) input.removeAttribute('aria-invalid');
  }

  /** Shows `lead` and, below it, a list of `lines`; `kind` is "error" or "info". */
  function say(lead, lines = [], kind = 'error') {
    const p = document.createElement('p');
    p.textContent = lead;
    const parts = [p];
    if (lines.length) {
      const ul = document.createElement('ul');
      for (const line of lines) {
        const li = document.createElement('li');
        li.textContent = line;
        ul.append(li);
      }
      parts.push(ul);
    }
    ui.message.replaceChildren(...parts);
    ui.message.dataset.kind = kind;
    ui.message.hidden = false;
  }

  /** Shows a problem document: its field errors if it lists any, else its detail. */
  function sayProblem(problem) {
    const doc = problem.doc || {};
    const errors = Array.isArray(doc.errors) ? doc.errors : [];
    if (errors.length === 0) {
      say(doc.detail || doc.title || `The request failed (HTTP ${problem.status}).`);
      return;
    }
    const lines = errors.map((e) => {
      const label = FIELD_LABELS[e.field] || e.field || '';
      const input = byId(FIELD_INPUTS[e.field] || String(e.field));
      if (input && input.form) input.setAttribute('aria-invalid', 'true');
      return label ? `${label} ${e.message}` : String(e.message);
    });
    say(doc.title ? `${doc.title}:` : 'Please check:', lines);
  }

  /** The one place errors end up: a lost session goes back to sign-in. */
  function fail(err) {
    if (err instanceof SignedOut) {
      tokens.clear();
      showAuth('signin');
      say('Your session has ended. Please sign in again.', [], 'info');
      ui.username.focus();
    } else if (err instanceof Problem) {
      sayProblem(err);
    } else {
      console.error(err);
      say('Something went wrong on this page. Reloading it may help.');
    }
  }

  // ---- formatting --------------------------------------------------------------

  /** `iso` as HH:MM on the clock of `zone`, with the zone actually used. */
  function clockTime(iso, zone) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return { time: '--:--', zone: zone || 'UTC' };
    const format = (timeZone) =>
      new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZone }).format(
        when,
      );
    try {
      return { time: format(zone), zone };
    } catch {
      return { time: format('UTC'), zone: 'UTC' }; // a zone newer than this browser's data
    }
  }

  /** A calendar day `YYYY-MM-DD` in words, in the reader's language. */
  function dayInWords(day) {
    const date = new Date(`${day}T12:00:00Z`);
    if (Number.isNaN(date.getTime())) return day;
    return new Intl.DateTimeFormat(undefined, {
      weekday: 'long',
      day: 'numeric',
      month: 'long',
      timeZone: 'UTC',
    }).format(date);
  }

  /** An instant as a short date and time on this browser's clock. */
  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
  }

  // ---- views -------------------------------------------------------------------

  function showAuth(mode) {
    clearTimeout(state.resetTimer);
    state.day = null;
    state.me = null;
    admin.clear();
    ui.nav.hidden = true;
    document.body.classList.remove('wide');
    ui.taskList.replaceChildren();
    ui.limitMessage.hidden = true;
    ui.loading.hidden = true;
    ui.tasksView.hidden = true;
    ui.account.hidden = true;
    ui.whoName.textContent = '';
    clearTokens();
    setMode(mode);
    ui.authView.hidden = false;
  }

  /** Today's tasks, or the admin page for an admin at #admin. */
  function showTasks() {
    ui.loading.hidden = true;
    ui.authView.hidden = true;
    ui.account.hidden = false;
    route();
  }

  function route() {
    const isAdmin = state.me !== null && state.me.role === 'admin';
    const onAdmin = isAdmin && window.location.hash === '#admin';
    ui.nav.hidden = !isAdmin;
    ui.tasksView.hidden = onAdmin;
    document.body.classList.toggle('wide', onAdmin);
    for (const [link, current] of [
      [ui.navTasks, !onAdmin],
      [ui.navAdmin, onAdmin],
    ]) {
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (onAdmin) admin.show(state.me).catch(fail);
    else admin.hide();
  }

  function setMode(mode) {
    state.mode = mode;
    const signUp = mode === 'signup';
    ui.authTitle.textContent = signUp ? 'Create an account' : 'Sign in';
    ui.authSubmit.textContent = signUp ? 'Create account' : 'Sign in';
    ui.switchText.textContent = signUp ? 'Already have an account?' : 'New here?';
    ui.authSwitch.textContent = signUp ? 'Sign in instead' : 'Create an account';
    ui.timezoneField.hidden = !signUp;
    ui.usernameHint.hidden = !signUp;
    ui.passwordHint.hidden = !signUp;
    ui.password.autocomplete = signUp ? 'new-password' : 'current-password';
    for (const [input, hint, min] of [
      [ui.username, ui.usernameHint, 3],
      [ui.password, ui.passwordHint, 8],
    ]) {
      if (signUp) {
        input.minLength = min;
        input.setAttribute('aria-describedby', hint.id);
      } else {
        input.removeAttribute('minlength');
        input.removeAttribute('aria-describedby');
      }
    }
    if (signUp) fillTimeZones();
  }

  /** The zones this browser knows, the browser's own selected. */
  function fillTimeZones() {
    if (ui.timezone.options.length > 0) return;
    let own = 'UTC';
    try {
      own = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    } catch {
      // keep UTC
    }
    let zones = [];
    try {
      zones = Intl.supportedValuesOf('timeZone');
    } catch {
      // an older browser: offer its own zone and UTC
    }
    const all = [...new Set([...zones, own, 'UTC'])].sort();
    for (const zone of all) ui.timezone.add(new Option(zone.replaceAll('_', ' '), zone));
    ui.timezone.value = own;
  }

  function renderQuota(quota) {
    const reset = clockTime(quota.resets_at, quota.timezone);
    ui.quotaText.textContent = `${quota.remaining} of ${quota.limit} left today, resets at ${reset.time} (${reset.zone})`;
    const usedShare = quota.limit > 0 ? Math.min(1, quota.used / quota.limit) : 1;
    ui.quotaBar.style.width = `${Math.round(usedShare * 100)}%`;
    ui.quotaBar.parentElement.classList.toggle('full', quota.remaining === 0);
    if (quota.remaining > 0) ui.limitMessage.hidden = true;
    scheduleDayChange(quota.resets_at);
  }

  /** At the user's midnight the page moves to the new day by itself. */
  function scheduleDayChange(resetsAt) {
    clearTimeout(state.resetTimer);
    const wait = new Date(resetsAt).getTime() - Date.now() + 1000;
    if (wait > 0 && wait < 2 ** 31 - 1) state.resetTimer = setTimeout(() => loadAll().catch(fail), wait);
  }

  function showLimit(doc) {
    const reset = clockTime(doc.resets_at, doc.timezone);
    const strong = document.createElement('strong');
    strong.textContent = 'Daily limit reached.';
    const rest = ` You have added all ${doc.limit} tasks allowed today. New ones can be added from ${reset.time} (${reset.zone}).`;
    ui.limitMessage.replaceChildren(strong, rest);
    ui.limitMessage.hidden = false;
  }

  function renderTasks(tasks) {
    ui.taskList.replaceChildren(...tasks.map(taskItem));
    updateEmpty();
  }

  function updateEmpty() {
    ui.empty.hidden = ui.taskList.children.length > 0;
  }

  function taskItem(task) {
    const li = document.createElement('li');
    li.className = 'task';
    li.dataset.id = task.id;
    li.classList.toggle('done', task.done);

    const box = document.createElement('input');
    box.type = 'checkbox';
    box.id = `task-${task.id}`;
    box.checked = task.done;

    const label = document.createElement('label');
    label.htmlFor = box.id;
    label.textContent = task.content;

    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'delete';
    remove.textContent = 'Delete';
    const short = task.content.length > 60 ? `${task.content.slice(0, 60)}…` : task.content;
    remove.setAttribute('aria-label', `Delete “${short}”`);

    box.addEventListener('change', () => toggleDone(task, li, box));
    remove.addEventListener('click', () => deleteTask(task, li));
    li.append(box, label, remove);
    return li;
  }

  /** Forgets the tokens panel, above all a token still shown once. */
  function clearTokens() {
    state.tokensLoaded = false;
    ui.tokensPanel.open = false;
    ui.tokenList.replaceChildren();
    ui.tokensEmpty.hidden = true;
    ui.tokenValue.value = '';
    ui.tokenOnce.hidden = true;
  }

  function renderTokens(items) {
    ui.tokenList.replaceChildren(...items.map(tokenItem));
    updateTokensEmpty();
  }

  function updateTokensEmpty() {
    ui.tokensEmpty.hidden = ui.tokenList.children.length > 0;
  }

  function tokenItem(token) {
    const li = document.createElement('li');
    li.className = 'token';
    li.dataset.id = token.id;

    const text = document.createElement('div');
    text.className = 'token-text';
    const name = document.createElement('strong');
    name.textContent = token.name;
    const may = document.createElement('span');
    may.textContent = `May ${token.scopes.map((s) => SCOPE_LABELS[s] || s).join(', ')}.`;
    const meta = document.createElement('span');
    meta.className = 'hint';
    const expired = token.expires_at && new Date(token.expires_at).getTime() <= Date.now();
    meta.textContent = [
      `Created ${when(token.created_at)}`,
      token.last_used_at ? `last used ${when(token.last_used_at)}` : 'never used',
      token.expires_at ? `${expired ? 'expired' : 'expires'} ${when(token.expires_at)}` : 'no expiry',
    ].join(' · ');
    text.append(name, may, meta);

    const revoke = document.createElement('button');
    revoke.type = 'button';
    revoke.className = 'delete';
    revoke.textContent = 'Revoke';
    revoke.setAttribute('aria-label', `Revoke “${token.name}”`);
    revoke.addEventListener('click', () => revokeToken(token, li));

    li.append(text, revoke);
    return li;
  }

  // ---- actions -----------------------------------------------------------------

  /** Loads who is signed in, today's allowance and today's tasks. */
  async function loadAll() {
    const [me, quota] = await Promise.all([api('GET', '/v1/me'), api('GET', '/v1/me/quota')]);
    const tasks = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ day: quota.day, limit: '100' });
      if (cursor) query.set('cursor', cursor);
      const page = await api('GET', `/v1/tasks?${query}`);
      tasks.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && tasks.length < 10000);

    ui.whoName.textContent = me.username;
    state.me = me;
    state.day = quota.day;
    ui.todayDate.textContent = dayInWords(quota.day);
    ui.todayDate.dateTime = quota.day;
    renderQuota(quota);
    renderTasks(tasks);
    showTasks();
  }

  async function refreshQuota() {
    const quota = await api('GET', '/v1/me/quota');
    if (quota.day !== state.day) await loadAll();
    else renderQuota(quota);
  }

  /** Marks a form as working, so a second Enter or click does not send twice. */
  async function busy(form, work) {
    if (form.getAttribute('aria-busy') === 'true') return;
    form.setAttribute('aria-busy', 'true');
    try {
      await work();
    } finally {
      form.removeAttribute('aria-busy');
    }
  }

  async function submitAuth(event) {
    event.preventDefault();
    await busy(ui.authForm, async () => {
      clearMessage();
      const username = ui.username.value.trim();
      const password = ui.password.value;
      try {
        if (state.mode === 'signup') {
          await api('POST', '/v1/auth/signup', { username, password, timezone: ui.timezone.value }, { auth: false });
          setMode('signin'); // the account exists now, whatever happens next
        }
        const pair = await api(
          'POST',
          '/v1/auth/signin',
          { username, password },
          { auth: false, headers: REFRESH_AS_COOKIE },
        );
        tokens.save(pair);
        ui.password.value = '';
        await loadAll();
        ui.newTask.focus();
      } catch (err) {
        if (err instanceof Problem && err.status === 401) {
          say('That username and password do not match an account.');
          ui.password.focus();
        } else {
          fail(err);
        }
      }
    });
  }

  async function addTask(event) {
    event.preventDefault();
    await busy(ui.addForm, async () => {
      clearMessage();
      try {
        const task = await api('POST', '/v1/tasks', { content: ui.newTask.value });
        ui.newTask.value = '';
        if (task.day === state.day) {
          ui.taskList.prepend(taskItem(task));
          updateEmpty();
          await refreshQuota();
        } else {
          await loadAll(); // midnight passed while the page was open
        }
      } catch (err) {
        const type = err instanceof Problem ? String(err.doc.type || '') : '';
        if (err.status === 429 && type.endsWith('/quota-exceeded')) {
          showLimit(err.doc);
          await refreshQuota().catch(fail);
        } else {
          fail(err);
        }
      }
      ui.newTask.focus();
    });
  }

  async function toggleDone(task, li, box) {
    // Not disabled while saving: that would throw the keyboard focus away.
    if (li.getAttribute('aria-busy') === 'true') {
      box.checked = task.done;
      return;
    }
    clearMessage();
    li.setAttribute('aria-busy', 'true');
    try {
      const saved = await api('PATCH', `/v1/tasks/${encodeURIComponent(task.id)}`, { done: box.checked });
      task.done = saved.done;
    } catch (err) {
      fail(err);
    } finally {
      box.checked = task.done;
      li.classList.toggle('done', task.done);
      li.removeAttribute('aria-busy');
    }
  }

  async function deleteTask(task, li) {
    if (li.getAttribute('aria-busy') === 'true') return;
    clearMessage();
    li.setAttribute('aria-busy', 'true');
    try {
      await api('DELETE', `/v1/tasks/${encodeURIComponent(task.id)}`);
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      updateEmpty();
      (next ? next.querySelector('input') : ui.newTask).focus();
    } catch (err) {
      li.removeAttribute('aria-busy');
      if (err instanceof Problem && err.status === 404) {
        li.remove(); // already gone, e.g. deleted in another tab
        updateEmpty();
      } else {
        fail(err);
      }
    }
  }

  async function loadTokens() {
    const page = await api('GET', '/v1/me/tokens');
    renderTokens(page.items);
    state.tokensLoaded = true;
  }

  async function createToken(event) {
    event.preventDefault();
    await busy(ui.tokenForm, async () => {
      clearMessage();
      const scopes = [...ui.tokenForm.querySelectorAll('input[name="scope"]:checked')].map((box) => box.value);
      if (scopes.length === 0) {
        say('Tick at least one thing the token may do.');
        return;
      }
      try {
        const created = await api('POST', '/v1/me/tokens', { name: ui.tokenName.value, scopes });
        ui.tokenValue.value = created.token;
        ui.tokenCopy.textContent = 'Copy';
        ui.tokenOnce.hidden = false;
        ui.tokenName.value = '';
        ui.tokenList.append(tokenItem(created));
        updateTokensEmpty();
        ui.tokenValue.focus();
        ui.tokenValue.select();
      } catch (err) {
        fail(err);
        ui.message.scrollIntoView({ block: 'nearest' });
      }
    });
  }

  async function copyToken() {
    try {
      await navigator.clipboard.writeText(ui.tokenValue.value);
      ui.tokenCopy.textContent = 'Copied';
    } catch {
      // No clipboard access (an insecure origin, a refused permission): select it instead.
      ui.tokenValue.focus();
      ui.tokenValue.select();
      say('Select the token and copy it yourself; this browser did not let the page do it.', [], 'info');
    }
  }

  async function revokeToken(token, li) {
    if (li.getAttribute('aria-busy') === 'true') return;
    clearMessage();
    li.setAttribute('aria-busy', 'true');
    try {
      await api('DELETE', `/v1/me/tokens/${encodeURIComponent(token.id)}`);
      li.remove();
    } catch (err) {
      li.removeAttribute('aria-busy');
      if (err instanceof Problem && err.status === 404) li.remove(); // already revoked elsewhere
      else fail(err);
    }
    updateTokensEmpty();
  }

  async function signOut() {
    try {
      await api('POST', '/v1/auth/signout');
    } catch (err) {
      // Signed out here all the same; a lost session needs no telling.
      if (!(err instanceof SignedOut)) console.warn('sign-out was not confirmed', err);
    }
    tokens.clear();
    showAuth('signin');
    clearMessage();
    say('You are signed out.', [], 'info');
    ui.username.focus();
  }

  // ---- wiring ------------------------------------------------------------------

  const admin = adminPage({ api, fail, clearMessage, busy, when, Problem });

  ui.authForm.addEventListener('submit', submitAuth);
  ui.addForm.addEventListener('submit', addTask);
  ui.signOut.addEventListener('click', signOut);
  ui.tokenForm.addEventListener('submit', createToken);
  ui.tokenCopy.addEventListener('click', copyToken);
  ui.tokensPanel.addEventListener('toggle', () => {
    if (ui.tokensPanel.open && !state.tokensLoaded) loadTokens().catch(fail);
  });
  ui.authSwitch.addEventListener('click', () => {
    clearMessage();
    setMode(state.mode === 'signin' ? 'signup' : 'signin');
    ui.username.focus();
  });

  window.addEventListener('hashchange', () => {
    if (!state.me) return;
    clearMessage();
    route();
    (ui.tasksView.hidden ? byId('admin-title') : ui.newTask).focus();
  });

  // Back on the page after a while: the day may have turned.
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.day) refreshQuota().catch(fail);
  });

  // Signed out (or in) in another tab.
  window.addEventListener('storage', (event) => {
    if (event.key !== ACCESS) return;
    if (!event.newValue && state.day) showAuth('signin');
    else if (event.newValue && !state.day) loadAll().catch(fail);
  });

  if (tokens.access) {
    loadAll().catch(fail);
  } else {
    showAuth('signin');
  }
})();
