// Issue 19's first "Must show": one person, one browser (headless Chromium, one virtual WebAuthn
// authenticator over CDP), one front door (the proxy with the shipped route table,
// deploy/local/routes.toml), across the cutover and back:
//   phase 1, at Raptor: signs in with her password, registers a passkey, signs out, signs in with
//   the passkey, generates backup codes, opens /account (Raptor's page);
//   ── pause "phase-3": the test runs `queuectl legacy import` and `queuectl proxy phase 3` ──
//   phase 3, at Queue: the same page load (/account) is still signed in, no prompt, and now
//   Queue's page; she signs out, signs in with the same authenticator by email, signs out, signs
//   in usernameless; signs out and redeems one of Raptor's backup codes at Queue (a recovery
//   session), adds a second passkey there, signs out, and the same code fails a second time;
//   she signs in with a passkey and sees both passkeys;
//   ── pause "rollback": the test waits for the write-back and runs `queuectl proxy rollback` ──
//   phase 1 again, at Raptor: /account is Raptor's page and her Raptor session, signed out at
//   Queue, is over (Raptor sends her to sign in); with only the passkey added at Queue left in
//   the authenticator, Raptor signs her in with it.
// A screenshot after each step goes to <screenshot dir>. Every request the browser makes must go
// to the proxy's origin; after each part it prints "requests <part>: N", and at each pause
// "pause <name>", then waits for a line on stdin ("go" to go on; anything else ends the run),
// so the Rust test can act between the parts and compare what the proxy forwarded, Raptor and
// auth served. Exit 0 when every step held; 1 with the reason otherwise.
//
//   node cutover.mjs <proxy url, http://localhost:PORT> <screenshot dir>
//
// Started by crates/queue-e2e/tests/e2e/cutover_browser.rs (`cargo test -p queue-e2e --test e2e
// cutover_in_chromium`). The demo data is legacy/raptor/README.md's.
import { createInterface } from 'node:readline';
import { credentials, device, launch, Run } from './harness.mjs';

const [base, shotDir] = process.argv.slice(2);
if (!base || !shotDir) {
  console.error('usage: node cutover.mjs <proxy url> <screenshot dir>');
  process.exit(2);
}
const ADMIN = { email: 'admin@acme.test', password: 'raptor-admin-demo' };
const RAPTOR_KEY = 'Ada’s laptop';
const QUEUE_KEY = 'Ada’s phone';

const run = new Run(shotDir);
const fail = (message) => run.fail(message);
const check = (cond, message) => run.check(cond, message);
const step = (name, fn) => run.step(name, page, fn);
let requests = [];
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Prints what the part made ("requests <part>: N"), checks they all went to the proxy, and
 * starts counting the next part. */
function endPart(part) {
  const elsewhere = requests.filter((r) => !r.split(' ')[1].startsWith(`${base}/`) && !r.split(' ')[1].startsWith('data:'));
  check(elsewhere.length === 0, `every request goes to ${base}: ${elsewhere.join(', ')}`);
  console.log(`requests ${part}: ${requests.length}`);
  requests = [];
}

/** "pause <name>", then waits for the test's "go". */
async function pause(name) {
  console.log(`pause ${name}`);
  const { value, done } = await stdin.next();
  if (done || value.trim() !== 'go') fail(`the test ended the run at "${name}": ${done ? 'stdin closed' : value}`);
}

async function mainText() {
  return ((await page.locator('main').textContent()) || '').replace(/\s+/g, ' ').trim();
}

/** Waits for `path` and fails with what the page shows when it does not come. */
async function expectPath(path) {
  try {
    await page.waitForURL(`${base}${path}`);
  } catch (e) {
    fail(`expected to reach ${path}, still at ${page.url()}; the page says: ${await mainText()}`);
  }
}

/** Queue's page message, once it says `expected`. */
const expectMessage = (expected) => run.expectMessage(page, expected);

/** Who answered a page: Raptor's pages are titled "… · Raptor" and come from werkzeug; Queue's
 * are titled "… · Queue" and carry auth's strict Content-Security-Policy. */
async function servedBy(res) {
  const title = await page.title();
  const server = res.headers()['server'] || '';
  const csp = res.headers()['content-security-policy'] || '';
  if (title.endsWith(' · Raptor') && !csp.includes("frame-ancestors 'none'")) return `raptor (${title}; ${server})`;
  if (title.endsWith(' · Queue') && csp.includes("script-src 'self'") && !server.includes('Werkzeug')) return `queue (${title})`;
  return `unknown (${title}; server "${server}"; csp "${csp}")`;
}

