// The page: opens videos from the URL or the picker, keeps the position,
// asks the server for frames (latest-first while scrubbing or stepping, a
// window ahead while playing, scaled to the screen while playing and
// dragging, full size at rest), draws them and keeps the URL, the overlay
// and the error banner up to date. Several clips share one position (kept
// in sync by time); each has a WebSocket session of its own, on its video.

import { refusedForToken } from './auth.js';
import { Clip, formatTime } from './clip.js';
import { Timeline } from './timeline.js';
import { Stats, formatBytes } from './stats.js';
import { Picker } from './picker.js';
import { PlayBuffer } from './play_buffer.js';
import { bindShortcuts } from './shortcuts.js';

const MAX_CLIPS = 4;
/// Decoded pictures held ahead while playing, at most this many bytes.
const PLAY_BUFFER_BYTES = 256e6;
const SPEEDS = [0.25, 0.5, 1, 1.5, 2, 4];
/// A still position held this long gets its next frame asked for in the
/// background, so play (or the next step) starts without a decode from the
/// keyframe: a lone frame leaves the server's decoder drained.
const WARM_UP_MS = 250;
/// While the timeline is dragged, a frame this many frames or more past its
/// keyframe shows the keyframe instead (one decode, often cached) until the
/// pointer rests for SCRUB_REST_MS, when the exact frame is asked for.
const SCRUB_KEYFRAME_AFTER = 30;
const SCRUB_REST_MS = 150;

const $ = (selector) => document.querySelector(selector);

class App {
  constructor() {
    this.clips = [];
    this.position = 0;
    this.seq = 0;
    this.sentAt = new Map();
    this.playing = false;
    this.buffer = new PlayBuffer();
    this.nextDue = 0;
    this.stalled = false;
    this.loop = true;
    this.native = false; // 1:1: full-size frames while playing and scrubbing too
    this.rate = null; // frames per second; null: the video's own
    this.speed = 1;
    this.pendingScrub = null;
    this.warmUpTimer = null;
    this.lastUrlUpdate = 0;
    this.stats = new Stats();
    this.timeline = new Timeline($('#timeline'), (frame, dragging) => this.scrub(frame, dragging));
    this.picker = new Picker($('#video-list'), $('#prefix'), {
      open: (path) => this.open([path], 0),
      add: (path) => this.addClip(path),
      error: (message) => this.showError(message),
    });
    this.bindControls();
    bindShortcuts(this);
    const params = new URLSearchParams(location.search);
    const videos = params.getAll('video').filter(Boolean).slice(0, MAX_CLIPS);
    const frame = Number.parseInt(params.get('frame') ?? '0', 10);
    if (videos.length) this.open(videos, Number.isFinite(frame) ? frame : 0);
    else this.showEmpty(true);
    setInterval(() => this.renderOverlay(), 500);
    requestAnimationFrame((now) => this.tick(now));
  }

  // ---- videos ----

  async open(paths, frame = 0) {
    this.pause();
    this.hideError();
    const stage = $('#clips');
    stage.replaceChildren();
    for (const clip of this.clips) clip.close();
    this.clips = [];
    const loaded = await Promise.all(
      paths.map(async (path) => {
        const element = $('#clip-template').content.firstElementChild.cloneNode(true);
        try {
          return await Clip.load(path, element);
        } catch (error) {
          this.showError(`Cannot open ${path}: ${error.message}`);
          return null;
        }
      }),
    );
    this.clips = loaded.filter(Boolean);
    for (const clip of this.clips) {
      clip.connect({
        onstate: (state, detail) => this.connectionChanged(clip, state, detail),
        onframe: (header, jpeg) => this.frameArrived(clip, header, jpeg),
        onframeerror: (message) => this.frameFailed(clip, message),
        onerror: (message) => this.showError(`server: ${message}`),
      });
      stage.append(clip.element);
      clip.element.querySelector('.remove').onclick = () =>
        this.open(this.clips.filter((other) => other !== clip).map((other) => other.path), this.position);
    }
    stage.dataset.count = String(this.clips.length);
    document.body.classList.toggle('grid', this.clips.length > 1);
    this.showEmpty(this.clips.length === 0);
    if (!this.clips.length) {
      this.updateUrl(true);
      return;
    }
    const first = this.clips[0];
    this.timeline.setVideo(first.frameCount, first.keyframes);
    first
      .thumbnails()
      .then((strip) => {
        if (strip && this.clips[0] === first) this.timeline.setThumbnails(strip);
        else if (strip) URL.revokeObjectURL(strip.url);
      })
      .catch(() => {});
    $('#frame-input').max = String(first.frameCount - 1);
    this.show(Math.min(Math.max(frame, 0), first.frameCount - 1));
    this.updateUrl(true);
    this.picker.mark(this.clips.map((clip) => clip.path));
  }

