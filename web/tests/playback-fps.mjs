// Benchmark, not a test (run by scripts/bench-browser): the frames per second
// the web client draws while playing one video in Debian's headless
// Chromium, with pictures scaled to the canvas (the default) or full size
// (the 1:1 button). Played at 2x speed so that the content's frame rate is
// not the limit; timed from the 10th to the 90th frame drawn, all in the
// first pass (no frame comes from a cache filled by an earlier pass).
//
// Usage: node playback-fps.mjs <base-url> <video> <scaled|native>
// Prints one JSON line: {"mode", "fps", "width"} (width: of the pictures
// drawn while playing).

import { check, launch, report, shown } from './driver.mjs';

const [base, video, mode] = process.argv.slice(2);
check(mode === 'scaled' || mode === 'native', `mode is scaled or native, not ${mode}`);
const [FROM, TO] = [10, 90];

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
await page.goto(`${base}/?video=${video}&frame=0`);
await shown(page, 0, 'opening the video');
if (mode === 'native') await page.click('#native');
await page.selectOption('#speed', '2');
await page.keyboard.press('Space');
const reached = (n) =>
  page.waitForFunction((frame) => Number(document.body.dataset.frameShown) >= frame, n, {
    polling: 'raf',
    timeout: 120000,
  });
await reached(FROM);
const started = performance.now();
await reached(TO);
const elapsed = (performance.now() - started) / 1000;
const width = await page.evaluate(() => window.bucketStreamer.clips[0].shownWidth);
await page.keyboard.press('Space');
report({ mode, fps: (TO - FROM) / elapsed, width });
await browser.close();
