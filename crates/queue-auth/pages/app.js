// Queue's account pages: plain JavaScript, no framework, no third-party code. Served as a file
// (the pages' Content-Security-Policy allows `script-src 'self'` only). The API is the auth
// service's JSON API under /api/v1/auth (same origin, session cookie `queue_session`); the
// WebAuthn JSON is webauthn-rs's, which the browser's own helpers read and write:
// PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON and
// credential.toJSON().
'use strict';

const API = '/api/v1/auth';
const $ = (id) => document.getElementById(id);

// ---- messages ------------------------------------------------------------------------------

function show(text, kind) {
  const m = $('message');
  m.textContent = text;
  m.className = 'message ' + (kind || 'error');
  m.hidden = !text;
}
const ok = (text) => show(text, 'ok');
const clear = () => show('', 'ok');

/** An error the API answered (`{"error":{"code","message"}}`), or a network failure. */
class ApiFailure extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function describe(err) {
  if (err instanceof ApiFailure) {
    let text = err.message;
    if (err.status === 429 && err.retryAfter) text += ` Try again in ${err.retryAfter} s.`;
    return text;
  }
  if (err && err.name === 'NotAllowedError') {
    return 'The passkey request was cancelled or timed out. Try again.';
  }
  if (err && err.name === 'InvalidStateError') {
    return 'This device already holds a passkey for your account.';
  }
  if (err && err.name === 'SecurityError') {
    let text = `Passkeys are not allowed on ${location.host}: this site's passkeys belong to another address.`;
    if (location.hostname === '127.0.0.1' || location.hostname === '[::1]') {
      text += ` Open http://localhost:${location.port}${location.pathname} instead.`;
    }
    return text;
  }
  if (err && err.name === 'NotSupportedError') {
    return 'This browser or device cannot create that kind of passkey.';
  }
  if (err instanceof TypeError) return 'Could not reach Queue. Check your connection and try again.';
  return (err && err.message) || String(err);
}

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(API + path, init);
  if (res.status === 204) return null;
  let json = null;
  try {
    json = await res.json();
  } catch (_) {
    json = null;
  }
  if (!res.ok) {
    const e = (json && json.error) || {};
    const message = e.message || `The server answered ${res.status} ${res.statusText}.`;
    throw new ApiFailure(res.status, e.code || String(res.status), message, res.headers.get('retry-after'));
  }
  return json;
}

/** Runs `fn` with `button` disabled; shows any error. */
async function busy(button, fn) {
  if (button) button.disabled = true;
  try {
    clear();
    return await fn();
  } catch (err) {
    if (err && err.name === 'AbortError') return undefined;
    show(describe(err));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function webauthnSupported() {
  return (
    window.PublicKeyCredential &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === 'function' &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'function'
  );
}

function requireWebauthn() {
  if (!webauthnSupported()) {
    throw new Error('This browser does not support passkeys (WebAuthn JSON helpers). Use a current browser.');
  }
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

function cell(tr, text) {
  const td = document.createElement('td');
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

function button(text, cls) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (cls) b.className = cls;
  return b;
}

// ---- step-up ---------------------------------------------------------------------------------

/** Runs `fn`; when the API answers `step_up_required` (adding a passkey or backup codes with a
 * session whose last passkey check is older than a few minutes), asks for the passkey once
 * (`/webauthn/reauth/…`) and runs `fn` again. */
async function withStepUp(fn) {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof ApiFailure && err.code === 'step_up_required')) throw err;
    requireWebauthn();
    const start = await api('POST', '/webauthn/reauth/start', {});
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(start.options.publicKey);
    const credential = await navigator.credentials.get({ publicKey });
    if (!credential) throw new Error('No passkey was chosen.');
    await api('POST', '/webauthn/reauth/finish', { ceremony_id: start.ceremony_id, credential: credential.toJSON() });
    return await fn();
  }
}

// ---- log in --------------------------------------------------------------------------------

async function finishLogin(start, credential) {
  await api('POST', '/webauthn/login/finish', { ceremony_id: start.ceremony_id, credential: credential.toJSON() });
  location.assign('/auth/account');
}

async function passkeyLogin(email, signal, mediation) {
  requireWebauthn();
  const start = await api('POST', '/webauthn/login/start', email ? { email } : {});
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(start.options.publicKey);
  const request = { publicKey, signal };
  if (mediation) request.mediation = mediation;
  const credential = await navigator.credentials.get(request);
  if (!credential) throw new Error('No passkey was chosen.');
  await finishLogin(start, credential);
  return true;
}

