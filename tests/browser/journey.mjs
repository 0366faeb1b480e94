// The whole journey of a person through Queue's account pages, in headless Chromium with a
// virtual WebAuthn authenticator (CDP), through the proxy:
//   verify email → enroll a passkey → log out → log in usernameless → list and revoke another
//   session → rename the passkey → generate backup codes → log out → redeem one (recovery
//   session) → add a second passkey (on a new device) → log in with it.
// A screenshot after each step goes to <screenshot dir>. Exit 0 when every step held; 1 with the
// reason otherwise.
//
//   node journey.mjs <proxy url, http://localhost:PORT> <dev mail dir> <screenshot dir>
//
// Started by crates/queue-e2e/tests/e2e/browser.rs (`cargo test -p queue-e2e browser`).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { credentials, device as openDevice, launch, newAuthenticator, Run, STEP_TIMEOUT } from './harness.mjs';

const [base, mailDir, shotDir] = process.argv.slice(2);
if (!base || !mailDir || !shotDir) {
  console.error('usage: node journey.mjs <proxy url> <mail dir> <screenshot dir>');
  process.exit(2);
}
const EMAIL = 'ada@example.com';

const run = new Run(shotDir);
const fail = (message) => run.fail(message);
const check = (cond, message) => run.check(cond, message);
const step = (name, dev, fn) => run.step(name, dev.page, fn);
const device = (browser, name) => openDevice(browser, name, run);

/** The message the page shows (errors and confirmations), once it says `expected`. */
const expectMessage = (page, expected) => run.expectMessage(page, expected);

/** Waits for `url` and fails with the page's message (if any) when it does not come. */
async function expectUrl(page, path) {
  try {
    await page.waitForURL(`${base}${path}`);
  } catch (e) {
    const m = page.locator('#message');
    const shown = (await m.isVisible()) ? await m.textContent() : '(no message)';
    fail(`expected to reach ${path}, still at ${page.url()}; the page says: ${shown}`);
  }
}

/** The verification code from the dev mailer's newest message to `email`. */
async function codeFromMail(email) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    let files = [];
    try {
      files = readdirSync(mailDir);
    } catch (_) {
      files = [];
    }
    for (const f of files) {
      const text = readFileSync(join(mailDir, f), 'utf8');
      const m = text.includes(`To: ${email}\n`) && text.match(/code is (\d{8})/);
      if (m) return m[1];
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  fail(`no verification mail to ${email} in ${mailDir} within 20 s`);
}

async function waitRows(page, table, n) {
  await page.waitForFunction(
    ([t, want]) => document.querySelectorAll(`#${t} tbody tr`).length === want,
    [table, n],
    { timeout: STEP_TIMEOUT },
  );
}

async function expectAccount(page) {
  await expectUrl(page, '/auth/account');
  await page.locator('#account-full').waitFor({ state: 'visible' });
  const who = await page.locator('#account-who').textContent();
  check(who.includes(EMAIL), `the account page names ${EMAIL}: ${who}`);
}

/**
 * Whether the virtual authenticator answers by itself (a person touching it). With it off, the
 * login page's autofill request stays pending, as it does for a person who has not picked a
 * passkey yet (with it on, Chromium's virtual authenticator answers an autofill request at once).
 */
async function presence(dev, enabled) {
  await dev.cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId: dev.authenticatorId, enabled });
}

/** The login page's passkey autofill (conditional mediation): the page asks on load, the
 * authenticator (standing in for the person picking the offered passkey) answers. */
async function loginByAutofill(dev) {
  await presence(dev, true);
  if (dev.page.url().endsWith('/auth/login')) await dev.page.reload();
  else await dev.page.goto(`${base}/auth/login`);
  await expectAccount(dev.page);
}

/** The modal usernameless login ("Log in with a passkey"), on a device whose authenticator gets
 * `credential` only once the page's autofill request has ended with nothing to offer, so that
 * the button, not the autofill, signs in. */