  addClip(path) {
    const paths = this.clips.map((clip) => clip.path);
    if (paths.includes(path)) return;
    if (paths.length >= MAX_CLIPS) {
      this.showError(`A grid shows at most ${MAX_CLIPS} videos; remove one first.`);
      return;
    }
    this.open([...paths, path], this.position);
  }

  /// The frame of clip `i` shown at the first clip's frame `n` (same time).
  frameOf(i, n) {
    if (i === 0) return n;
    return this.clips[i].frameAt(this.clips[0].frames[n].time);
  }

  // ---- still frames: open, step, scrub ----

  /// Moves to frame `n` of the first clip and asks for the pictures, newest first.
  show(n) {
    if (!this.clips.length) return;
    this.position = n;
    this.timeline.setPosition(n);
    this.renderPosition();
    const seq = ++this.seq;
    this.sentAt.set(seq, performance.now());
    this.clips.forEach((clip, i) => this.requestStill(i, seq));
    this.updateUrl(false);
  }

  /// Asks clip `i`'s session for its picture at the current position.
  requestStill(i, seq) {
    const frame = this.frameOf(i, this.position);
    const request = this.clips[i].request(frame, { c: i, n: frame, s: seq });
    this.clips[i].send({ type: 'RequestFrames', mode: 'latest', id: seq, frames: [request] });
  }

  step(delta) {
    if (!this.clips.length) return;
    this.pause();
    const last = this.clips[0].frameCount - 1;
    this.show(Math.min(Math.max(this.position + delta, 0), last));
  }

  jumpKeyframe(direction) {
    if (!this.clips.length) return;
    this.pause();
    const clip = this.clips[0];
    this.show(direction < 0 ? clip.previousKeyframe(this.position) : clip.nextKeyframe(this.position));
  }

  scrub(frame, dragging) {
    if (!this.clips.length) return;
    this.pause();
    // One request per animation frame at most while dragging.
    this.pendingScrub = frame;
    this.timeline.setPosition(frame);
    clearTimeout(this.restTimer);
    if (dragging) {
      // The pointer rests: the exact frame, even while the button is down.
      this.restTimer = setTimeout(() => {
        if (this.timeline.dragging && this.position === frame) this.show(frame);
      }, SCRUB_REST_MS);
    } else {
      this.pendingScrub = null;
      this.show(frame);
      this.updateUrl(true);
    }
  }

  /// Dragging over long groups of pictures: each clip shows the keyframe of
  /// the frame under the pointer (what a seek there would start from) when
  /// the exact frame is far from it; the exact frame comes when the pointer
  /// rests or lets go.
  showWhileDragging(n) {
    const far = this.clips.some((clip, i) => clip.keyframeOf(this.frameOf(i, n)).distance >= SCRUB_KEYFRAME_AFTER);
    if (!far) {
      this.show(n);
      return;
    }
    this.position = n;
    this.renderPosition();
    const seq = ++this.seq;
    this.sentAt.set(seq, performance.now());
    this.clips.forEach((clip, i) => {
      const { key } = clip.keyframeOf(this.frameOf(i, n));
      const request = clip.request(key, { c: i, n: key, s: seq });
      const output = this.native ? undefined : clip.passingOutput();
      clip.send({ type: 'RequestFrames', mode: 'latest', id: seq, output, frames: [request] });
    });
  }

  // ---- playing ----

  togglePlay() {
    if (this.playing) this.pause();
    else this.play();
  }

  play() {
    if (!this.clips.length) return;
    const last = this.clips[0].frameCount - 1;
    if (this.position >= last && !this.loop) this.show(0);
    this.playing = true;
    this.buffer.reset();
    this.nextDue = performance.now();
    this.renderPlayButton();
    this.requestAhead();
  }

  pause() {
    if (!this.playing) return;
    this.playing = false;
    this.buffer.reset();
    this.stalled = false;
    this.renderPlayButton();
    this.updateUrl(true);
    // At rest the exact picture is shown: one that came scaled is replaced.
    if (this.clips.some((clip) => clip.shownWidth < clip.index.width)) this.show(this.position);
  }

  get frameInterval() {
    const rate = this.rate ?? this.clips[0]?.frameRate ?? 25;
    return 1000 / (rate * this.speed);
  }

  /// The frame after `n` in playing order, or null at the end without loop.
  following(n) {
    const last = this.clips[0].frameCount - 1;
    if (n < last) return n + 1;
    return this.loop ? 0 : null;
  }