function initLogin() {
  let conditional = null; // the AbortController of a pending autofill request

  const stopConditional = () => {
    if (conditional) conditional.abort();
    conditional = null;
  };

  const startConditional = async () => {
    if (!webauthnSupported() || !PublicKeyCredential.isConditionalMediationAvailable) return;
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    const ctrl = new AbortController();
    conditional = ctrl;
    // `<body data-autofill>`: "offered" while the browser may offer passkeys in the email field's
    // autofill, "ended" once that request is over (aborted, or the browser had none to offer).
    document.body.dataset.autofill = 'offered';
    try {
      await passkeyLogin(null, ctrl.signal, 'conditional');
    } catch (err) {
      document.body.dataset.autofill = 'ended';
      // Aborted (the person used a button instead), or no passkey was picked: nothing to say.
      if (ctrl.signal.aborted || (err && (err.name === 'AbortError' || err.name === 'NotAllowedError'))) return;
      show(describe(err));
    }
  };
  // After a failed button login, offer the autofill again (after a successful one, the page is leaving).
  const again = (done) => (done === true ? undefined : startConditional());

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const email = $('login-email').value.trim();
    if (!email) {
      show('Enter your email, or log in with a passkey without it.');
      return;
    }
    stopConditional();
    busy($('login-email-button'), () => passkeyLogin(email)).then(again);
  });
  $('login-passkey-button').addEventListener('click', () => {
    stopConditional();
    busy($('login-passkey-button'), () => passkeyLogin(null)).then(again);
  });
  startConditional();
}

// ---- verify an email -----------------------------------------------------------------------

function initVerify() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  if (token) {
    // The link from the mail: confirm only when the person clicks (never on load: a mail
    // scanner or a prefetch opening the link must not use it), and drop the token from the
    // address bar.
    history.replaceState(null, '', '/auth/verify');
    $('send-form').hidden = true;
    $('link-form').hidden = false;
    $('link-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy($('link-button'), () => confirmed(api('POST', '/email/verification/confirm', { token })));
    });
  }
  let email = '';
  const send = () =>
    api('POST', '/email/verification', { email }).then(() => {
      $('sent-to').textContent = email;
      $('confirm-form').hidden = false;
      $('verify-code').focus();
      ok(`A code is on its way to ${email}.`);
    });
  $('send-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    email = $('verify-email').value.trim();
    if (!email) {
      show('Enter your email address.');
      return;
    }
    busy($('send-button'), send);
  });
  $('resend-button').addEventListener('click', () => busy($('resend-button'), send));
  $('confirm-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const code = $('verify-code').value.replace(/\s+/g, '');
    if (!/^[0-9]{8}$/.test(code)) {
      show('The code is the 8 digits from the mail.');
      return;
    }
    busy($('confirm-button'), () => confirmed(api('POST', '/email/verification/confirm', { email, code })));
  });
}

async function confirmed(pending) {
  const out = await pending;
  $('link-form').hidden = true;
  if (out.session) {
    location.assign('/auth/enroll');
  } else if (out.kept_session) {
    $('send-form').hidden = true;
    $('confirm-form').hidden = true;
    ok('The address is verified. You are still signed in as before: this link did not change your session.');
  } else {
    $('send-form').hidden = true;
    $('confirm-form').hidden = true;
    ok('Your email is verified. This account already has a passkey: log in with it, or use a backup code.');
  }
}

// ---- add a passkey (enrollment, recovery or full session) ----------------------------------

async function whoami() {
  try {
    return await api('GET', '/session');
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 401) return null;
    throw err;
  }
}

function initEnroll() {
  busy(null, async () => {
    const me = await whoami();
    if (!me) {
      $('enroll-who').textContent = '';
      show('You are not signed in. Verify your email (or use a backup code) first.');
      return;
    }
    $('enroll-who').textContent = `Adding a passkey for ${me.user.email}.`;
    if (me.session.kind === 'enrollment') {
      ok('Your email is verified. Create a passkey now: this session can do nothing else and ends in 15 minutes.');
    } else if (me.session.kind === 'recovery') {
      ok(
        'You are signed in with a backup code (your other sessions were logged out). ' +
          'Add a new passkey now: this session can do nothing else and ends in 15 minutes.',
      );
    }
    $('enroll-form').hidden = false;
    $('enroll-form').dataset.kind = me.session.kind;
  });
  $('enroll-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy($('enroll-button'), async () => {
      requireWebauthn();
      const start = await withStepUp(() => api('POST', '/webauthn/register/start', {}));
      const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(start.options.publicKey);
      const credential = await navigator.credentials.create({ publicKey });
      const name = $('passkey-name').value.trim() || undefined;
      const added = await api('POST', '/webauthn/register/finish', {
        ceremony_id: start.ceremony_id,
        credential: credential.toJSON(),
        name,
      });
      $('enroll-form').hidden = true;
      if ($('enroll-form').dataset.kind === 'full') {
        ok(`Passkey “${added.name}” added.`);
        location.assign('/auth/account');
      } else {
        ok(`Passkey “${added.name}” added.`);
        $('enroll-done').hidden = false;
      }
    });
  });
  $('enroll-logout-button').addEventListener('click', () =>
    busy($('enroll-logout-button'), async () => {
      await api('DELETE', '/session');
      location.assign('/auth/login');
    }),
  );
}

// ---- the account ---------------------------------------------------------------------------

