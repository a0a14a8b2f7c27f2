// Drives the web client in Debian's headless Chromium for the Rust test
// `crates/cli/tests/web_client.rs`, which starts the server and checks the
// pictures. Each step waits for the page to report what it drew
// (`<body data-frame-shown="n">`), checks what a user would see (frame
// number, URL, messages) and saves the canvas pixels for the pixel check.
//
// Usage: node browser.mjs <base-url> <video> <second-video> <out-dir>
// Prints one JSON object per line: {"capture": ...} for every saved canvas,
// {"restart": "now"} when the server should be restarted (the test answers
// with a line on stdin), and {"done": true} at the end. Exits non-zero with
// the reason on the first failed check.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { capture as captureCanvas, check, launch, lines, report, shown as drawn } from './driver.mjs';

const [base, video, second, out, authBase, token, longGop] = process.argv.slice(2);
mkdirSync(out, { recursive: true });

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
const problems = [];
page.on('pageerror', (error) => problems.push(error.message));

const shown = (n, what) => drawn(page, n, what);
const capture = (name, frame, clip = 0, which = undefined) => captureCanvas(page, out, name, frame, clip, which);

function urlFrame() {
  return Number(new URL(page.url()).searchParams.get('frame'));
}

async function caption(clip = 0) {
  return page.evaluate((i) => document.querySelectorAll('#clips .caption')[i].textContent, clip);
}

const index = await (await fetch(`${base}/api/v1/index?video=${encodeURIComponent(video)}`)).json();
const keyframes = index.frames.filter((frame) => frame.keyframe).map((frame) => frame.index);
const last = index.frames.length - 1;

// Open by URL.
await page.goto(`${base}/?video=${video}&frame=37`);
await shown(37, 'opening /?video=…&frame=37');
await capture('open', 37);
const text = await caption();
check(text.includes('frame 37') && text.includes(`${index.width}×${index.height}`), `caption reads "${text}"`);
await page.screenshot({ path: join(out, 'web-client.png') });

// Step forward and back.
await page.keyboard.press('ArrowRight');
await shown(38, '→');
await capture('step-forward', 38);
await page.keyboard.press('ArrowLeft');
await page.keyboard.press('ArrowLeft');
await shown(36, '← ←');
await capture('step-back', 36);
await page.click('#step-forward');
await shown(37, 'the next-frame button');
check(urlFrame() === 37, `after stepping the URL says frame ${urlFrame()}`);

// Keyframe jumps.
const nextKey = keyframes.find((k) => k > 37);
await page.keyboard.press('Shift+ArrowRight');
await shown(nextKey, 'Shift+→');
check((await caption()).includes('K'), 'a keyframe is marked as one');
await page.keyboard.press('Shift+ArrowLeft');
await shown(keyframes.filter((k) => k < nextKey).pop(), 'Shift+←');

// Scrub: drag the playhead along the timeline, in small steps, and let go.
const bar = await page.locator('#timeline').boundingBox();
const y = bar.y + bar.height / 2;
await page.mouse.move(bar.x + bar.width * 0.1, y);
await page.mouse.down();
for (let step = 1; step <= 30; step += 1) {
  await page.mouse.move(bar.x + bar.width * (0.1 + (0.7 * step) / 30), y);
  await page.waitForTimeout(16);
}
await page.mouse.up();
const scrubbed = Math.round(0.8 * last);
await shown(scrubbed, 'dragging the timeline to 80 %');
await capture('scrub', scrubbed);
check(urlFrame() === scrubbed, `after scrubbing the URL says frame ${urlFrame()}, not ${scrubbed}`);

