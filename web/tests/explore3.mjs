import { chromium } from 'playwright-core';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
for (let run = 0; run < 3; run++) {
await page.goto('http://127.0.0.1:3311/?video=videos/bbb1080-frag.mp4&frame=0');
await page.waitForSelector('body[data-frame-shown="0"]');
await page.selectOption('#rate', '60');
const t0 = Date.now();
await page.keyboard.press('Space');
await page.waitForTimeout(3000);
await page.keyboard.press('Space');
console.log('frames', await page.evaluate(() => document.body.dataset.frameShown), 'in', Date.now() - t0, 'ms', await page.textContent('#overlay'));
}
await browser.close();
