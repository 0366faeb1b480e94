// A manual smoke of Raptor's pages in headless Chromium with a virtual authenticator (CDP): password
// sign-in as the demo admin, "Add a passkey", sign out, usernameless passkey sign-in, the tickets
// page, passkey sign-in by email. Not part of pytest (it needs Chromium and playwright-core).
//
//   Raptor with RAPTOR_ORIGIN=http://localhost:PORT, listening on 127.0.0.1:PORT (demo data), then
//   ln -s ../../../../tests/browser/node_modules legacy/raptor/tests/browser/node_modules  # after make test-deps
//   node legacy/raptor/tests/browser/passkey-smoke.mjs http://localhost:PORT
import { chromium } from 'playwright-core';
const [base] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true } });
  await page.goto(base + '/signin');
  await page.fill('input[name=email]', 'admin@acme.test');
  await page.fill('input[name=password]', 'raptor-admin-demo');
  await Promise.all([page.waitForURL('**/account'), page.click('form[action="/signin"] button')]);
  console.log('password sign-in ok');
  await page.click('#add-passkey');
  await page.waitForFunction(() => !document.querySelector('#passkeys').textContent.includes('No passkey yet'));
  console.log('passkey added:', (await page.textContent('#passkeys')).trim(), '|', await page.textContent('#passkey-error'));
  await Promise.all([page.waitForURL(base + '/'), page.click('main form[action="/signout"] button')]);
  console.log('signed out:', (await page.textContent('#who')).trim());
  await page.goto(base + '/signin');
  await Promise.all([page.waitForURL('**/account'), page.click('#passkey')]);
  console.log('usernameless passkey sign-in ok');
  await page.goto(base + '/tickets');
  console.log('tickets:', (await page.textContent('#tickets')).replace(/\s+/g, ' ').trim());
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  console.log('authenticator sign count', credentials[0].signCount, 'resident', credentials[0].isResidentCredential);
  // Sign in by email too.
  await page.click('nav form[action="/signout"] button');
  await page.goto(base + '/signin');
  await page.fill('#email', 'admin@acme.test');
  await Promise.all([page.waitForURL('**/account'), page.click('#passkey')]);
  console.log('passkey sign-in by email ok');
  if (errors.length) { console.log('page errors:', errors); process.exitCode = 1; }
} finally { await browser.close(); }