// Hovering the timeline shows the thumbnail of the last keyframe at or
// before the pointer (the strip loads after the video opens: hover until it shows).
// The pointer rests mid-way between two keyframes near the middle, whole
// pixels apart, so rounding the pointer's position cannot cross a keyframe.
const keyAfterMiddle = keyframes.find((k) => k >= last / 2) ?? last;
const keyBeforeThat = keyframes.filter((k) => k < keyAfterMiddle).pop() ?? 0;
const middleX = Math.round(bar.x + (((keyBeforeThat + keyAfterMiddle) / 2) / last) * bar.width);
// Leave the timeline first: the drag above may have shown a thumbnail.
await page.mouse.move(middleX, bar.y - 100);
await page.waitForTimeout(100);
let thumbnail = null;
let hoveredAt = 0;
for (let attempt = 0; attempt < 100 && thumbnail === null; attempt += 1) {
  const x = middleX + (attempt % 2);
  await page.mouse.move(x, y);
  hoveredAt = Math.round(((x - bar.x) / bar.width) * last);
  await page.waitForTimeout(100);
  thumbnail = await page.evaluate(() => {
    const thumb = document.querySelector('#timeline .thumb');
    return thumb.hidden ? null : Number(thumb.dataset.frame);
  });
}
const keyBefore = keyframes.filter((k) => k <= hoveredAt).pop();
check(thumbnail === keyBefore, `hovering at frame ${hoveredAt} showed the thumbnail of ${thumbnail}, not ${keyBefore}`);

// Dragging over one 10 s group of pictures: the keyframe is shown at once
// while the pointer moves; when it rests (button still down) the exact frame.
await page.goto(`${base}/?video=${longGop}&frame=0`);
await shown(0, 'opening the long-GOP video');
const longBar = await page.locator('#timeline').boundingBox();
const longY = longBar.y + longBar.height / 2;
await page.mouse.move(longBar.x + longBar.width * 0.05, longY);
await page.mouse.down();
const whileMoving = [];
for (let step = 1; step <= 30; step += 1) {
  await page.mouse.move(longBar.x + longBar.width * (0.05 + (0.6 * step) / 30), longY);
  await page.waitForTimeout(16);
  if (step > 10) whileMoving.push(await page.evaluate(() => window.bucketStreamer.clips[0].shownFrame));
}
const keyframeShare = whileMoving.filter((frame) => frame === 0).length / whileMoving.length;
check(keyframeShare >= 0.5, `while dragging far from its keyframe the page showed ${whileMoving.join(',')}`);
const resting = await page.evaluate(() => window.bucketStreamer.position);
await shown(resting, 'the pointer resting on the timeline (button down)');
await page.mouse.up();
await shown(resting, 'letting go');
await capture('long-gop-rest', resting, 0, 'long');
await page.goto(`${base}/?video=${video}&frame=${scrubbed}`);
await shown(scrubbed, 'back to the first video');

// Play from the start for about a second, then pause.
await page.keyboard.press('Home');
await shown(0, 'Home');
await page.keyboard.press('Space');
await page.waitForTimeout(1200);
await page.keyboard.press('Space');
await page.waitForTimeout(300);
const played = Number(await page.evaluate(() => document.body.dataset.frameShown));
check(played >= 10 && played < last, `after ~1.2 s of play at ${index.frame_rate} fps the page shows frame ${played}`);
check(urlFrame() === played, `after pausing the URL says frame ${urlFrame()}, the page shows ${played}`);
const fps = await page.textContent('#stat-fps');
check(Number.parseFloat(fps) > 0, `the overlay shows ${fps} while playing`);
await capture('played', played);

// On a canvas shown smaller than the video, playing asks for frames scaled
// to it; at rest the exact full-size frame replaces the scaled one.
await page.setViewportSize({ width: 420, height: 500 });
const passing = await page.evaluate(() => window.bucketStreamer.clips[0].passingOutput());
check(passing && passing.width < index.width && passing.width % 64 === 0, `scaled output ${JSON.stringify(passing)}`);
await page.keyboard.press('Space');
await page.waitForTimeout(800);
const widthWhilePlaying = await page.evaluate(() => window.bucketStreamer.clips[0].shownWidth);
check(widthWhilePlaying === passing.width, `while playing small, pictures ${widthWhilePlaying} wide`);
await page.keyboard.press('Space');
await page.waitForFunction((width) => window.bucketStreamer.clips[0].shownWidth === width, index.width, {
  timeout: 10000,
});
const rested = Number(await page.evaluate(() => document.body.dataset.frameShown));
await capture('played-small-rest', rested);
await page.setViewportSize({ width: 1366, height: 768 });

