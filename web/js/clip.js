// One video on the page: its frame index (from /api/v1/index?video=), its
// WebSocket session (/ws?video=: the video in the URL is what a load
// balancer routes by, so every viewer of a video reaches the server that
// has it open), its canvas and the picture drawn on it. Knows which frame
// is shown at a time and where the keyframes are; never draws a picture
// older than the one it shows.

import { api, withToken } from './auth.js';
import { Connection } from './connection.js';

/// `?video=<path>` as every client encodes it (URLSearchParams), so all
/// viewers of a video hash to the same server.
export function videoQuery(path) {
  return new URLSearchParams({ video: path }).toString();
}

export class Clip {
  constructor(path, index, element) {
    this.path = path;
    this.index = index;
    this.frames = index.frames;
    this.element = element;
    this.canvas = element.querySelector('canvas');
    this.canvas.width = index.width;
    this.canvas.height = index.height;
    this.context = this.canvas.getContext('2d', { alpha: false });
    this.caption = element.querySelector('.caption');
    this.shownFrame = -1;
    this.shownSeq = -1;
    this.keyframes = this.frames.filter((frame) => frame.keyframe).map((frame) => frame.index);
  }

  static async load(path, element) {
    const response = await api(`/api/v1/index?${videoQuery(path)}`);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.message || `cannot open ${path}: HTTP ${response.status}`);
    }
    return new Clip(path, body, element);
  }

  /// Opens this clip's session; `handlers` as for `Connection`.
  connect(handlers) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = () => withToken(`${scheme}//${location.host}/ws?${videoQuery(this.path)}`);
    this.connection = new Connection(url, handlers);
  }

  /// Sends a request on this clip's session.
  send(message) {
    return this.connection?.send(message) ?? false;
  }

  /// Ends the session for good (the clip left the page).
  close() {
    this.connection?.close();
  }

  get frameCount() {
    return this.frames.length;
  }

  get frameRate() {
    return this.index.frame_rate || 25;
  }

  /// The frame shown at `time` seconds: the last one starting at or before it.
  frameAt(time) {
    let low = 0;
    let high = this.frames.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.frames[middle].time <= time + 1e-6) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  /// The keyframe that starts the group of pictures `frame` is in, and how
  /// many decode steps from it `frame` costs (its decode position minus the
  /// keyframe's: what a seek to it decodes, at most).
  keyframeOf(frame) {
    let low = 0;
    let high = this.keyframes.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.keyframes[middle] <= frame) low = middle;
      else high = middle - 1;
    }
    const key = this.keyframes[low] ?? 0;
    return { key, distance: frame - key };
  }

  previousKeyframe(frame) {
    const before = this.keyframes.filter((k) => k < frame);
    return before.length ? before[before.length - 1] : 0;
  }

  nextKeyframe(frame) {
    return this.keyframes.find((k) => k > frame) ?? this.frameCount - 1;
  }

  /// The `output` of a request for a picture that is passing by (playing,
  /// dragging): the size the canvas shows on screen in device pixels
  /// (rounded up to 64, so a small resize reuses the server's cached
  /// frames), so the server encodes and the browser decodes no more than is
  /// seen. Undefined, the video's own size, when that is not larger.
  passingOutput() {
    const shown = this.canvas.getBoundingClientRect().width * (window.devicePixelRatio || 1);
    const width = Math.ceil(shown / 64) * 64;
    return width > 0 && width < this.index.width ? { width } : undefined;
  }

  /// Fetches the video's thumbnail strip: its map and the sprite as an object URL.
  async thumbnails() {
    const response = await api(`/api/v1/thumbnails?${videoQuery(this.path)}&width=160`);
    if (!response.ok) return null;
    const map = await response.json();
    const sprite = await api(map.sprite);
    if (!sprite.ok) return null;
    return { tiles: map.tiles, url: URL.createObjectURL(await sprite.blob()) };
  }

  /// What a RequestFrames entry for frame `n` looks like (on this clip's session).
  request(n, label) {
    const frame = this.frames[n];
    return { offset: frame.offset, irap_offset: frame.irap_offset, index: label };
  }

  /// Draws a decoded picture unless a newer request's picture is already shown.
  draw(bitmap, frame, seq) {
    if (seq < this.shownSeq) {
      bitmap.close();
      return false;
    }
    // The canvas holds the picture at the size it came (CSS fits it to the
    // box): a scaled frame drawn into a native-size 4K canvas made the
    // browser scale it up and the page scale it down again, a frame's worth
    // of software raster each way.
    if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
      this.canvas.width = bitmap.width;
      this.canvas.height = bitmap.height;
    }
    this.context.drawImage(bitmap, 0, 0);
    this.shownWidth = bitmap.width; // smaller than the video's when it came scaled
    bitmap.close();
    this.shownSeq = seq;
    this.shownFrame = frame;
    this.describe();
    return true;
  }

  describe() {
    const frame = this.frames[this.shownFrame];
    if (!frame) return;
    const key = frame.keyframe ? '<span class="key" title="keyframe (IRAP)">K</span>' : '';
    this.caption.innerHTML = '';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = this.path;
    const facts = document.createElement('span');
    facts.className = 'facts';
    facts.innerHTML = `frame <b>${frame.index}</b> / ${this.frameCount - 1} · ${formatTime(frame.time)} ${key} · ${this.index.width}×${this.index.height}`;
    this.caption.append(name, facts);
  }
}

export function formatTime(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = seconds - minutes * 60;
  return `${minutes}:${rest.toFixed(3).padStart(6, '0')}`;
}
