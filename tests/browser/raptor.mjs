// Raptor, the legacy app, as its people meet it: headless Chromium with a virtual WebAuthn
// authenticator (CDP), through the proxy in phase 1 (every request goes to Raptor):
//   Raptor's home page → the demo admin signs in with her password (a wrong one first) → adds a
//   passkey on /account → signs out → signs in with the passkey, usernameless → signs out → signs
//   in with the passkey by email → /tickets lists T-1001..T-1003 → she revokes the agent's grant
//   (Raptor's grant API, from the page) → signs out; the viewer (password) sees only T-1002 and
//   gets 403 at /tickets/T-1001; the agent, now a customer without grants, gets 403 at /tickets.
// A screenshot after each step goes to <screenshot dir>. Every request the browser makes must go
// to the proxy's origin; the last line says how many it made ("requests: N"), for the Rust test to
// compare with what the proxy forwarded and Raptor served. Exit 0 when every step held; 1 with
// the reason otherwise.
//
//   node raptor.mjs <proxy url, http://localhost:PORT> <screenshot dir>
//
// Started by crates/queue-e2e/tests/e2e/raptor.rs (`cargo test -p queue-e2e --test e2e raptor`).
// The demo data is legacy/raptor/README.md's.
import { credentials, device, launch, Run } from './harness.mjs';

const [base, shotDir] = process.argv.slice(2);
if (!base || !shotDir) {
  console.error('usage: node raptor.mjs <proxy url> <screenshot dir>');
  process.exit(2);
}
const ACME = '5a3c0e1e-0000-4000-8000-00000000a0c1';
const ADMIN = { email: 'admin@acme.test', password: 'raptor-admin-demo' };
const AGENT = { email: 'agent@acme.test', password: 'raptor-agent-demo' };
const VIEWER = { email: 'viewer@acme.test', password: 'raptor-viewer-demo' };

const run = new Run(shotDir);
const fail = (message) => run.fail(message);
const check = (cond, message) => run.check(cond, message);
const step = (name, fn) => run.step(name, page, fn);
const requests = [];

/** Waits for `path` and fails with what the page shows when it does not come. */
async function expectPath(path) {
  try {
    await page.waitForURL(`${base}${path}`);
  } catch (e) {
    fail(`expected to reach ${path}, still at ${page.url()}; the page says: ${await mainText()}`);
  }
}

async function mainText() {
  return ((await page.locator('main').textContent()) || '').replace(/\s+/g, ' ').trim();
}

/** Whom the home page says is signed in. */
async function who() {
  await page.goto(`${base}/`);
  return ((await page.locator('#who').textContent()) || '').trim();
}

async function signInWithPassword({ email, password }) {
  await page.goto(`${base}/signin`);
  await page.locator('form[action="/signin"] input[name=email]').fill(email);
  await page.locator('form[action="/signin"] input[name=password]').fill(password);
  await page.locator('form[action="/signin"] button').click();
  await expectPath('/account');
  check((await mainText()).includes(email), `the account page names ${email}: ${await mainText()}`);
}

/** The "Sign out" button in the navigation bar (`nav`) or on the account page (`main`). */
async function signOut(where = 'nav') {
  await page.locator(`${where} form[action="/signout"] button`).click();
  await expectPath('/');
  const said = ((await page.locator('#who').textContent()) || '').trim();
  check(said === 'You are not signed in.', `signed out: the home page says "${said}"`);
  const cookies = await context.cookies(base);
  check(!cookies.some((c) => c.name === 'raptor_session'), `no raptor_session cookie left: ${JSON.stringify(cookies)}`);
}

/** The passkey button on /signin, with `email` typed or (null) usernameless. */
async function signInWithPasskey(email) {
  await page.goto(`${base}/signin`);
  if (email) await page.locator('#email').fill(email);
  await page.locator('#passkey').click();
  try {
    await page.waitForURL(`${base}/account`);
  } catch (e) {
    fail(`the passkey sign-in did not reach /account; the page says: ${await page.locator('#passkey-error').textContent()}`);
  }
  check((await mainText()).includes(ADMIN.email), `the account page names ${ADMIN.email}: ${await mainText()}`);
}

async function ticketsListed() {
  return page.locator('#tickets li a').allTextContents();
}

/** GET `path` as a navigation: (status, the page's main text). */
async function visit(path) {
  const res = await page.goto(`${base}${path}`);
  return [res.status(), await mainText()];
}

const browser = await launch();
const me = await device(browser, 'browser', run);
const { context, page } = me;
context.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));

