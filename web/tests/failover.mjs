// The web client through nginx when the server playing its video dies, for
// the Rust test `crates/cli/tests/routing.rs` (which runs nginx in front of
// three servers and kills the one that has the video open). The page plays;
// after the kill it must reconnect (nginx sends the new session to the next
// server on the hash ring) and play on; then it pauses and its canvas is
// saved for the pixel check.
//
// Usage: node failover.mjs <nginx-base-url> <video> <out-dir>
// Prints JSON lines: {"kill": "now"} (the test kills the server and answers
// with a line), {"capture": ...}, {"stall_ms": n, "drawn_after": n}, {"done": true}.

import { capture, check, launch, lines, report, shown } from './driver.mjs';

const [base, video, out] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1024, height: 640 } });
const problems = [];
page.on('pageerror', (error) => problems.push(error.message));

await page.goto(`${base}/?video=${video}&frame=0`);
await shown(page, 0, 'opening through nginx');
// Note when each picture is drawn.
await page.evaluate(() => {
  window.drawnAt = [];
  new MutationObserver(() => window.drawnAt.push(performance.now())).observe(document.body, {
    attributes: true,
    attributeFilter: ['data-frame-shown'],
  });
});
await page.keyboard.press('Space');
// Playing, not a speed test: a loaded CI machine (debug servers, parallel
// tests) may take a few seconds to start.
const playing = await page
  .waitForFunction(() => window.drawnAt.length > 5, null, { timeout: 10000 })
  .then(() => true, () => false);
check(playing, 'the page plays before the kill');

report({ kill: 'now' });
await lines.next();
const killedAt = await page.evaluate(() => performance.now());
// More pictures than the play buffer holds (8): they came over a new session.
await page
  .waitForFunction((since) => window.drawnAt.filter((at) => at > since).length >= 30, killedAt, { timeout: 10000 })
  .catch(() => {
    throw new Error('the page did not play on after its server was killed');
  });
const after = await page.evaluate((since) => window.drawnAt.filter((at) => at > since), killedAt);
// The longest wait between two pictures around the kill.
const times = [killedAt, ...after];
const stall = Math.max(...times.slice(1).map((at, i) => at - times[i]));
report({ stall_ms: Math.round(stall), drawn_after: after.length });

await page.keyboard.press('Space');
await page.waitForTimeout(300);
const frame = Number(await page.evaluate(() => document.body.dataset.frameShown));
await capture(page, out, 'after-failover', frame);
check(problems.length === 0, `the page threw: ${problems.join('; ')}`);
await browser.close();
report({ done: true });
process.exit(0);
