// The admin page, at #admin for users with the role admin: users with what they used
// today against their limit, found by name and paged; one user's own limit, role, plan
// and boosts, and the audit trail of every change to them; the plans and their rules.
// Plans and boosts show only when the server has them (GET /v1/admin/plans answers).
// As in app.js: anything from a user or the server is written with textContent or as an
// attribute, never parsed as markup.
'use strict';

/** Users a page of the list shows. */
const PAGE_SIZE = 20;
/** Audit entries fetched at a time. */
const AUDIT_PAGE = 50;
/** How an audited field is called on this page. */
const FIELD_NAMES = {
  daily_limit: 'Daily limit',
  role: 'Role',
  plan: 'Plan',
  boost: 'Boost',
  adapted_limit: 'Adapted limit',
};
/** Audited fields that only the server itself changes (a plan's rule adapting a limit). */
const SYSTEM_FIELDS = new Set(['adapted_limit']);
const ROLE_NAMES = { user: 'User', admin: 'Admin' };
/** The rules of a plan that adapts, in the order the form asks for them. */
const ADAPT_FIELDS = ['step', 'after_days_at_limit', 'max', 'after_idle_days', 'min'];

/**
 * Builds the admin page on the elements of index.html. `page` is what app.js shares:
 * the API caller, its error types and its message area. Returns what app.js calls.
 */