async function cookie(name) {
  return (await context.cookies(base)).find((c) => c.name === name);
}

// ---- at Raptor ----------------------------------------------------------------------------

async function raptorSignOut(where = 'nav') {
  await page.locator(`${where} form[action="/signout"] button`).click();
  await expectPath('/');
  check(!(await cookie('raptor_session')), 'no raptor_session cookie left after signing out at Raptor');
}

/** Raptor's passkey button on its /signin page, usernameless. */
async function raptorPasskeySignIn() {
  await presence(true);
  const res = await page.goto(`${base}/signin`);
  check((await servedBy(res)).startsWith('raptor'), `Raptor's sign-in page: ${await servedBy(res)}`);
  await page.locator('#passkey').click();
  try {
    await page.waitForURL(`${base}/account`);
  } catch (e) {
    fail(`Raptor's passkey sign-in did not reach /account; the page says: ${await page.locator('#passkey-error').textContent()}`);
  }
  check((await mainText()).includes(ADMIN.email), `Raptor's account page names ${ADMIN.email}: ${await mainText()}`);
}

// ---- at Queue -----------------------------------------------------------------------------

async function expectQueueAccount() {
  await expectPath('/auth/account');
  await page.locator('#account-full').waitFor({ state: 'visible' });
  const who = await page.locator('#account-who').textContent();
  check(who.includes(ADMIN.email), `Queue's account page names ${ADMIN.email}: ${who}`);
}

/**
 * Whether the virtual authenticator answers by itself (a person touching it). Off before Queue's
 * login page opens after a sign-out: its passkey autofill asks on load, and an authenticator that
 * answers at once would sign her straight back in.
 */
async function presence(enabled) {
  await me.cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId: me.authenticatorId, enabled });
}

async function queueSignOut(button = '#logout-button') {
  await presence(false);
  // The login page's autofill asks auth on load: waited for, so that no request is cut off by
  // the next navigation (the counts compare every request with what auth served).
  const asked = page.waitForResponse((r) => r.url() === `${base}/api/v1/auth/webauthn/login/start`);
  await page.locator(button).click();
  await expectPath('/auth/login');
  await asked;
}

/**
 * Opens Queue's login page at `path` with the authenticator emptied for a moment, so the page's
 * passkey autofill ends with nothing to offer (a virtual authenticator answers autofill at once),
 * then puts the credentials back: the button clicked next, not the autofill, signs in.
 */
async function queueLoginPage(path) {
  const held = await credentials(me);
  for (const c of held) await me.cdp.send('WebAuthn.removeCredential', { authenticatorId: me.authenticatorId, credentialId: c.credentialId });
  await presence(true);
  const res = await page.goto(`${base}${path}`);
  check((await servedBy(res)).startsWith('queue'), `Queue's login page at ${path}: ${await servedBy(res)}`);
  await page.locator('body[data-autofill="ended"]').waitFor({ state: 'attached' });
  for (const c of held) await me.cdp.send('WebAuthn.addCredential', { authenticatorId: me.authenticatorId, credential: c });
}

async function recover(code) {
  await page.goto(`${base}/auth/recover`);
  await page.locator('#recover-email').fill(ADMIN.email);
  await page.locator('#recover-code').fill(code);
  await page.locator('#recover-button').click();
}

const browser = await launch();
const me = await device(browser, 'browser', run);
const { context, page } = me;
// The cache off, so that every request the page makes reaches the proxy (Queue's favicon is
// cached for a day) and the counts compare with what the proxy forwarded.
await me.cdp.send('Network.enable');
await me.cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
context.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));