let exit = 0;
try {
  await step('home-is-raptors', async () => {
    const res = await page.goto(`${base}/`);
    check(res.status() === 200, `the home page answers 200: ${res.status()}`);
    check((await page.title()) === 'Home · Raptor', `Raptor's home page: "${await page.title()}"`);
    check((await who()) === 'You are not signed in.', `nobody is signed in: ${await who()}`);
  });

  await step('admin-signs-in-with-password', async () => {
    await page.goto(`${base}/signin`);
    await page.locator('form[action="/signin"] input[name=email]').fill(ADMIN.email);
    await page.locator('form[action="/signin"] input[name=password]').fill('not-her-password');
    await page.locator('form[action="/signin"] button').click();
    await page.locator('#error').filter({ hasText: 'wrong email or password' }).waitFor();
    await signInWithPassword(ADMIN);
    check((await mainText()).includes('No passkey yet.'), `no passkey yet: ${await mainText()}`);
  });

  await step('admin-adds-a-passkey', async () => {
    await page.locator('#passkey-name').fill('Ada’s laptop');
    await page.locator('#add-passkey').click();
    try {
      await page.locator('#passkeys li').filter({ hasText: 'Ada’s laptop' }).waitFor();
    } catch (e) {
      fail(`the passkey is not listed; the page says: ${await page.locator('#passkey-error').textContent()}`);
    }
    const creds = await credentials(me);
    check(creds.length === 1 && creds[0].isResidentCredential, `one discoverable credential: ${JSON.stringify(creds)}`);
    check(creds[0].rpId === 'localhost', `relying party localhost: ${creds[0].rpId}`);
  });

  await step('admin-signs-out', async () => {
    await signOut('main');
    const [status] = await visit('/account');
    check(page.url() === `${base}/signin` && status === 200, `/account sends a signed-out visitor to /signin: ${page.url()}`);
  });

  await step('admin-signs-in-with-the-passkey-usernameless', async () => {
    await signInWithPasskey(null);
    check((await credentials(me))[0].signCount >= 1, 'the authenticator signed');
  });

  await step('admin-signs-out-again', async () => {
    await signOut();
  });

  await step('admin-signs-in-with-the-passkey-by-email', async () => {
    await signInWithPasskey(ADMIN.email);
  });

  await step('admin-sees-every-ticket', async () => {
    const [status, text] = await visit('/tickets');
    check(status === 200, `/tickets answers 200: ${status} ${text}`);
    const listed = await ticketsListed();
    check(JSON.stringify(listed) === JSON.stringify(['T-1001', 'T-1002', 'T-1003']), `T-1001..T-1003: ${listed}`);
  });

  await step('admin-revokes-the-agents-grant', async () => {
    // Raptor's grant API, called from its page as its own scripts would (same origin, the cookie).
    const done = await page.evaluate(async (tenant) => {
      const r = await fetch(`/api/rbac/grants?tenant_id=${tenant}`);
      const { grants } = await r.json();
      const agent = grants.filter((g) => g.role === 'agent');
      if (agent.length !== 1) return { error: `one agent grant: ${JSON.stringify(grants)}` };
      const revoked = await postJSON(`/api/rbac/grants/${agent[0].id}/revoke`, { reason: 'e2e: left the team' });
      return revoked.grant;
    }, ACME);
    check(!done.error, done.error);
    check(done.revoked_at && done.role === 'agent', `the agent's grant is revoked: ${JSON.stringify(done)}`);
    await page.goto(`${base}/account`);
    await signOut();
  });

  await step('viewer-sees-only-T-1002', async () => {
    await signInWithPassword(VIEWER);
    const [status, text] = await visit('/tickets');
    check(status === 200, `/tickets answers 200: ${status} ${text}`);
    const listed = await ticketsListed();
    check(JSON.stringify(listed) === JSON.stringify(['T-1002']), `only T-1002: ${listed}`);
    const [one] = await visit('/tickets/T-1002');
    check(one === 200, `/tickets/T-1002 answers 200: ${one}`);
  });

  await step('viewer-gets-403-at-T-1001', async () => {
    const [status, text] = await visit('/tickets/T-1001');
    check(status === 403, `/tickets/T-1001 answers 403: ${status}`);
    check(text.includes('you need ticket.read on T-1001'), `the page says why: ${text}`);
  });

  await step('customer-without-grants-gets-403', async () => {
    await signOut();
    await signInWithPassword(AGENT);
    const [status, text] = await visit('/tickets');
    check(status === 403, `/tickets answers 403 to a customer without grants: ${status} ${text}`);
    check(text.includes('you need ticket.read to see tickets'), `the page says why: ${text}`);
  });

  await step('agent-signs-out', async () => {
    await signOut();
  });

  const elsewhere = requests.filter((r) => !r.split(' ')[1].startsWith(`${base}/`) && !r.split(' ')[1].startsWith('data:'));
  check(elsewhere.length === 0, `every request goes to ${base}: ${elsewhere.join(', ')}`);
  run.passed();
  console.log(`requests: ${requests.length}`);
} catch (err) {
  exit = 1;
  await run.failed(err, [me]);
} finally {
  await browser.close();
}
process.exit(exit);
