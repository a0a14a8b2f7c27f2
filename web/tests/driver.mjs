// What the browser scripts share: Debian's Chromium launched headless the
// way this machine allows, the JSON-lines channel to the Rust test that
// runs the script (one object per line out, answer lines in), and the
// checks on a page: which frame it has drawn, and its canvas pixels saved
// for the test's comparison with FFmpeg's decode.

import { chromium } from 'playwright-core';
import { writeFileSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

export const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
export const report = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/// Waits until the page reports frame `n` drawn in every clip.
export async function shown(page, n, what) {
  await page
    .waitForFunction((frame) => document.body.dataset.frameShown === String(frame), n, { timeout: 15000 })
    .catch(async () => {
      const actual = await page.evaluate(() => document.body.dataset.frameShown);
      throw new Error(`${what}: expected frame ${n} to be drawn, the page shows ${actual}`);
    });
}

/// Saves clip `clip`'s canvas as raw RGBA under `out` and reports it
/// (`video` names the video for the test when it is not the usual one).
export async function capture(page, out, name, frame, clip = 0, video = undefined) {
  mkdirSync(out, { recursive: true });
  const pixels = await page.evaluate((i) => {
    const canvas = document.querySelectorAll('#clips canvas')[i];
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let text = '';
    for (let at = 0; at < data.length; at += 0x8000) {
      text += String.fromCharCode.apply(null, data.subarray(at, at + 0x8000));
    }
    return { width: canvas.width, height: canvas.height, base64: btoa(text) };
  }, clip);
  const file = join(out, `${name}.rgba`);
  writeFileSync(file, Buffer.from(pixels.base64, 'base64'));
  report({ capture: name, clip, frame, width: pixels.width, height: pixels.height, file, video });
}
