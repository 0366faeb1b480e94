// What the browser journeys share (journey.mjs: Queue's account pages; raptor.mjs: Raptor's):
// headless Chromium with the flags this machine needs, a "device" (a window with its own cookies
// and its own virtual WebAuthn authenticator over CDP), and a run of named steps with a
// screenshot after each and the reason when one fails.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const STEP_TIMEOUT = 15_000;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// The flags this machine needs (docs/testing.md): no sandbox as root, and no background
// connections, which the closed network refuses.
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}

/** A run of steps: `step` takes a screenshot after each; `failed` reports the step that failed. */
export class Run {
  constructor(shotDir) {
    mkdirSync(shotDir, { recursive: true });
    this.shotDir = shotDir;
    this.started = Date.now();
    this.stepNo = 0;
    this.current = 'start';
    // Page errors and CSP violations seen by any device; a step with any fails.
    this.problems = [];
  }

  fail(message) {
    throw new Error(message);
  }

  check(cond, message) {
    if (!cond) this.fail(message);
  }

  /** Queue's page message (`#message`: errors and confirmations), once it says `expected`. */
  async expectMessage(page, expected) {
    const m = page.locator('#message');
    try {
      await m.filter({ hasText: expected }).waitFor({ state: 'visible' });
    } catch (e) {
      const shown = (await m.isVisible()) ? await m.textContent() : '(no message)';
      this.fail(`expected the message "${expected}", the page shows: ${shown}`);
    }
  }

  async step(name, page, fn) {
    this.current = name;
    this.stepNo += 1;
    const t0 = Date.now();
    await fn();
    if (this.problems.length) this.fail(this.problems.join('\n'));
    const file = join(this.shotDir, `${String(this.stepNo).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`ok ${this.stepNo} ${name} (${Date.now() - t0} ms) → ${file}`);
  }

  passed() {
    console.log(`journey passed: ${this.stepNo} steps in ${Date.now() - this.started} ms (screenshots in ${this.shotDir})`);
  }

  /** Says which step failed and why, where each device was, and screenshots them. */
  async failed(err, devices) {
    console.error(`FAILED at step "${this.current}": ${err.message}`);
    for (const d of devices.filter(Boolean)) {
      console.error(`  ${d.name} at ${d.page.url()}`);
      try {
        await d.page.screenshot({ path: join(this.shotDir, `failed-${this.current}-${d.name}.png`), fullPage: true });
      } catch (_) {
        // the page may be gone
      }
    }
  }
}

/** A browser window with its own cookies and its own virtual authenticator ("a device"). */
export async function device(browser, name, run) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('pageerror', (e) => run.problems.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    // A refused script or style would be a CSP violation: the pages must need none.
    if (/Content Security Policy/i.test(text)) run.problems.push(`${name}: ${text}`);
    if (m.type() === 'error') console.log(`  [${name} console] ${text}`);
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const dev = { name, context, page, cdp, authenticatorId: null };
  await newAuthenticator(dev);
  return dev;
}

/** Replaces the device's authenticator with a fresh one (no credentials). */
export async function newAuthenticator(dev) {
  if (dev.authenticatorId) {
    await dev.cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: dev.authenticatorId });
  }
  const { authenticatorId } = await dev.cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  dev.authenticatorId = authenticatorId;
}

/** The credentials the device's authenticator holds. */
export async function credentials(dev) {
  const { credentials } = await dev.cdp.send('WebAuthn.getCredentials', { authenticatorId: dev.authenticatorId });
  return credentials;
}