// Several clips, a session each, in sync.
await page.goto(`${base}/?video=${video}&video=${second}&frame=10`);
await shown(10, 'a grid of two videos');
check((await page.locator('#clips canvas').count()) === 2, 'the grid shows two canvases');
await capture('grid-first', 10, 0);
await capture('grid-second', 10, 1);
await page.keyboard.press('ArrowRight');
await shown(11, 'stepping the grid');
check((await caption(1)).includes('frame 11'), `the second clip shows "${await caption(1)}"`);
await page.screenshot({ path: join(out, 'web-client-grid.png') });

// Lost connection: the page says so, reconnects and shows the same frame again.
await page.evaluate(() => delete document.body.dataset.frameShown);
report({ restart: 'now' });
await page.waitForFunction(() => document.querySelector('#connection').dataset.state !== 'open', null, {
  timeout: 15000,
});
await page.waitForSelector('#message:not([hidden])', { timeout: 15000 });
check((await page.textContent('#message')).includes('Connection lost'), 'the page says the connection was lost');
report({ waiting: 'server' });
await lines.next();
await page.waitForFunction(() => document.querySelector('#connection').dataset.state === 'open', null, {
  timeout: 20000,
});
await shown(11, 'after reconnecting');
check(await page.locator('#message').isHidden(), 'the connection message goes away once reconnected');

// Errors are shown, not hidden: a frame the server refuses…
await page.evaluate(() =>
  window.bucketStreamer.clips[0].send({
    type: 'RequestFrames',
    frames: [{ offset: 1, index: { c: 0, n: 5, s: 0 } }],
  }),
);
await page.waitForSelector('#message:not([hidden])', { timeout: 15000 });
const refusal = await page.textContent('#message');
check(refusal.includes('not_a_frame') && refusal.includes(video), `a frame error shows "${refusal}"`);
// …and a video that does not exist.
await page.goto(`${base}/?video=videos/no-such-video.mp4`);
await page.waitForSelector('#message:not([hidden])', { timeout: 15000 });
const message = await page.textContent('#message');
check(message.includes('no-such-video.mp4') && /not found/i.test(message), `a missing video shows "${message}"`);

// The picker lists the videos and opens one.
await page.goto(`${base}/`);
await page.click(`#video-list li[data-path="${second}"] button.open`);
await shown(0, 'opening a video from the picker');
check(new URL(page.url()).searchParams.get('video') === second, `the URL names ${page.url()}`);

// A server that needs a token: a page given ?access_token= draws its frame
// and takes the token out of the address bar; without one it asks, and
// when the question is dismissed says why nothing shows.
await page.goto(`${authBase}/?video=${video}&frame=12&access_token=${token}`);
await shown(12, 'with an access token');
await capture('with-token', 12);
check(!page.url().includes('access_token'), `the token leaves the address bar: ${page.url()}`);
const anonymous = await browser.newPage({ viewport: { width: 1024, height: 640 } });
let asked = false;
anonymous.on('dialog', (dialog) => {
  asked = true;
  dialog.dismiss();
});
await anonymous.goto(`${authBase}/?video=${video}`);
await anonymous.waitForSelector('#message:not([hidden])', { timeout: 15000 });
const unauthorised = await anonymous.textContent('#message');
check(asked && /authentication required/i.test(unauthorised), `without a token the page asks and says "${unauthorised}"`);

check(problems.length === 0, `the page threw: ${problems.join('; ')}`);
await browser.close();
report({ done: true });
process.exit(0);