  playAhead() {
    const { width, height } = this.clips[0].index;
    const perStep = width * height * 4 * this.clips.length;
    return Math.min(Math.max(Math.floor(PLAY_BUFFER_BYTES / perStep), 2), 8);
  }

  /// Keeps the next few frames requested (one fifo request per step, all clips).
  requestAhead() {
    let n = this.position;
    for (let ahead = 0; ahead < this.playAhead(); ahead += 1) {
      n = this.following(n);
      if (n === null || n === this.position) break;
      if (!this.buffer.claim(n)) continue;
      const seq = ++this.seq;
      this.sentAt.set(seq, performance.now());
      this.clips.forEach((clip, i) => {
        const frame = this.frameOf(i, n);
        const request = clip.request(frame, { c: i, n: frame, s: seq, play: this.buffer.generation, at: n });
        const output = this.native ? undefined : clip.passingOutput();
        clip.send({ type: 'RequestFrames', mode: 'fifo', id: seq, output, frames: [request] });
      });
    }
  }

  tick(now) {
    requestAnimationFrame((time) => this.tick(time));
    if (this.pendingScrub !== null) {
      const frame = this.pendingScrub;
      this.pendingScrub = null;
      if (frame !== this.position) this.showWhileDragging(frame);
    }
    if (!this.playing || now < this.nextDue) return;
    const next = this.following(this.position);
    if (next === null) {
      this.pause();
      return;
    }
    const pictures = this.buffer.take(next, this.clips.length);
    this.stalled = !pictures;
    if (!pictures) {
      this.requestAhead();
      return;
    }
    this.position = next;
    pictures.forEach((entry, i) => this.draw(i, entry.bitmap, entry.frame, entry.seq));
    this.timeline.setPosition(next);
    this.renderPosition();
    // Keep the beat; after a stall start counting again instead of rushing.
    this.nextDue = Math.max(this.nextDue + this.frameInterval, now - this.frameInterval);
    this.requestAhead();
    this.updateUrl(false);
  }

  // ---- answers ----

