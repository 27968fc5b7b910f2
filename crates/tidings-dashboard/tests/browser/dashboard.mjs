// Drives the dashboard in Debian's Chromium, as an operator would: refused without
// credentials; with them, open the overview, the subscription, the dead letter of the
// order noted `fail-edit`, fix its payload and replay it as a new event; select the dead
// letter noted `fail-purge`, purge it and confirm. Exits non-zero, saying what differed,
// when a step does not do what it should.
//
//   node dashboard.mjs <url> <user> <password>
import { chromium } from 'playwright-core';

const [url, user, password] = process.argv.slice(2);
const check = (ok, what) => {
  if (!ok) throw new Error(what);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  // Without credentials: headless Chromium cannot show the login prompt, so it ends the
  // navigation with ERR_INVALID_AUTH_CREDENTIALS on the 401; any page shown is a failure.
  const anonymous = await browser.newContext();
  const refused = await (await anonymous.newPage()).goto(url).then(
    (response) => `answered ${response.status()}`,
    (error) => (error.message.includes('ERR_INVALID_AUTH_CREDENTIALS') ? 'refused' : error.message),
  );
  check(refused === 'refused', `without credentials the overview ${refused}`);
  await anonymous.close();

  const context = await browser.newContext({ httpCredentials: { username: user, password } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const overview = await page.goto(url);
  check(overview.status() === 200, `the overview answered ${overview.status()}`);
  check(await page.locator('h1', { hasText: 'Subscriptions' }).isVisible(), 'the overview has no heading');

  await page.locator('a[href*="/subscriptions/"]').first().click();
  await page.locator('h1', { hasText: 'Dead letters of' }).waitFor();
  const rows = await page.locator('tbody tr').count();
  check(rows === 3, `the subscription shows ${rows} dead letters, not 3`);

  await page.locator('tr', { hasText: 'fail-edit' }).locator('a').first().click();
  await page.locator('h2', { hasText: 'Fix and replay' }).waitFor();
  check((await page.locator('pre.payload').innerText()).includes('"fail-edit"'), 'the payload is not shown as JSON');
  await page.locator('textarea[name=payload]').fill('{"order": 1, "note": "edited in the browser"}');
  await page.locator('input[name=id_choice][value=new]').check();
  await page.getByRole('button', { name: 'Replay the edited event' }).click();
  const notice = page.locator('.notice');
  await notice.waitFor();
  const said = await notice.innerText();
  check(/Replayed dead letter .* as the new event/.test(said), `after the edited replay the page said: ${said}`);
  check(await page.locator('tr', { hasText: 'fail-edit' }).count() === 0, 'the edited dead letter is still listed');

  await page.locator('tr', { hasText: 'fail-purge' }).locator('input[type=checkbox]').check();
  await page.getByRole('button', { name: 'Purge selected…' }).click();
  await page.locator('h1', { hasText: 'Purge dead letters?' }).waitFor();
  await page.getByRole('button', { name: 'Delete 1 dead letters' }).click();
  await notice.waitFor();
  const purged = await notice.innerText();
  check(purged.includes('Purged 1 dead letters.'), `after the purge the page said: ${purged}`);
  check(await page.locator('tr', { hasText: 'fail-purge' }).count() === 0, 'the purged dead letter is still listed');
  check(await page.locator('tr', { hasText: 'fail-keep' }).count() === 1, 'the dead letter nobody touched is gone');
  console.log('the browser did every step');
} finally {
  await browser.close();
}