async function loginByButton(dev, credential) {
  await dev.page.goto(`${base}/auth/login`);
  await dev.page.locator('body[data-autofill="ended"]').waitFor({ state: 'attached' });
  check(!(await dev.page.locator('#message').isVisible()), 'an autofill with nothing to offer shows no error');
  await dev.cdp.send('WebAuthn.addCredential', { authenticatorId: dev.authenticatorId, credential });
  await dev.page.locator('#login-passkey-button').click();
  await expectAccount(dev.page);
}

const browser = await launch();
let exit = 0;
const laptop = await device(browser, 'laptop');
let phone = null;
try {
  const { page } = laptop;

  // The pages carry a strict policy, and load under it (no violation is reported at any step).
  const res = await page.goto(`${base}/auth/verify`);
  const csp = res.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `strict CSP: ${csp}`);

  await step('verify-email', laptop, async () => {
    await page.locator('#verify-email').fill(EMAIL);
    await page.locator('#send-button').click();
    await page.locator('#confirm-form').waitFor({ state: 'visible' });
    // A wrong code first: the API's message is shown.
    await page.locator('#verify-code').fill('00000000');
    await page.locator('#confirm-button').click();
    await expectMessage(page, 'the code or link is invalid or has expired');
    await page.locator('#verify-code').fill(await codeFromMail(EMAIL));
    await page.locator('#confirm-button').click();
    await expectUrl(page, '/auth/enroll');
    await page.locator('#enroll-form').waitFor({ state: 'visible' });
  });

  await step('enroll-passkey', laptop, async () => {
    await page.locator('#passkey-name').fill('Laptop');
    await page.locator('#enroll-button').click();
    await page.locator('#enroll-done').waitFor({ state: 'visible' });
    await expectMessage(page, 'Passkey “Laptop” added');
    const creds = await credentials(laptop);
    check(creds.length === 1 && creds[0].isResidentCredential, `one discoverable credential: ${JSON.stringify(creds)}`);
  });

  await step('log-out', laptop, async () => {
    await presence(laptop, false);
    await page.locator('#enroll-logout-button').click();
    await expectUrl(page, '/auth/login');
    // The login page offers passkey autofill: the email field asks for it, the browser has it,
    // and the page's request is pending (this authenticator waits for a touch).
    await page.locator('body[data-autofill="offered"]').waitFor({ state: 'attached' });
    check(
      (await page.content()).includes('autocomplete="username webauthn"'),
      'the email field offers passkey autofill',
    );
    const autofill = await page.evaluate(() => PublicKeyCredential.isConditionalMediationAvailable());
    check(autofill, 'conditional mediation is available in this Chromium');
  });

  await step('log-in-usernameless-by-autofill', laptop, async () => {
    await loginByAutofill(laptop);
    await waitRows(page, 'sessions', 1);
    await waitRows(page, 'passkeys', 1);
  });

  // A second device holding the same (synced) passkey signs in too; the laptop revokes it.
  phone = await device(browser, 'phone');
  const [cred] = await credentials(laptop);
  const synced = {
    credentialId: cred.credentialId,
    isResidentCredential: true,
    rpId: cred.rpId,
    privateKey: cred.privateKey,
    userHandle: cred.userHandle,
    signCount: cred.signCount,
  };
  await step('second-device-logs-in-by-button', phone, async () => {
    await loginByButton(phone, synced);
  });

  await step('list-sessions', laptop, async () => {
    await page.reload();
    await waitRows(page, 'sessions', 2);
  });

  await step('revoke-other-session', laptop, async () => {
    await page.locator('#sessions tbody tr:not(.current) button.revoke').click();
    await expectMessage(page, 'The session was revoked');
    await waitRows(page, 'sessions', 1);
    check((await page.locator('#sessions tbody tr.current').count()) === 1, 'the remaining session is this one');
  });

  await step('revoked-device-is-signed-out', phone, async () => {
    await phone.page.reload();
    await expectMessage(phone.page, 'not signed in');
  });

  await step('rename-passkey', laptop, async () => {
    await page.locator('#passkeys input.passkey-name').fill('Work laptop');
    await page.locator('#passkeys button.rename').click();
    await expectMessage(page, 'Renamed to “Work laptop”');
    await page.waitForFunction(() => document.querySelector('#passkeys input.passkey-name')?.value === 'Work laptop');
  });

  let codes = [];
  await step('generate-backup-codes', laptop, async () => {
    await page.locator('#generate-codes-button').click();
    await page.locator('#codes-shown').waitFor({ state: 'visible' });
    codes = await page.locator('#codes-list li').allTextContents();
    check(codes.length === 10, `10 codes: ${codes}`);
    check(codes.every((c) => /^[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{5}$/i.test(c)), `codes look like xxxx-xxxx-xxxxx: ${codes}`);
    await page.locator('#codes-remaining').filter({ hasText: '10 unused' }).waitFor();
  });

  await step('log-out-again', laptop, async () => {
    await presence(laptop, false);
    await page.locator('#logout-button').click();
    await expectUrl(page, '/auth/login');
  });

  await step('redeem-backup-code', laptop, async () => {
    await page.goto(`${base}/auth/recover`);
    await page.locator('#recover-email').fill(EMAIL);
    await page.locator('#recover-code').fill('0000-0000-00000');
    await page.locator('#recover-button').click();
    await expectMessage(page, 'the email or code is not valid');
    await page.locator('#recover-code').fill(codes[0]);
    await page.locator('#recover-button').click();
    await expectUrl(page, '/auth/enroll');
    await page.locator('#enroll-form').waitFor({ state: 'visible' });
    const kind = await page.evaluate(async () => (await (await fetch('/api/v1/auth/session')).json()).session.kind);
    check(kind === 'recovery', `a recovery session: ${kind}`);
  });

  await step('add-second-passkey', laptop, async () => {
    // The old passkey is "lost": a new authenticator (this one holds no credential yet).
    await newAuthenticator(laptop);
    await page.locator('#passkey-name').fill('New phone');
    await page.locator('#enroll-button').click();
    await page.locator('#enroll-done').waitFor({ state: 'visible' });
    await expectMessage(page, 'Passkey “New phone” added');
    check((await credentials(laptop)).length === 1, 'the new authenticator holds the new passkey');
  });

  await step('log-in-with-second-passkey', laptop, async () => {
    await presence(laptop, false);
    await page.locator('#enroll-logout-button').click();
    await expectUrl(page, '/auth/login');
    await loginByAutofill(laptop);
    await waitRows(page, 'passkeys', 2);
    const names = await page.locator('#passkeys input.passkey-name').evaluateAll((els) => els.map((e) => e.value));
    check(names.includes('Work laptop') && names.includes('New phone'), `both passkeys listed: ${names}`);
    await page.locator('#codes-remaining').filter({ hasText: '9 unused' }).waitFor();
  });

  await step('remove-lost-passkey', laptop, async () => {
    const names = await page.locator('#passkeys input.passkey-name').evaluateAll((els) => els.map((e) => e.value));
    const row = page.locator('#passkeys tbody tr').nth(names.indexOf('Work laptop'));
    page.once('dialog', (d) => d.accept());
    await row.locator('button.remove').click();
    await expectMessage(page, 'The passkey was removed');
    await waitRows(page, 'passkeys', 1);
    // The last way in cannot be removed: the API's message is shown.
    page.once('dialog', (d) => d.accept());
    await page.locator('#passkeys button.remove').click();
    await expectMessage(page, 'this is your only passkey: add another before removing it');
    await waitRows(page, 'passkeys', 1);
  });

  run.passed();
} catch (err) {
  exit = 1;
  await run.failed(err, [laptop, phone]);
} finally {
  await browser.close();
}
process.exit(exit);