export function adminPage({ api, fail, clearMessage, busy, when, Problem }) {
  const byId = (id) => document.getElementById(id);
  const ui = {
    view: byId('admin-view'),
    search: byId('user-search'),
    q: byId('user-q'),
    userRows: byId('user-rows'),
    usersEmpty: byId('users-empty'),
    prev: byId('users-prev'),
    next: byId('users-next'),
    pageText: byId('users-page'),
    todayHead: byId('today-head'),
    detail: byId('user-detail'),
    detailTitle: byId('detail-title'),
    detailSummary: byId('detail-summary'),
    userForm: byId('user-form'),
    limit: byId('user-limit'),
    limitHint: byId('user-limit-hint'),
    plan: byId('user-plan'),
    role: byId('user-role'),
    roleHint: byId('user-role-hint'),
    saved: byId('user-saved'),
    boostList: byId('boost-list'),
    boostsEmpty: byId('boosts-empty'),
    boostForm: byId('boost-form'),
    boostExtra: byId('boost-extra'),
    boostFrom: byId('boost-from'),
    boostTo: byId('boost-to'),
    boostReason: byId('boost-reason'),
    auditRows: byId('audit-rows'),
    auditEmpty: byId('audit-empty'),
    auditMore: byId('audit-more'),
    planRows: byId('plan-rows'),
    plansEmpty: byId('plans-empty'),
    planForm: byId('plan-form'),
    planFormTitle: byId('plan-form-title'),
    planName: byId('plan-name'),
    planLimit: byId('plan-limit'),
    planAdapt: byId('plan-adapt'),
    adaptFields: byId('adapt-fields'),
    planSave: byId('plan-save'),
    planCancel: byId('plan-cancel'),
  };
  const adaptInputs = Object.fromEntries(ADAPT_FIELDS.map((f) => [f, ui.adaptFields.querySelector(`[name="${f}"]`)]));

  const fresh = () => ({
    me: null,
    /** The plans, or false when the server has none (no plan routes), null before asking. */
    plans: null,
    /** Whether the server lists a user's boosts (it may only grant and take them back). */
    listsBoosts: true,
    q: '',
    /** The cursor of each page up to the one shown; null is the first page. */
    cursors: [null],
    nextCursor: null,
    /** The users on the page shown. */
    rows: [],
    /** Every user seen, by id: who an audit entry's actor is. */
    names: new Map(),
    /** The user whose details are open. */
    selected: null,
    auditCursor: null,
    /** Today's extra from the open user's boosts, once listed. */
    boostToday: undefined,
    /** The plan being edited, or null for a new one. */
    editing: null,
    /** Bumped by every list request, so that only the latest is shown. */
    ticket: 0,
  });
  let state = fresh();

  // ---- reading the answers -----------------------------------------------------

  const isCount = (n) => Number.isInteger(n) && n >= 0;
  const items = (doc) => (Array.isArray(doc) ? doc : doc && Array.isArray(doc.items) ? doc.items : []);
  const hasPlans = () => Array.isArray(state.plans);

  /** The user's own limit, or null when they follow their plan or the default. */
  function ownLimit(user) {
    if (user.limit_source !== undefined && user.limit_source !== 'user') return null;
    return isCount(user.daily_limit) ? user.daily_limit : null;
  }

  /**
   * The user's limit today, or null if not known: `daily_limit` is the limit in force
   * before boosts (the user's own, else their plan's, else the default), and `boost`
   * today's extra from boosts, where known.
   */
  function limitToday(user, boost = user.boost) {
    if (!isCount(user.daily_limit)) return null;
    return user.daily_limit + (isCount(boost) ? boost : 0);
  }

  /** Where the user's limit comes from, in words; empty where the server does not say. */
  function sourceWords(user) {
    switch (user.limit_source) {
      case 'user':
        return 'own limit';
      case 'plan':
        return `plan ${user.plan}`;
      case 'adapted':
        return `adapted on plan ${user.plan}`;
      case 'default':
        return 'default';
      default:
        return '';
    }
  }

  /** "14 of 25 used today (own limit 20 + 5 boost)", with what is known. */
  function useWords(user, boostToday) {
    const boost = boostToday === undefined ? user.boost : boostToday;
    const used = isCount(user.used) ? user.used : 0;
    const limit = limitToday(user, boost);
    if (limit === null) return `${used} used today`;
    const source = sourceWords(user);
    const extra = isCount(boost) && boost > 0 ? boost : 0;
    let why = source;
    if (extra) why = `${source || 'limit'} ${user.daily_limit} + ${extra} boost`;
    return `${used} of ${limit} used today${why ? ` (${why})` : ''}`;
  }

  /** The extra units of `boosts` on the local day `day` (YYYY-MM-DD). */
  function boostOn(boosts, day) {
    return boosts.filter((b) => b.from <= day && day <= b.to).reduce((sum, b) => sum + (isCount(b.extra) ? b.extra : 0), 0);
  }

  /** Today's date (YYYY-MM-DD) in `zone`. */
  function localToday(zone) {
    try {
      return new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' })
        .format(new Date());
    } catch {
      return new Date().toISOString().slice(0, 10);
    }
  }

  /** An instant as a short date and time on this browser's clock, the year only if not this one. */
  function shortWhen(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    const thisYear = date.getFullYear() === new Date().getFullYear();
    const parts = { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    if (!thisYear) parts.year = 'numeric';
    return new Intl.DateTimeFormat(undefined, parts).format(date);
  }

  /** An instant as a date on this browser's calendar. */
  function dayOf(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' }).format(date);
  }

  function cell(text, tag = 'td') {
    const td = document.createElement(tag);
    td.textContent = text;
    return td;
  }

  function button(text, label, onClick, className = 'quiet') {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = className;
    b.textContent = text;
    if (label) b.setAttribute('aria-label', label);
    b.addEventListener('click', onClick);
    return b;
  }

  /** A failed request: its problem where the reader is looking, then the page's message. */
  function failHere(err) {
    fail(err);
    byId('message').scrollIntoView({ block: 'nearest' });
  }

  // ---- users -------------------------------------------------------------------

  async function loadUsers() {
    const ticket = ++state.ticket;
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) query.set('cursor', cursor);
    if (state.q) query.set('q', state.q);
    const page = await api('GET', `/v1/admin/users?${query}`);
    if (ticket !== state.ticket) return; // a later search or page is on its way
    state.rows = items(page);
    state.nextCursor = page.next_cursor || null;
    for (const user of state.rows) state.names.set(user.id, user.username);
    if (state.selected) {
      const shown = state.rows.find((u) => u.id === state.selected.id);
      if (shown) state.selected = shown;
    }
    renderUsers();
  }

  function renderUsers() {
    ui.userRows.replaceChildren(...state.rows.map(userRow));
    ui.usersEmpty.hidden = state.rows.length > 0;
    ui.usersEmpty.textContent = state.q ? `No user’s name contains “${state.q}”.` : 'No users yet.';
    const number = state.cursors.length;
    ui.prev.disabled = number === 1;
    ui.next.disabled = !state.nextCursor;
    ui.pageText.textContent = state.rows.length ? `Page ${number}` : '';
  }

  function userRow(user) {
    const tr = document.createElement('tr');
    tr.dataset.id = user.id;
    if (state.selected && state.selected.id === user.id) tr.classList.add('selected');

    const who = document.createElement('th');
    who.scope = 'row';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = user.username;
    const zone = document.createElement('span');
    zone.className = 'hint';
    zone.textContent = user.timezone;
    who.append(name, zone);

    const role = cell(ROLE_NAMES[user.role] || user.role);
    if (user.role === 'admin') role.className = 'role-admin';

    const plan = cell(user.plan || '—');
    plan.className = 'plan-only';
    plan.hidden = !hasPlans();

    const today = document.createElement('td');
    today.append(usage(user));

    const actions = document.createElement('td');
    actions.className = 'end';
    actions.append(button('Manage', `Manage ${user.username}`, () => openUser(user).catch(failHere)));

    tr.append(who, role, plan, today, actions);
    return tr;
  }

  /** "2 of 5" and a small meter, or "2 used" when the limit is not known. */
  function usage(user) {
    const wrap = document.createElement('div');
    wrap.className = 'use';
    const limit = limitToday(user);
    const used = isCount(user.used) ? user.used : 0;
    const text = document.createElement('span');
    text.className = 'use-text';
    text.textContent = limit === null ? `${used} used` : `${used} of ${limit}`;
    wrap.append(text);
    if (limit !== null) {
      const meter = document.createElement('div');
      meter.className = 'meter small';
      meter.setAttribute('aria-hidden', 'true');
      const bar = document.createElement('span');
      bar.style.width = `${Math.round((limit > 0 ? Math.min(1, used / limit) : 1) * 100)}%`;
      meter.append(bar);
      meter.classList.toggle('full', used >= limit);
      wrap.append(meter);
    }
    return wrap;
  }

  async function search(event) {
    event.preventDefault();
    clearMessage();
    state.q = ui.q.value.trim();
    state.cursors = [null];
    await loadUsers().catch(failHere);
  }

  async function turnPage(forward) {
    clearMessage();
    if (forward && state.nextCursor) state.cursors.push(state.nextCursor);
    else if (!forward && state.cursors.length > 1) state.cursors.pop();
    else return;
    await loadUsers().catch(failHere);
  }

  // ---- one user ----------------------------------------------------------------

  async function openUser(user) {
    clearMessage();
    state.selected = user;
    state.boostToday = undefined;
    for (const tr of ui.userRows.children) tr.classList.toggle('selected', tr.dataset.id === user.id);
    fillUser(user);
    ui.saved.textContent = '';
    ui.boostForm.reset();
    const today = localToday(user.timezone);
    ui.boostFrom.value = today;
    ui.boostTo.value = today;
    ui.detail.hidden = false;
    ui.view.classList.add('with-detail');
    ui.detailTitle.focus();
    await Promise.all([loadAudit(true), hasPlans() ? loadBoosts() : null]);
  }

  function fillUser(user) {
    ui.detailTitle.textContent = user.username;
    ui.detailSummary.textContent = [user.timezone, `joined ${dayOf(user.created_at)}`, useWords(user, state.boostToday)].join(
      ' · ',
    );
    const own = ownLimit(user);
    ui.limit.value = own === null ? '' : String(own);
    ui.limit.required = !hasPlans();
    ui.limitHint.textContent = hasPlans()
      ? 'Empty: the plan’s limit. 0 to 1,000,000 new tasks a day; applies at once, today too.'
      : '0 to 1,000,000 new tasks a day; applies at once, today too.';
    if (hasPlans()) fillPlanChoice(user.plan || '');
    ui.role.value = user.role;
    const self = state.me && state.me.id === user.id;
    ui.role.disabled = self && user.role === 'admin';
    ui.roleHint.hidden = !ui.role.disabled;
  }

  function fillPlanChoice(current) {
    const options = [new Option('No plan', '')];
    for (const plan of state.plans) options.push(new Option(`${plan.name} (${plan.daily_limit} a day)`, plan.name));
    ui.plan.replaceChildren(...options);
    ui.plan.value = current;
  }

  /** What the form changes, as the PATCH body; empty when nothing. */
  function userChanges(user) {
    const changes = {};
    const typed = ui.limit.value.trim();
    const own = ownLimit(user);
    if (typed === '') {
      if (own !== null && hasPlans()) changes.daily_limit = null;
    } else {
      const n = Number(typed);
      if (n !== own) changes.daily_limit = Number.isInteger(n) ? n : typed;
    }
    if (hasPlans() && ui.plan.value !== (user.plan || '')) changes.plan = ui.plan.value || null;
    if (!ui.role.disabled && ui.role.value !== user.role) changes.role = ui.role.value;
    return changes;
  }

  function describeChanges(changes) {
    const parts = [];
    if ('daily_limit' in changes) {
      parts.push(changes.daily_limit === null ? 'own limit removed' : `daily limit ${changes.daily_limit}`);
    }
    if ('plan' in changes) parts.push(changes.plan === null ? 'no plan' : `plan ${changes.plan}`);
    if ('role' in changes) parts.push(`role ${ROLE_NAMES[changes.role] || changes.role}`);
    return parts.join(', ');
  }

  async function saveUser(event) {
    event.preventDefault();
    await busy(ui.userForm, async () => {
      clearMessage();
      ui.saved.textContent = '';
      const user = state.selected;
      if (!user) return;
      const changes = userChanges(user);
      if (Object.keys(changes).length === 0) {
        ui.saved.textContent = 'Nothing to change.';
        return;
      }
      try {
        const updated = await api('PATCH', `/v1/admin/users/${encodeURIComponent(user.id)}`, changes);
        // The answer is the user without today's use; keep the use shown.
        const merged = { ...user, ...updated, used: user.used };
        state.selected = merged;
        state.rows = state.rows.map((u) => (u.id === merged.id ? merged : u));
        fillUser(merged);
        renderUsers();
        ui.saved.textContent = `Saved: ${describeChanges(changes)}.`;
        await loadAudit(true);
        await loadUsers(); // the limit today may depend on more than the answer shows
      } catch (err) {
        failHere(err);
      }
    });
  }

  // ---- audit trail -------------------------------------------------------------

  async function loadAudit(first) {
    const user = state.selected;
    if (!user) return;
    const query = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (!first && state.auditCursor) query.set('cursor', state.auditCursor);
    const page = await api('GET', `/v1/admin/users/${encodeURIComponent(user.id)}/audit?${query}`);
    if (!state.selected || state.selected.id !== user.id) return; // another user was opened meanwhile
    const rows = items(page).map(auditRow);
    if (first) ui.auditRows.replaceChildren(...rows);
    else ui.auditRows.append(...rows);
    state.auditCursor = page.next_cursor || null;
    ui.auditMore.hidden = !state.auditCursor;
    ui.auditEmpty.hidden = ui.auditRows.children.length > 0;
  }

  /** Who made an audited change, in words. */
  function actorName(entry) {
    if (entry.actor_id === null || entry.actor_id === undefined) {
      return SYSTEM_FIELDS.has(entry.field) ? 'the plan’s rule' : 'command line';
    }
    if (state.me && entry.actor_id === state.me.id) return `${state.me.username} (you)`;
    return state.names.get(entry.actor_id) || 'another admin';
  }

  function auditRow(entry) {
    const tr = document.createElement('tr');
    const at = document.createElement('td');
    const time = document.createElement('time');
    time.dateTime = entry.at;
    time.textContent = shortWhen(entry.at);
    time.title = when(entry.at);
    at.append(time);
    const field = FIELD_NAMES[entry.field] || entry.field;
    const value = (v) => (v === '' || v === null || v === undefined ? 'none' : ROLE_NAMES[v] || v);
    tr.append(at, cell(actorName(entry)), cell(`${field}: ${value(entry.old_value)} → ${value(entry.new_value)}`));
    return tr;
  }

  // ---- boosts ------------------------------------------------------------------

  const boostsPath = (user) => `/v1/admin/users/${encodeURIComponent(user.id)}/boosts`;

  async function loadBoosts() {
    const user = state.selected;
    ui.boostList.replaceChildren();
    ui.boostsEmpty.hidden = true;
    if (!state.listsBoosts) return;
    let doc;
    try {
      doc = await api('GET', boostsPath(user));
    } catch (err) {
      // The server grants and takes back boosts but does not list them.
      if (err instanceof Problem && (err.status === 404 || err.status === 405)) {
        state.listsBoosts = false;
        return;
      }
      throw err;
    }
    if (!state.selected || state.selected.id !== user.id) return;
    const boosts = items(doc);
    ui.boostList.replaceChildren(...boosts.map(boostItem));
    updateBoostsEmpty();
    state.boostToday = boostOn(boosts, localToday(user.timezone));
    fillUser(state.selected);
  }

  function updateBoostsEmpty() {
    ui.boostsEmpty.hidden = !state.listsBoosts || ui.boostList.children.length > 0;
  }

  function boostItem(boost) {
    const li = document.createElement('li');
    li.className = 'row-item';
    const text = document.createElement('div');
    text.className = 'row-text';
    const what = document.createElement('strong');
    const days = boost.from === boost.to ? `on ${boost.from}` : `from ${boost.from} to ${boost.to}`;
    what.textContent = `+${boost.extra} a day ${days}`;
    const why = document.createElement('span');
    why.className = 'hint';
    why.textContent = boost.reason || '';
    text.append(what, why);
    const label = boost.reason ? `Take back the boost “${boost.reason}”` : 'Take back this boost';
    li.append(text, button('Take back', label, () => removeBoost(boost, li), 'quiet delete'));
    return li;
  }

  async function grantBoost(event) {
    event.preventDefault();
    await busy(ui.boostForm, async () => {
      clearMessage();
      const user = state.selected;
      if (!user) return;
      const body = {
        extra: Number(ui.boostExtra.value),
        from: ui.boostFrom.value,
        to: ui.boostTo.value,
        reason: ui.boostReason.value.trim(),
      };
      try {
        const boost = await api('POST', boostsPath(user), body);
        if (state.listsBoosts) await loadBoosts();
        else if (boost && boost.id) ui.boostList.append(boostItem({ ...body, ...boost }));
        updateBoostsEmpty();
        ui.boostExtra.value = '';
        ui.boostReason.value = '';
        await loadUsers();
        if (state.selected) fillUser(state.selected);
        await loadAudit(true);
      } catch (err) {
        failHere(err);
      }
    });
  }

  async function removeBoost(boost, li) {
    if (li.getAttribute('aria-busy') === 'true') return;
    clearMessage();
    li.setAttribute('aria-busy', 'true');
    try {
      await api('DELETE', `${boostsPath(state.selected)}/${encodeURIComponent(boost.id)}`);
      li.remove();
    } catch (err) {
      li.removeAttribute('aria-busy');
      if (err instanceof Problem && err.status === 404) li.remove();
      else failHere(err);
    }
    updateBoostsEmpty();
    if (state.listsBoosts) await loadBoosts().catch(failHere);
    await loadUsers().catch(failHere);
    if (state.selected) fillUser(state.selected);
  }

  // ---- plans -------------------------------------------------------------------

  /** Asks for the plans; a server without plan routes answers 404 (or 405). */
  async function loadPlans() {
    try {
      state.plans = items(await api('GET', '/v1/admin/plans'));
    } catch (err) {
      if (!(err instanceof Problem && (err.status === 404 || err.status === 405))) throw err;
      state.plans = false;
    }
    for (const el of ui.view.querySelectorAll('.plan-only')) el.hidden = !hasPlans();
    // The list gives each user's limit before boosts; a user's details add them.
    ui.todayHead.textContent = hasPlans() ? 'Today, before boosts' : 'Today';
    if (hasPlans()) renderPlans();
  }

  function adaptText(adapt) {
    if (!adapt || typeof adapt !== 'object') return 'No';
    const up = `+${adapt.step} after ${adapt.after_days_at_limit} days at the limit, up to ${adapt.max}`;
    const down = `−${adapt.step} after ${adapt.after_idle_days} idle days, down to ${adapt.min}`;
    return `${up}; ${down}`;
  }

  function renderPlans() {
    ui.planRows.replaceChildren(
      ...state.plans.map((plan) => {
        const tr = document.createElement('tr');
        const name = cell(plan.name, 'th');
        name.scope = 'row';
        const actions = document.createElement('td');
        actions.className = 'end';
        actions.append(button('Edit', `Edit plan ${plan.name}`, () => editPlan(plan)));
        tr.append(name, cell(String(plan.daily_limit)), cell(adaptText(plan.adapt)), actions);
        return tr;
      }),
    );
    ui.plansEmpty.hidden = state.plans.length > 0;
  }

  function showAdapt(on) {
    ui.planAdapt.checked = on;
    ui.adaptFields.hidden = !on;
    for (const input of Object.values(adaptInputs)) input.required = on;
  }

  function editPlan(plan) {
    clearMessage();
    state.editing = plan;
    ui.planFormTitle.textContent = `Edit plan ${plan.name}`;
    ui.planName.value = plan.name;
    ui.planName.readOnly = true;
    ui.planLimit.value = String(plan.daily_limit);
    const adapt = plan.adapt && typeof plan.adapt === 'object' ? plan.adapt : null;
    showAdapt(adapt !== null);
    for (const f of ADAPT_FIELDS) adaptInputs[f].value = adapt && isCount(adapt[f]) ? String(adapt[f]) : '';
    ui.planSave.textContent = 'Save plan';
    ui.planCancel.hidden = false;
    ui.planLimit.focus();
  }

  function newPlanForm() {
    state.editing = null;
    ui.planForm.reset();
    ui.planFormTitle.textContent = 'New plan';
    ui.planName.readOnly = false;
    showAdapt(false);
    ui.planSave.textContent = 'Create plan';
    ui.planCancel.hidden = true;
  }

  async function savePlan(event) {
    event.preventDefault();
    await busy(ui.planForm, async () => {
      clearMessage();
      const body = { daily_limit: Number(ui.planLimit.value) };
      if (ui.planAdapt.checked) {
        body.adapt = Object.fromEntries(ADAPT_FIELDS.map((f) => [f, Number(adaptInputs[f].value)]));
      } else if (state.editing && state.editing.adapt) {
        body.adapt = null;
      }
      try {
        if (state.editing) {
          await api('PATCH', `/v1/admin/plans/${encodeURIComponent(state.editing.name)}`, body);
        } else {
          await api('POST', '/v1/admin/plans', { name: ui.planName.value.trim(), ...body });
        }
        newPlanForm();
        await loadPlans();
        await loadUsers();
        if (state.selected) fillUser(state.selected);
      } catch (err) {
        failHere(err);
      }
    });
  }

  // ---- the page ----------------------------------------------------------------

  /** Shows the page to `me`, an admin, with fresh lists; an open user stays open. */
  async function show(me) {
    if (!state.me || state.me.id !== me.id) clear();
    state.me = me;
    state.names.set(me.id, me.username);
    ui.view.hidden = false;
    await loadPlans();
    await loadUsers();
    if (state.selected) fillUser(state.selected);
  }

  function hide() {
    ui.view.hidden = true;
  }

  /** Forgets everything shown (at sign-out): the next admin starts afresh. */
  function clear() {
    state.ticket += 1;
    state = { ...fresh(), ticket: state.ticket };
    ui.view.hidden = true;
    ui.q.value = '';
    ui.userRows.replaceChildren();
    ui.usersEmpty.hidden = true;
    ui.pageText.textContent = '';
    ui.detail.hidden = true;
    ui.view.classList.remove('with-detail');
    ui.auditRows.replaceChildren();
    ui.boostList.replaceChildren();
    ui.planRows.replaceChildren();
    newPlanForm();
  }

  ui.search.addEventListener('submit', search);
  ui.prev.addEventListener('click', () => turnPage(false));
  ui.next.addEventListener('click', () => turnPage(true));
  ui.userForm.addEventListener('submit', saveUser);
  ui.boostForm.addEventListener('submit', grantBoost);
  ui.auditMore.addEventListener('click', () => loadAudit(false).catch(failHere));
  ui.planForm.addEventListener('submit', savePlan);
  ui.planCancel.addEventListener('click', newPlanForm);
  ui.planAdapt.addEventListener('change', () => showAdapt(ui.planAdapt.checked));

  return { show, hide, clear };
}