let exit = 0;
let raptorKeyId = null; // the credential id of the passkey registered at Raptor
try {
  // ---- phase 1: everything at Raptor -------------------------------------------------------
  await step('phase-1-home-is-raptors', async () => {
    const res = await page.goto(`${base}/`);
    check(res.status() === 200, `the home page answers 200: ${res.status()}`);
    check((await servedBy(res)).startsWith('raptor'), `Raptor's home page: ${await servedBy(res)}`);
  });

  await step('signs-in-at-raptor-with-her-password', async () => {
    await page.goto(`${base}/signin`);
    await page.locator('form[action="/signin"] input[name=email]').fill(ADMIN.email);
    await page.locator('form[action="/signin"] input[name=password]').fill(ADMIN.password);
    await page.locator('form[action="/signin"] button').click();
    await expectPath('/account');
    check((await mainText()).includes('No passkey yet.'), `no passkey yet: ${await mainText()}`);
  });

  await step('registers-a-passkey-at-raptor', async () => {
    await page.locator('#passkey-name').fill(RAPTOR_KEY);
    await page.locator('#add-passkey').click();
    try {
      await page.locator('#passkeys li').filter({ hasText: RAPTOR_KEY }).waitFor();
    } catch (e) {
      fail(`the passkey is not listed; the page says: ${await page.locator('#passkey-error').textContent()}`);
    }
    const creds = await credentials(me);
    check(creds.length === 1 && creds[0].isResidentCredential, `one discoverable credential: ${JSON.stringify(creds)}`);
    raptorKeyId = creds[0].credentialId;
  });

  await step('signs-in-at-raptor-with-the-passkey', async () => {
    await raptorSignOut('main');
    await raptorPasskeySignIn();
  });

  let codes = [];
  await step('generates-backup-codes-at-raptor', async () => {
    await page.locator('form[action="/account/backup-codes"] button').click();
    await page.locator('#codes li').first().waitFor();
    codes = await page.locator('#codes li code').allTextContents();
    check(codes.length >= 2, `a set of backup codes: ${codes}`);
  });

  await step('opens-her-account-at-raptor', async () => {
    const res = await page.goto(`${base}/account`);
    check((await servedBy(res)).startsWith('raptor'), `Raptor's account page: ${await servedBy(res)}`);
    check((await mainText()).includes(`${codes.length} unused backup codes`), `the codes are counted: ${await mainText()}`);
    check(!!(await cookie('raptor_session')), 'signed in at Raptor (raptor_session)');
    check(!(await cookie('queue_session')), 'no queue_session yet');
  });
  endPart('phase-1');
  await pause('phase-3');

  // ---- phase 3: the same URLs, now Queue ---------------------------------------------------
  await step('the-same-page-load-is-signed-in-and-served-by-queue', async () => {
    const res = await page.reload();
    check(res.status() === 200, `/account answers 200: ${res.status()}`);
    check(page.url() === `${base}/account`, `still /account, no prompt, no redirect: ${page.url()}`);
    check((await servedBy(res)).startsWith('queue'), `Queue's account page at /account: ${await servedBy(res)}`);
    await page.locator('#account-full').waitFor({ state: 'visible' });
    const who = await page.locator('#account-who').textContent();
    check(who.includes(ADMIN.email), `signed in as ${ADMIN.email}: ${who}`);
    check(!!(await cookie('queue_session')), 'the proxy swapped in a queue_session cookie');
    const names = await page.locator('#passkeys input.passkey-name').evaluateAll((els) => els.map((e) => e.value));
    check(JSON.stringify(names) === JSON.stringify([RAPTOR_KEY]), `Raptor's passkey is listed at Queue: ${names}`);
    await page.locator('#codes-remaining').filter({ hasText: `${codes.length} unused` }).waitFor();
  });

  await step('signs-out-at-queue', async () => {
    await queueSignOut();
    // Her Raptor cookie is still in the browser, but it no longer signs her in at Queue.
    const res = await page.goto(`${base}/account`);
    check((await servedBy(res)).startsWith('queue'), `Queue's account page: ${await servedBy(res)}`);
    await expectMessage('not signed in');
  });

  await step('signs-in-at-queue-by-email-with-the-same-authenticator', async () => {
    await queueLoginPage('/signin');
    await page.locator('#login-email').fill(ADMIN.email);
    const started = page.waitForResponse((r) => r.url() === `${base}/api/v1/auth/webauthn/login/start`);
    await page.locator('#login-email-button').click();
    // By email: auth found her and offered her passkey (allowCredentials), not a usernameless
    // request.
    const offered = (await (await started).json()).options.publicKey.allowCredentials || [];
    check(offered.length === 1, `auth offered her one passkey by email: ${JSON.stringify(offered)}`);
    await expectQueueAccount();
  });

  await step('signs-in-at-queue-usernameless', async () => {
    await queueSignOut();
    await queueLoginPage('/auth/login');
    await page.locator('#login-passkey-button').click();
    await expectQueueAccount();
  });

  await step('a-raptor-backup-code-redeems-at-queue', async () => {
    await queueSignOut();
    await recover('0000-0000-00000');
    await expectMessage('the email or code is not valid');
    await recover(codes[0]);
    await expectPath('/auth/enroll');
    await page.locator('#enroll-form').waitFor({ state: 'visible' });
    const kind = await page.evaluate(async () => (await (await fetch('/api/v1/auth/session')).json()).session.kind);
    check(kind === 'recovery', `a recovery session: ${kind}`);
  });

  await step('adds-a-second-passkey-at-queue', async () => {
    // The authenticator holds Raptor's passkey, which Queue lists in excludeCredentials: out of
    // it for the registration, back after, so one authenticator holds both. The new passkey has
    // the same user handle (Raptor's, kept by the import), and an authenticator keeps one
    // discoverable credential per account: Raptor's comes back as a non-discoverable one (used
    // when a sign-in by email lists it).
    const raptorKey = (await credentials(me)).find((c) => c.credentialId === raptorKeyId);
    check(!!raptorKey, 'the authenticator holds the passkey registered at Raptor');
    await me.cdp.send('WebAuthn.removeCredential', { authenticatorId: me.authenticatorId, credentialId: raptorKeyId });
    await presence(true);
    await page.locator('#passkey-name').fill(QUEUE_KEY);
    await page.locator('#enroll-button').click();
    await page.locator('#enroll-done').waitFor({ state: 'visible' });
    await expectMessage(`Passkey “${QUEUE_KEY}” added`);
    const [added] = await credentials(me);
    check(added.userHandle === raptorKey.userHandle, `the new passkey has Raptor's user handle: ${added.userHandle} / ${raptorKey.userHandle}`);
    const { userHandle, ...serverSide } = raptorKey;
    await me.cdp.send('WebAuthn.addCredential', {
      authenticatorId: me.authenticatorId,
      credential: { ...serverSide, isResidentCredential: false },
    });
    const held = await credentials(me);
    check(held.length === 2, `the authenticator holds both passkeys: ${held.length}`);
    console.log(`queue passkey: ${added.credentialId}`);
  });

  await step('the-same-code-fails-a-second-time', async () => {
    await queueSignOut('#enroll-logout-button');
    await recover(codes[0]);
    await expectMessage('the email or code is not valid');
  });

  await step('signs-in-at-queue-and-sees-both-passkeys', async () => {
    await queueLoginPage('/signin');
    await page.locator('#login-passkey-button').click();
    await expectQueueAccount();
    const names = await page.locator('#passkeys input.passkey-name').evaluateAll((els) => els.map((e) => e.value));
    check(names.includes(RAPTOR_KEY) && names.includes(QUEUE_KEY), `both passkeys listed: ${names}`);
    await page.locator('#codes-remaining').filter({ hasText: `${codes.length - 1} unused` }).waitFor();
  });
  endPart('phase-3');
  await pause('rollback');

  // ---- rolled back to phase 1: Raptor again ------------------------------------------------
  await step('rolled-back-raptor-answers-and-her-signed-out-session-is-over', async () => {
    // Her first sign-out at Queue ended the carried-over session under both names: auth cleared
    // queue_session and the proxy raptor_session (the same session), and the write-back revoked it
    // at Raptor (the test checked Raptor's row before the rollback).
    check(!(await cookie('raptor_session')), 'the sign-out at Queue cleared raptor_session too');
    const res = await page.goto(`${base}/account`);
    // Raptor's /account sends a visitor without a live Raptor session to its /signin.
    check(page.url() === `${base}/signin`, `Raptor sends her to sign in (the session she ended at Queue is over): ${page.url()}`);
    check((await servedBy(res)).startsWith('raptor'), `Raptor's sign-in page: ${await servedBy(res)}`);
  });

  await step('raptor-signs-her-in-with-the-passkey-added-at-queue', async () => {
    const held = await credentials(me);
    const queueKey = held.find((c) => c.credentialId !== raptorKeyId);
    check(held.length === 2 && !!queueKey, `the authenticator holds both passkeys: ${held.length}`);
    // Only the passkey added at Queue stays in the authenticator.
    await me.cdp.send('WebAuthn.removeCredential', { authenticatorId: me.authenticatorId, credentialId: raptorKeyId });
    await raptorPasskeySignIn();
    check((await mainText()).includes(QUEUE_KEY), `Raptor lists the passkey added at Queue: ${await mainText()}`);
    // The code she used at Queue is used at Raptor too.
    check((await mainText()).includes(`${codes.length - 1} unused backup codes`), `one code used: ${await mainText()}`);
    const [used] = await credentials(me);
    check(used.credentialId === queueKey.credentialId && used.signCount > queueKey.signCount, 'the passkey added at Queue signed');
    console.log(`raptor signed in with: ${used.credentialId}`);
  });
  endPart('rollback');
  run.passed();
} catch (err) {
  exit = 1;
  await run.failed(err, [me]);
} finally {
  await browser.close();
}
process.exit(exit);
