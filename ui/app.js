// cattery dashboard: a read-only view of the /v1 API, live from /v1/events.
//
// Plain JavaScript, no framework and no build step. The API token is entered once and kept in
// sessionStorage (never in a cookie or a URL); every call sends it as a bearer token, the event
// stream included: it is read with fetch() and a stream reader, because EventSource cannot send
// headers. Every value from the API goes into the page as text (textContent), never as markup.
'use strict';

(() => {
  const TOKEN_KEY = 'cattery.token';
  const STATES = ['queued', 'dispatching', 'pending', 'running', 'done', 'failed', 'cancelled'];
  const FINAL = new Set(['done', 'failed', 'cancelled']);
  // History entries that report no trouble.
  const CALM_EVENTS = new Set(['transition', 'release', 'cancel_requested']);
  const PAGE_SIZE = 25;
  const MAX_PAGE_SIZE = 1000;
  const EVENTS_PAGE = 1000;
  // A run's history longer than this is shown in part (the API pages it).
  const MAX_EVENTS = 20000;
  // The event stream carries the changes that the run history records (transitions, retries,
  // releases…); a progress or heartbeat update records none. So the pools page (whose breaker
  // state is not on the stream either), a run list showing unfinished runs and the page of an
  // unfinished run also read the API again this often.
  const POOLS_REFRESH_MS = 5000;
  const RUNS_REFRESH_MS = 5000;
  const RUN_REFRESH_MS = 1000;

  const main = document.getElementById('main');
  const liveBadge = document.getElementById('live');
  const signOutButton = document.getElementById('sign-out');

  // The page on show: its AbortController, aborted when another page replaces it.
  let current = null;
  // Cursors of the run list by filter: cursors[key][n] is the `after` of page n + 1.
  const cursorCache = new Map();

  // ---------- small helpers ----------

  /** An element with attributes and children; strings become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = value;
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else if (key === 'value') el.value = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  /** Replaces the children of `el`; like `h`, it leaves out null, undefined and false. */
  function put(el, ...children) {
    el.replaceChildren(...children.flat(Infinity)
      .filter((child) => child !== null && child !== undefined && child !== false)
      .map((child) => (child instanceof Node ? child : String(child))));
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  function hashFor(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== '') query.set(key, String(value));
    }
    const text = query.toString();
    return '#' + path + (text ? '?' + text : '');
  }

  function runHref(jobId) {
    return '#/runs/' + encodeURIComponent(jobId);
  }

  /**
   * A time as "2026-05-01 12:03:04Z" (UTC, as the API keeps it), the raw value in its title.
   * The API's own times are RFC 3339; a heartbeat is whatever the scheduler reported, often epoch
   * milliseconds or seconds, read as such.
   */
  function when(value) {
    if (value === null || value === undefined || value === '') return h('span', { class: 'muted', text: '—' });
    const raw = String(value);
    let date;
    if (/^\d{9,16}$/.test(raw)) {
      const number = Number(raw);
      date = new Date(number < 1e11 ? number * 1000 : number);
    } else {
      date = new Date(raw);
    }
    if (Number.isNaN(date.getTime())) return raw;
    const text = date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    return h('time', { datetime: date.toISOString(), title: raw, class: 'nowrap', text });
  }

  function orDash(value) {
    return value === null || value === undefined || value === ''
      ? h('span', { class: 'muted', text: '—' })
      : String(value);
  }

  function badge(kind, value) {
    return h('span', { class: 'badge ' + kind + '-' + value, 'data-value': value, text: value.replace('_', ' ') });
  }

  function progressOf(run, wide) {
    const p = run.progress;
    if (!p || !p.total) {
      if (run.state === 'done') return h('span', { class: 'muted', text: 'complete' });
      return h('span', { class: 'muted', text: '—' });
    }
    const completed = Math.min(p.completed || 0, p.total);
    return h('span', { class: 'progress', 'data-completed': completed, 'data-total': p.total },
      h('progress', { class: wide ? 'wide' : null, max: p.total, value: completed }),
      h('span', { class: 'nowrap', text: completed + ' / ' + p.total + (p.inProgress ? ' (+' + p.inProgress + ')' : '') }));
  }

  function pretty(value) {
    return h('pre', { class: 'json', text: JSON.stringify(value, null, 2) });
  }

  function setLive(status) {
    liveBadge.className = 'live ' + status;
    liveBadge.textContent = { on: 'live', connecting: 'connecting…', off: 'offline' }[status];
  }

  // ---------- the API ----------

  class Unauthorized extends Error {}

  class ApiFailure extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || 'the gateway answered ' + status);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(path, signal) {
    const response = await fetch(path, {
      headers: { Authorization: 'Bearer ' + token(), Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      signal,
    });
    if (response.status === 401) throw new Unauthorized();
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiFailure(response.status, body);
    return body;
  }

  /**
   * Follows `GET /v1/events` + query. `sync` is called whenever the view must be read whole:
   * once the stream is open and nothing was seen yet (so that no change falls between the read
   * and the stream), or when the stream cannot be opened at all. `onRun` gets each RunView.
   * A dropped stream is opened again with `Last-Event-ID`, so the gap is replayed.
   */
  function follow(query, signal, { sync, onRun }) {
    let lastId = null;
    let synced = false;
    let delay = 500;
    (async () => {
      while (!signal.aborted) {
        setLive('connecting');
        try {
          const headers = { Authorization: 'Bearer ' + token(), Accept: 'text/event-stream' };
          if (lastId !== null) headers['Last-Event-ID'] = lastId;
          const response = await fetch('/v1/events' + query, {
            headers, cache: 'no-store', credentials: 'omit', signal,
          });
          if (response.status === 401) { signOut('The gateway refused the token.'); return; }
          if (response.status >= 400 && response.status < 500) {
            // Asking again would not help (a filter the API refuses): show what can be read.
            setLive('off');
            if (!synced) await sync();
            return;
          }
          if (!response.ok || !response.body) throw new Error('the stream answered ' + response.status);
          setLive('on');
          delay = 500;
          if (lastId === null) { synced = true; await sync(); }
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            // The gateway ends lines with \n alone.
            buffer += value;
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const frame = parseFrame(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
              if (frame.id !== null) lastId = frame.id;
              if (frame.event === 'run' && frame.data) {
                let run = null;
                try { run = JSON.parse(frame.data); } catch (_) { run = null; }
                if (run) onRun(run);
              }
            }
          }
        } catch (error) {
          if (signal.aborted) return;
          if (error instanceof Unauthorized) { signOut('The gateway refused the token.'); return; }
        }
        if (signal.aborted) return;
        setLive('off');
        if (!synced) { synced = true; await sync(); }
        await sleep(delay, signal);
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }

  function parseFrame(block) {
    const frame = { id: null, event: 'message', data: '' };
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') frame.id = value;
      else if (field === 'event') frame.event = value;
      else if (field === 'data') data.push(value);
    }
    frame.data = data.join('\n');
    return frame;
  }

  /** Runs `task` soon, once, however often it is asked for meanwhile; never two at once. */
  function debounced(task, ms, signal) {
    let timer = null;
    let running = false;
    let again = false;
    const run = async () => {
      timer = null;
      if (signal.aborted) return;
      if (running) { again = true; return; }
      running = true;
      try { await task(); } finally {
        running = false;
        if (again && !signal.aborted) { again = false; timer = setTimeout(run, ms); }
      }
    };
    return () => { if (timer === null) timer = setTimeout(run, ms); };
  }

  // ---------- pages ----------

  function show(...nodes) {
    put(main, nodes);
  }

  function failure(error) {
    if (error instanceof Unauthorized) {
      signOut('The gateway refused the token.');
      return null;
    }
    if (error && error.name === 'AbortError') return null;
    const text = error instanceof ApiFailure
      ? error.message + (error.problem && error.problem.code ? ' (' + error.problem.code + ')' : '')
      : 'The gateway could not be reached: ' + (error && error.message ? error.message : String(error));
    return h('div', { class: 'notice', role: 'alert', text });
  }

  function signInPage(message) {
    signOutButton.hidden = true;
    setLive('off');
    const input = h('input', {
      id: 'token-input', type: 'password', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'API token', 'aria-label': 'API token', required: true,
    });
    const error = h('p', { id: 'token-error', class: 'error-text', role: 'alert', text: message || '' });
    const button = h('button', { id: 'token-submit', class: 'primary', type: 'submit', text: 'Open the dashboard' });
    const form = h('form', {
      id: 'token-form',
      onsubmit: async (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        button.disabled = true;
        error.textContent = '';
        sessionStorage.setItem(TOKEN_KEY, value);
        try {
          await api('/v1/pools');
          route();
        } catch (failed) {
          sessionStorage.removeItem(TOKEN_KEY);
          error.textContent = failed instanceof Unauthorized
            ? 'The gateway refused this token.'
            : 'The gateway could not be asked: ' + failed.message;
          button.disabled = false;
          input.focus();
        }
      },
    },
    h('h1', { text: 'Sign in' }),
    h('p', { text: 'Enter an API token of this gateway (the reader role is enough). It is kept in this tab only and sent as a bearer token to the /v1 API.' }),
    input, button, error);
    show(h('section', { class: 'panel sign-in' }, form));
    input.focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stop();
    signInPage(message);
  }

  // ----- pools -----

  function poolsPage(signal) {
    const body = h('tbody');
    const notice = h('div');
    const table = h('table', { id: 'pools-table' },
      h('thead', {}, h('tr', {},
        h('th', { text: 'Pool' }), h('th', { text: 'Circuit' }),
        h('th', { class: 'num', text: 'Queued' }), h('th', { class: 'num', text: 'In flight' }),
        h('th', { class: 'num', text: 'Done' }), h('th', { class: 'num', text: 'Failed' }),
        h('th', { class: 'num', text: 'Cancelled' }), h('th', { text: 'Format' }),
        h('th', { class: 'num', text: 'Rev.' }), h('th', { text: 'Last error' }),
        h('th', { text: 'Updated' }))),
      body);
    show(h('h1', { text: 'Pools' }), notice, h('section', { class: 'panel flush' }, table));

    const count = (pool, state, value) => h('td', { class: 'num', 'data-col': state },
      value ? h('a', { href: hashFor('/runs', { pool, state }), text: String(value) }) : '0');

    const load = async () => {
      try {
        const { pools } = await api('/v1/pools', signal);
        if (signal.aborted) return;
        put(notice);
        if (!pools.length) {
          put(body, h('tr', {}, h('td', { class: 'empty', colspan: 11, text: 'No pool is registered.' })));
          return;
        }
        put(body, ...pools.map((pool) => {
          const warnings = (pool.warnings || []).map((w) => w.code + ': ' + w.message).join('\n');
          return h('tr', { 'data-pool': pool.name },
            h('td', { 'data-col': 'name' },
              h('a', { href: hashFor('/runs', { pool: pool.name }), text: pool.name }),
              warnings ? h('span', { class: 'muted', title: warnings, text: ' ⚠ ' + pool.warnings.length }) : null),
            h('td', { 'data-col': 'circuit' }, badge('circuit', pool.health.circuit)),
            count(pool.name, 'queued', pool.stats.queued),
            h('td', { class: 'num', 'data-col': 'inFlight', text: String(pool.stats.inFlight) }),
            count(pool.name, 'done', pool.stats.done),
            count(pool.name, 'failed', pool.stats.failed),
            count(pool.name, 'cancelled', pool.stats.cancelled),
            h('td', { 'data-col': 'format', class: 'nowrap', text: pool.format }),
            h('td', { class: 'num', 'data-col': 'revision', text: String(pool.revision) }),
            h('td', { 'data-col': 'lastError', class: 'clip error-text', title: pool.health.lastError || null },
              orDash(pool.health.lastError)),
            h('td', {}, when(pool.updatedAt)));
        }));
      } catch (error) {
        const shown = failure(error);
        if (shown) put(notice, shown);
      }
    };
    const soon = debounced(load, 300, signal);
    follow('', signal, { sync: load, onRun: soon });
    const timer = setInterval(soon, POOLS_REFRESH_MS);
    signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  }

  // ----- runs -----

  function runsPage(params, signal) {
    const pool = params.get('pool') || '';
    const state = STATES.includes(params.get('state')) ? params.get('state') : '';
    const page = Math.max(1, parseInt(params.get('page'), 10) || 1);
    const limitParam = parseInt(params.get('limit'), 10);
    const limit = limitParam >= 1 && limitParam <= MAX_PAGE_SIZE ? limitParam : PAGE_SIZE;
    const key = [pool, state, limit].join('|');
    const here = (changes) => hashFor('/runs', Object.assign(
      { pool, state, page: 1, limit: limit === PAGE_SIZE ? null : limit }, changes));

    const poolSelect = h('select', {
      id: 'filter-pool',
      onchange: () => { location.hash = here({ pool: poolSelect.value, page: 1 }); },
    }, h('option', { value: '', text: 'all pools' }), pool ? h('option', { value: pool, text: pool }) : null);
    poolSelect.value = pool;
    const stateSelect = h('select', {
      id: 'filter-state',
      onchange: () => { location.hash = here({ state: stateSelect.value, page: 1 }); },
    }, h('option', { value: '', text: 'all states' }), STATES.map((s) => h('option', { value: s, text: s })));
    stateSelect.value = state;

    const body = h('tbody');
    const notice = h('div');
    const newer = h('button', { id: 'page-newer', type: 'button', text: '← Newer', disabled: page <= 1,
      onclick: () => { location.hash = here({ page: page - 1 }); } });
    const older = h('button', { id: 'page-older', type: 'button', text: 'Older →', disabled: true,
      onclick: () => { location.hash = here({ page: page + 1 }); } });
    const pageLabel = h('span', { id: 'page-number', class: 'muted', text: 'Page ' + page });
    const title = 'Runs' + (pool ? ' of ' + pool : '') + (state ? ', ' + state : '');
    show(
      h('h1', { text: title }),
      h('div', { class: 'filters' },
        h('label', {}, 'Pool', poolSelect),
        h('label', {}, 'State', stateSelect)),
      notice,
      h('section', { class: 'panel flush' },
        h('table', { id: 'runs-table' },
          h('thead', {}, h('tr', {},
            h('th', { text: 'Job id' }), h('th', { text: 'Pool' }), h('th', { text: 'Kind' }),
            h('th', { text: 'State' }), h('th', { text: 'Progress' }), h('th', { text: 'Created' }),
            h('th', { text: 'Finished' }), h('th', { text: 'Error' }))),
          body),
        h('div', { class: 'pager' }, newer, pageLabel, older)));

    // The pool names for the filter.
    api('/v1/pools', signal).then(({ pools }) => {
      if (signal.aborted) return;
      for (const p of pools) {
        if (p.name !== pool) poolSelect.append(h('option', { value: p.name, text: p.name }));
      }
      poolSelect.value = pool;
    }).catch(() => {});

    const row = (run) => h('tr', { 'data-job-id': run.jobId, 'data-state': run.state },
      h('td', { 'data-col': 'jobId', class: 'mono' }, h('a', { href: runHref(run.jobId), text: run.jobId })),
      h('td', { 'data-col': 'pool' }, h('a', { href: here({ pool: run.pool }), text: run.pool })),
      h('td', { 'data-col': 'kind' }, orDash(run.kind)),
      h('td', { 'data-col': 'state' }, badge('state', run.state),
        run.cancelRequested && !FINAL.has(run.state) ? h('span', { class: 'muted', text: ' cancelling' }) : null),
      h('td', { 'data-col': 'progress' }, progressOf(run, false)),
      h('td', {}, when(run.createdAt)),
      h('td', {}, when(run.finishedAt)),
      h('td', { 'data-col': 'error', class: 'clip error-text', title: run.error || null },
        run.error || run.failureCause ? (run.failureCause ? '[' + run.failureCause + '] ' : '') + (run.error || '') : ''));

    const query = (after) => {
      const q = new URLSearchParams({ limit: String(limit) });
      if (pool) q.set('pool', pool);
      if (state) q.set('state', state);
      if (after) q.set('after', after);
      return '/v1/runs?' + q.toString();
    };

    // The cursor of page n (1-based): known from an earlier page, else found by reading the pages
    // before it.
    const cursorOf = async (n) => {
      if (!cursorCache.has(key)) cursorCache.set(key, [null]);
      const cursors = cursorCache.get(key);
      while (cursors.length < n) {
        const at = cursors.length - 1;
        const { next } = await api(query(cursors[at]), signal);
        if (!next) return undefined;
        cursors[at + 1] = next;
      }
      return cursors[n - 1];
    };

    const shown = new Map();
    let lastRendered = null;
    const load = async () => {
      try {
        if (page === 1) cursorCache.set(key, [null]);
        const after = await cursorOf(page);
        if (signal.aborted) return;
        if (after === undefined) {
          put(notice, h('div', { class: 'notice info' }, 'There is no page ' + page + ' any more. ',
            h('a', { href: here({ page: 1 }), text: 'Back to the newest runs' })));
          put(body);
          lastRendered = null;
          return;
        }
        const { runs, next } = await api(query(after), signal);
        if (signal.aborted) return;
        put(notice);
        const cursors = cursorCache.get(key);
        if (next) cursors[page] = next;
        older.disabled = !next;
        // Leave the rows alone when nothing changed (a periodic read of a quiet page).
        const rendered = JSON.stringify(runs);
        if (rendered === lastRendered) return;
        lastRendered = rendered;
        shown.clear();
        if (!runs.length) {
          lastRendered = null;
          put(body, h('tr', {}, h('td', { class: 'empty', colspan: 8, text: 'No run matches.' })));
          return;
        }
        put(body, ...runs.map((run) => {
          const tr = row(run);
          shown.set(run.jobId, { tr, run });
          return tr;
        }));
      } catch (error) {
        const failed = failure(error);
        if (failed) put(notice, failed);
      }
    };
    const soon = debounced(load, 250, signal);
    const timer = setInterval(() => {
      for (const { run } of shown.values()) {
        if (!FINAL.has(run.state)) { soon(); return; }
      }
    }, RUNS_REFRESH_MS);
    signal.addEventListener('abort', () => clearInterval(timer), { once: true });
    follow(pool ? '?pool=' + encodeURIComponent(pool) : '', signal, {
      sync: load,
      onRun: (run) => {
        const seen = shown.get(run.jobId);
        if (seen) {
          if (run.updatedAt < seen.run.updatedAt) return;
          if (state && run.state !== state) { soon(); return; }
          const tr = row(run);
          seen.tr.replaceWith(tr);
          shown.set(run.jobId, { tr, run });
        } else if (page === 1 && (!state || run.state === state)) {
          soon();
        }
      },
    });
  }

  // ----- one run -----

  function runPage(jobId, signal) {
    const notice = h('div');
    const heading = h('h1', {}, 'Run ', h('span', { class: 'mono', text: jobId }));
    const summary = h('div');
    const calls = h('div');
    const timelineBody = h('tbody');
    const timelineNote = h('p', { class: 'muted' });
    show(heading, notice, summary, calls,
      h('section', { class: 'panel flush', id: 'timeline' },
        h('h2', { text: 'Timeline' }),
        h('table', { id: 'timeline-table' },
          h('thead', {}, h('tr', {},
            h('th', { class: 'num', text: 'Seq' }), h('th', { text: 'At' }), h('th', { text: 'Event' }),
            h('th', { text: 'Change' }), h('th', { text: 'Detail' }))),
          timelineBody),
        timelineNote));

    let run = null;
    const events = [];
    let lastSeq = 0;

    const renderRun = () => {
      put(heading, 'Run ', h('span', { class: 'mono', text: run.jobId }),
        h('span', { id: 'run-state' }, badge('state', run.state)),
        run.cancelRequested && !FINAL.has(run.state) ? h('span', { class: 'badge', text: 'cancel requested' }) : null);

      let outcome;
      if (run.state === 'done') {
        outcome = h('div', { id: 'run-result' },
          run.result === null || run.result === undefined
            ? h('p', { class: 'muted', text: 'Done, without a result.' })
            : pretty(run.result));
      } else if (run.state === 'failed' || run.state === 'cancelled') {
        outcome = h('div', { id: 'run-error' },
          h('dl', { class: 'facts' },
            h('dt', { text: 'Error' }), h('dd', { class: 'error-text', 'data-field': 'error' }, orDash(run.error)),
            h('dt', { text: 'Failure cause' }), h('dd', { 'data-field': 'failureCause' }, orDash(run.failureCause)),
            run.detail ? [h('dt', { text: 'Detail' }), h('dd', { class: 'error-text', 'data-field': 'detail' }, run.detail)] : null));
      } else {
        outcome = h('p', { id: 'run-pending', class: 'muted', text: 'Not finished yet: this page follows it live.' });
      }

      const labels = Object.entries(run.labels || {});
      const fact = (label, value, field) => [h('dt', { text: label }), h('dd', { 'data-field': field || null }, value)];
      put(summary,
        h('div', { class: 'grid' },
          h('section', { class: 'panel', id: 'run-outcome' },
            h('h2', { text: run.state === 'done' ? 'Result' : FINAL.has(run.state) ? 'Error' : 'Outcome' }),
            outcome),
          h('section', { class: 'panel', id: 'run-progress' },
            h('h2', { text: 'Progress' }),
            progressOf(run, true),
            run.progress ? h('p', { class: 'muted', text:
              (run.progress.completed || 0) + ' completed, ' + (run.progress.inProgress || 0) + ' in progress, ' +
              (run.progress.total === null || run.progress.total === undefined ? '?' : run.progress.total) + ' in all' }) : null,
            h('dl', { class: 'facts' },
              fact('Heartbeat', when(run.heartbeatAt), 'heartbeatAt'),
              fact('Deadline', when(run.deadlineAt), 'deadlineAt')))),
        h('div', { class: 'grid' },
          h('section', { class: 'panel', id: 'run-facts' },
            h('h2', { text: 'Run' }),
            h('dl', { class: 'facts' },
              fact('Pool', h('a', { href: hashFor('/runs', { pool: run.pool }), text: run.pool }), 'pool'),
              fact('Kind', orDash(run.kind), 'kind'),
              fact('State', badge('state', run.state), 'state'),
              fact('Created', when(run.createdAt)),
              fact('Dispatched', when(run.dispatchedAt)),
              fact('Finished', when(run.finishedAt)),
              fact('Updated', when(run.updatedAt)),
              fact('Labels', labels.length
                ? labels.map(([k, v]) => h('code', { class: 'nowrap', text: k + '=' + (typeof v === 'string' ? v : JSON.stringify(v)) + ' ' }))
                : orDash(null), 'labels'))),
          h('section', { class: 'panel', id: 'run-scheduler' },
            h('h2', { text: 'At the scheduler' }),
            h('dl', { class: 'facts' },
              fact('Scheduler state', orDash(run.schedulerState), 'schedulerState'),
              fact('External id', h('span', { class: 'mono' }, orDash(run.externalId)), 'externalId'),
              fact('Dispatch id', h('span', { class: 'mono' }, orDash(run.dispatchId)), 'dispatchId'),
              fact('Manifest revision', String(run.manifestRevision), 'manifestRevision'),
              fact('Cancel requested', run.cancelRequested ? 'yes' : 'no', 'cancelRequested'),
              fact('Released', run.released ? 'yes' : 'no', 'released')))),
        run.fields && Object.keys(run.fields).length
          ? h('section', { class: 'panel', id: 'run-fields' }, h('h2', { text: 'Mapped fields' }), pretty(run.fields))
          : null);
      renderCalls();
    };

    // What the run did at its scheduler: the call counters, and the history entries about calls
    // (retries, poll errors, unmapped statuses, releases).
    const renderCalls = () => {
      if (!run) return;
      const a = run.attempts || {};
      const callEvents = events.filter((e) => e.type !== 'transition');
      put(calls, h('section', { class: 'panel', id: 'run-calls' },
        h('h2', { text: 'Scheduler calls' }),
        h('div', { class: 'counts' },
          ['dispatch', 'poll', 'release', 'redispatch'].map((op) => h('div', { 'data-op': op },
            h('strong', { text: String(a[op] || 0) }),
            h('span', { text: op === 'redispatch' ? 're-dispatches' : op + ' calls' })))),
        callEvents.length
          ? h('table', { id: 'calls-table' },
            h('thead', {}, h('tr', {}, h('th', { text: 'At' }), h('th', { text: 'Event' }), h('th', { text: 'Detail' }))),
            h('tbody', {}, callEvents.slice(-50).map((e) => h('tr', { 'data-seq': e.seq },
              h('td', {}, when(e.at)), h('td', {}, badge('event', e.type)),
              h('td', { class: CALM_EVENTS.has(e.type) ? null : 'error-text', text: e.detail || '' })))))
          : h('p', { class: 'muted', text: 'No retry, poll error, unmapped status or release recorded.' })));
    };

    const eventRow = (e) => h('tr', { 'data-seq': e.seq, 'data-type': e.type },
      h('td', { class: 'num mono', text: String(e.seq) }),
      h('td', {}, when(e.at)),
      h('td', { 'data-col': 'type' }, badge('event', e.type)),
      h('td', { 'data-col': 'change', class: 'nowrap' },
        e.from || e.to ? [e.from ? badge('state', e.from) : h('span', { class: 'muted', text: 'new' }), ' → ', e.to ? badge('state', e.to) : '—'] : ''),
      h('td', { 'data-col': 'detail', text: e.detail || '' }));

    // Reads the history after the last entry shown, page by page.
    const readEvents = async () => {
      for (;;) {
        if (events.length >= MAX_EVENTS) {
          timelineNote.textContent = 'The first ' + MAX_EVENTS + ' entries are shown; the API has the rest.';
          return;
        }
        const page = await api('/v1/runs/' + encodeURIComponent(jobId) + '/events?limit=' + EVENTS_PAGE + '&after=' + lastSeq, signal);
        if (signal.aborted) return;
        for (const e of page.events) {
          if (e.seq <= lastSeq) continue;
          events.push(e);
          lastSeq = e.seq;
          timelineBody.append(eventRow(e));
        }
        if (!page.next || !page.events.length) break;
      }
      renderCalls();
    };

    // Shows `fresh` unless what is shown is newer; leaves the page alone when nothing changed.
    const adopt = (fresh) => {
      if (run && (fresh.updatedAt < run.updatedAt || JSON.stringify(fresh) === JSON.stringify(run))) return;
      run = fresh;
      renderRun();
    };
    const load = async () => {
      try {
        const fresh = await api('/v1/runs/' + encodeURIComponent(jobId), signal);
        if (signal.aborted) return;
        adopt(fresh);
        put(notice);
        await readEvents();
      } catch (error) {
        const failed = failure(error);
        if (failed) put(notice, failed);
      }
    };
    const moreEvents = debounced(async () => {
      try { await readEvents(); } catch (error) {
        const failed = failure(error);
        if (failed) put(notice, failed);
      }
    }, 100, signal);
    follow('?jobId=' + encodeURIComponent(jobId), signal, {
      sync: load,
      onRun: (fresh) => {
        if (fresh.jobId !== jobId) return;
        adopt(fresh);
        moreEvents();
      },
    });
    const reread = debounced(async () => {
      try {
        const fresh = await api('/v1/runs/' + encodeURIComponent(jobId), signal);
        if (!signal.aborted) adopt(fresh);
      } catch (error) {
        const failed = failure(error);
        if (failed) put(notice, failed);
      }
    }, 0, signal);
    const timer = setInterval(() => { if (run && !FINAL.has(run.state)) reread(); }, RUN_REFRESH_MS);
    signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  }

  function missingPage() {
    show(h('h1', { text: 'Nothing here' }),
      h('p', {}, 'This dashboard has no such page. ', h('a', { href: '#/pools', text: 'See the pools' })));
  }

  // ---------- routing ----------

  function stop() {
    if (current) current.abort();
    current = null;
  }

  function route() {
    stop();
    if (!token()) { signInPage(''); return; }
    signOutButton.hidden = false;
    const raw = location.hash.replace(/^#/, '');
    if (raw === '' || raw === '/') { location.replace('#/pools'); return; }
    const [path, query] = raw.split('?');
    const params = new URLSearchParams(query || '');
    document.getElementById('nav-pools').classList.toggle('active', path === '/pools');
    document.getElementById('nav-runs').classList.toggle('active', path.startsWith('/runs'));
    current = new AbortController();
    const signal = current.signal;
    if (path === '/pools') { document.title = 'Pools · cattery'; poolsPage(signal); }
    else if (path === '/runs') { document.title = 'Runs · cattery'; runsPage(params, signal); }
    else if (path.startsWith('/runs/') && path.length > 6) {
      let jobId = null;
      try { jobId = decodeURIComponent(path.slice(6)); } catch (_) { jobId = null; }
      if (jobId === null) { setLive('off'); missingPage(); return; }
      document.title = jobId + ' · cattery';
      runPage(jobId, signal);
    } else { setLive('off'); missingPage(); }
  }

  signOutButton.addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', route);
  route();
})();