  async frameArrived(clip, header, jpeg) {
    const label = header.index ?? {};
    if (label.warm) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(new Blob([jpeg], { type: 'image/jpeg' }));
    } catch (error) {
      this.showError(`frame ${label.n} of ${clip.path}: the JPEG could not be decoded (${error.message})`);
      return;
    }
    if (label.play !== undefined) {
      this.buffer.put(label.play, label.at, label.c, { bitmap, frame: label.n, seq: label.s });
      return;
    }
    if (this.playing || this.clips[label.c] !== clip) {
      bitmap.close();
      return;
    }
    this.draw(label.c, bitmap, label.n, label.s);
  }

  draw(i, bitmap, frame, seq) {
    const clip = this.clips[i];
    if (!clip.draw(bitmap, frame, seq)) return;
    const sent = this.sentAt.get(seq);
    this.stats.drawn(sent === undefined ? undefined : performance.now() - sent);
    for (const old of this.sentAt.keys()) {
      if (old < seq - 64) this.sentAt.delete(old);
      else break;
    }
    if (this.clips.every((other, j) => other.shownFrame === this.frameOf(j, this.position))) {
      document.body.dataset.frameShown = String(this.position);
      if (!this.playing) this.warmUpSoon();
    }
  }

  /// Asks for the frame after a still position once it has been held for a
  /// moment; the answer only fills the server's cache and positions its decoder.
  warmUpSoon() {
    clearTimeout(this.warmUpTimer);
    const position = this.position;
    this.warmUpTimer = setTimeout(() => {
      const next = this.following(position);
      if (this.playing || this.position !== position || next === null || this.timeline.dragging) return;
      this.clips.forEach((clip, i) => {
        const frames = [clip.request(this.frameOf(i, next), { warm: true })];
        clip.send({ type: 'RequestFrames', mode: 'latest', frames });
      });
    }, WARM_UP_MS);
  }

  frameFailed(clip, message) {
    const label = message.index ?? {};
    if (label.warm || message.error === 'superseded' || message.error === 'cancelled') return;
    if (label.play !== undefined && label.play !== this.buffer.generation) return;
    if (this.clips[label.c] !== clip) return;
    this.pause();
    this.showError(`Frame ${label.n ?? '?'} of ${clip.path}: ${message.message} (${message.error})`);
  }

  /// One clip's session changed state; the status shows the worst of them.
  connectionChanged(clip, state, detail) {
    if (!this.clips.includes(clip)) return;
    const states = this.clips.map((other) => other.connection?.state ?? 'connecting');
    const shown = states.includes('closed') ? 'closed' : states.includes('connecting') ? 'connecting' : 'open';
    const status = $('#connection');
    status.dataset.state = shown;
    status.textContent = { open: 'connected', connecting: 'connecting…', closed: 'disconnected' }[shown];
    if (state === 'closed' && detail.startsWith('idle')) {
      status.textContent = 'idle'; // closed by the server after a long pause; the next action reconnects
    } else if (state === 'closed' && refusedForToken()) {
      this.showError('Authentication required: open this page with ?access_token=<token>', 'connection');
    } else if (state === 'closed') {
      this.showError(`Connection lost, ${detail}…`, 'connection');
    } else if (state === 'open') {
      if (shown === 'open' && $('#message').dataset.kind === 'connection') this.hideError();
      // Ask again for what the page shows: the first time, and after a reconnect.
      if (this.playing) {
        this.pause();
        this.show(this.position);
        this.play();
      } else {
        this.requestStill(this.clips.indexOf(clip), ++this.seq);
      }
    }
  }

  // ---- page ----

  renderPosition() {
    const clip = this.clips[0];
    if (!clip) return;
    const frame = clip.frames[this.position];
    $('#frame-input').value = String(this.position);
    $('#time').textContent = `${formatTime(frame.time)} / ${formatTime(clip.frames[clip.frameCount - 1].time)}`;
  }

  renderPlayButton() {
    const button = $('#play');
    button.querySelector('path').setAttribute('d', this.playing ? 'M3 2h4v12H3zM9 2h4v12H9z' : 'M4 2v12l10-6z');
    button.setAttribute('aria-label', this.playing ? 'pause' : 'play');
    button.title = this.playing ? 'Pause (Space)' : 'Play (Space)';
    button.setAttribute('aria-pressed', String(this.playing));
  }

  renderOverlay() {
    this.stats.bytes(this.clips.reduce((sum, clip) => sum + (clip.connection?.bytesReceived ?? 0), 0));
    const { fps, latency, bytesPerSecond } = this.stats.summary();
    $('#stat-fps').textContent = `${fps.toFixed(1)} fps`;
    $('#stat-latency').textContent = latency === null ? '– ms' : `${latency.toFixed(0)} ms`;
    $('#stat-bytes').textContent = formatBytes(bytesPerSecond);
    $('#stat-state').textContent = this.playing ? (this.stalled ? 'buffering' : 'playing') : 'paused';
  }

  updateUrl(now) {
    const time = performance.now();
    if (!now && time - this.lastUrlUpdate < 250) return;
    this.lastUrlUpdate = time;
    const params = new URLSearchParams();
    for (const clip of this.clips) params.append('video', clip.path);
    if (this.clips.length) params.set('frame', String(this.position));
    const query = params.toString().replace(/%2F/g, '/');
    history.replaceState(null, '', query ? `?${query}` : location.pathname);
  }

  showError(text, kind = 'error') {
    const box = $('#message');
    box.dataset.kind = kind;
    box.querySelector('.text').textContent = text;
    box.hidden = false;
  }

  hideError() {
    const box = $('#message');
    box.hidden = true;
    box.dataset.kind = '';
  }

  showEmpty(empty) {
    $('#empty').hidden = !empty;
  }

  bindControls() {
    $('#play').onclick = () => this.togglePlay();
    $('#step-back').onclick = () => this.step(-1);
    $('#step-forward').onclick = () => this.step(1);
    $('#key-back').onclick = () => this.jumpKeyframe(-1);
    $('#key-forward').onclick = () => this.jumpKeyframe(1);
    $('#loop').onclick = () => this.setLoop(!this.loop);
    $('#native').onclick = () => {
      this.native = !this.native;
      $('#native').setAttribute('aria-pressed', String(this.native));
    };
    $('#rate').onchange = (event) => {
      this.rate = event.target.value ? Number(event.target.value) : null;
    };
    $('#speed').onchange = (event) => {
      this.speed = Number(event.target.value);
    };
    $('#frame-input').onchange = (event) => {
      const n = Number.parseInt(event.target.value, 10);
      if (Number.isFinite(n) && this.clips.length) {
        this.pause();
        this.show(Math.min(Math.max(n, 0), this.clips[0].frameCount - 1));
      }
    };
    $('#message .close').onclick = () => this.hideError();
    this.setLoop(true);
  }

  setLoop(on) {
    this.loop = on;
    $('#loop').setAttribute('aria-pressed', String(on));
  }

  changeSpeed(direction) {
    const select = $('#speed');
    const index = SPEEDS.indexOf(this.speed);
    const next = SPEEDS[Math.min(Math.max(index + direction, 0), SPEEDS.length - 1)];
    this.speed = next;
    select.value = String(next);
  }
}

window.bucketStreamer = new App();
