// The numbers in the overlay: pictures drawn per second, request-to-draw
// latency and bytes received per second, over the last few seconds.

const WINDOW_MS = 2000;

export class Stats {
  constructor() {
    this.draws = [];
    this.latencies = [];
    this.byteSamples = [];
  }

  drawn(latencyMs) {
    const now = performance.now();
    this.draws.push(now);
    if (latencyMs !== undefined) this.latencies.push([now, latencyMs]);
    this.trim(now);
  }

  bytes(total) {
    const now = performance.now();
    this.byteSamples.push([now, total]);
    this.trim(now);
  }

  trim(now) {
    const since = now - WINDOW_MS;
    while (this.draws.length && this.draws[0] < since) this.draws.shift();
    while (this.latencies.length && this.latencies[0][0] < since) this.latencies.shift();
    while (this.byteSamples.length > 1 && this.byteSamples[0][0] < since) this.byteSamples.shift();
  }

  summary() {
    const now = performance.now();
    this.trim(now);
    const fps = this.draws.length / (WINDOW_MS / 1000);
    const sorted = this.latencies.map(([, ms]) => ms).sort((a, b) => a - b);
    const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
    let rate = 0;
    if (this.byteSamples.length > 1) {
      const [firstTime, firstTotal] = this.byteSamples[0];
      const [lastTime, lastTotal] = this.byteSamples[this.byteSamples.length - 1];
      rate = lastTime > firstTime ? ((lastTotal - firstTotal) * 1000) / (lastTime - firstTime) : 0;
    }
    return { fps, latency: median, bytesPerSecond: rate };
  }
}

export function formatBytes(perSecond) {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(1)} MB/s`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(0)} kB/s`;
  return `${perSecond.toFixed(0)} B/s`;
}