async function loadSessions() {
  const { sessions } = await api('GET', '/sessions');
  const body = $('sessions').tBodies[0];
  body.replaceChildren();
  for (const s of sessions) {
    const tr = document.createElement('tr');
    tr.dataset.id = s.id;
    if (s.current) tr.className = 'current';
    cell(tr, when(s.created_at) + (s.current ? ' (this session)' : ''));
    cell(tr, when(s.last_seen_at));
    cell(tr, [s.ip, s.user_agent].filter(Boolean).join(' · ') || '—');
    const td = cell(tr, '');
    if (!s.current) {
      const b = button('Revoke', 'secondary revoke');
      b.addEventListener('click', () =>
        busy(b, async () => {
          await api('DELETE', `/sessions/${s.id}`);
          ok('The session was revoked.');
          await loadSessions();
        }),
      );
      td.appendChild(b);
    }
    body.appendChild(tr);
  }
}

async function loadPasskeys() {
  const { credentials } = await api('GET', '/webauthn/credentials');
  const body = $('passkeys').tBodies[0];
  body.replaceChildren();
  for (const c of credentials) {
    const tr = document.createElement('tr');
    tr.dataset.id = c.id;
    const nameCell = cell(tr, '');
    const input = document.createElement('input');
    input.value = c.name;
    input.maxLength = 100;
    input.className = 'passkey-name';
    input.setAttribute('aria-label', 'Passkey name');
    nameCell.appendChild(input);
    cell(tr, when(c.created_at));
    cell(tr, when(c.last_used_at));
    const td = cell(tr, '');
    const rename = button('Rename', 'secondary rename');
    rename.addEventListener('click', () =>
      busy(rename, async () => {
        const out = await api('PATCH', `/webauthn/credentials/${c.id}`, { name: input.value.trim() });
        ok(`Renamed to “${out.name}”.`);
        await loadPasskeys();
      }),
    );
    const remove = button('Remove', 'danger remove');
    remove.addEventListener('click', () =>
      busy(remove, async () => {
        if (!confirm(`Remove the passkey “${c.name}”? Your other sessions will be logged out.`)) return;
        await api('DELETE', `/webauthn/credentials/${c.id}`);
        ok('The passkey was removed; your other sessions were logged out.');
        await Promise.all([loadPasskeys(), loadSessions()]);
      }),
    );
    td.append(rename, ' ', remove);
    body.appendChild(tr);
  }
}

async function loadRemaining() {
  try {
    const { remaining } = await api('GET', '/backup-codes');
    $('codes-remaining').textContent = remaining
      ? `You have ${remaining} unused backup code${remaining === 1 ? '' : 's'}.`
      : 'You have no backup codes.';
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 404) {
      $('codes-remaining').textContent = 'Backup codes are not available.';
      $('generate-codes-button').hidden = true;
      return;
    }
    throw err;
  }
}

function initAccount() {
  busy(null, async () => {
    const me = await whoami();
    if (!me) {
      $('account-who').textContent = '';
      show('You are not signed in (or your session ended).');
      const a = document.createElement('a');
      a.href = '/auth/login';
      a.textContent = 'Log in';
      $('account-who').appendChild(a);
      return;
    }
    $('account-who').textContent = `Signed in as ${me.user.email}.`;
    $('account-who').dataset.kind = me.session.kind;
    $('logout-button').hidden = false;
    if (me.session.kind !== 'full') {
      $('account-restricted').hidden = false;
      return;
    }
    $('account-full').hidden = false;
    await Promise.all([loadSessions(), loadPasskeys(), loadRemaining()]);
  });
  $('logout-button').addEventListener('click', () =>
    busy($('logout-button'), async () => {
      await api('DELETE', '/session');
      location.assign('/auth/login');
    }),
  );
  $('revoke-others-button').addEventListener('click', () =>
    busy($('revoke-others-button'), async () => {
      const { revoked } = await api('POST', '/sessions/revoke-others', {});
      ok(`${revoked} other session${revoked === 1 ? ' was' : 's were'} logged out.`);
      await loadSessions();
    }),
  );
  $('generate-codes-button').addEventListener('click', () =>
    busy($('generate-codes-button'), async () => {
      const { codes } = await withStepUp(() => api('POST', '/backup-codes', {}));
      const list = $('codes-list');
      list.replaceChildren(
        ...codes.map((c) => {
          const li = document.createElement('li');
          li.textContent = c;
          return li;
        }),
      );
      $('codes-shown').hidden = false;
      ok('New backup codes were generated; any older ones no longer work.');
      await loadRemaining();
    }),
  );
}

// ---- redeem a backup code ------------------------------------------------------------------

function initRecover() {
  $('recover-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const email = $('recover-email').value.trim();
    const code = $('recover-code').value.trim();
    if (!email || !code) {
      show('Enter your email and one of your backup codes.');
      return;
    }
    busy($('recover-button'), async () => {
      await api('POST', '/backup-codes/redeem', { email, code });
      location.assign('/auth/enroll');
    });
  });
}

const pages = { login: initLogin, verify: initVerify, enroll: initEnroll, account: initAccount, recover: initRecover };
const init = pages[document.body.dataset.page];
if (init) init();
