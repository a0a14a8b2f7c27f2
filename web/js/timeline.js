// The scrubber under the picture: keyframe ticks, the playhead, pointer
// dragging that reports the frame under the pointer as it moves, and, when
// hovering, the thumbnail of the keyframe at or before the pointer (from the
// server's thumbnail strip).

export class Timeline {
  constructor(element, onscrub) {
    this.element = element;
    this.canvas = element.querySelector('canvas');
    this.head = element.querySelector('.playhead');
    this.thumb = element.querySelector('.thumb');
    this.strip = null;
    this.onscrub = onscrub; // (frame, dragging) => void
    this.frameCount = 1;
    this.keyframes = [];
    this.position = 0;
    this.dragging = false;
    element.addEventListener('pointerdown', (event) => {
      if (event.button !== 0) return;
      element.setPointerCapture(event.pointerId);
      this.dragging = true;
      this.onscrub(this.frameAtPointer(event), true);
    });
    element.addEventListener('pointermove', (event) => {
      if (this.dragging) this.onscrub(this.frameAtPointer(event), true);
      this.hover(event);
    });
    element.addEventListener('pointerleave', () => {
      this.thumb.hidden = true;
    });
    const release = (event) => {
      if (!this.dragging) return;
      this.dragging = false;
      this.onscrub(this.frameAtPointer(event), false);
    };
    element.addEventListener('pointerup', release);
    element.addEventListener('pointercancel', release);
    new ResizeObserver(() => this.render()).observe(element);
  }

  setVideo(frameCount, keyframes) {
    this.frameCount = Math.max(frameCount, 1);
    this.keyframes = keyframes;
    this.setThumbnails(null);
    this.render();
  }

  /// The thumbnail strip of the video: its map (`tiles`) and the sprite's
  /// object URL; null while there is none.
  setThumbnails(strip) {
    if (this.strip) URL.revokeObjectURL(this.strip.url);
    this.strip = strip;
    this.thumb.hidden = true;
  }

  /// Shows the tile of the last thumbnail at or before the frame under the pointer.
  hover(event) {
    const tiles = this.strip?.tiles;
    if (!tiles?.length) return;
    const frame = this.frameAtPointer(event);
    let tile = tiles[0];
    for (const candidate of tiles) {
      if (candidate.frame > frame) break;
      tile = candidate;
    }
    const box = this.element.getBoundingClientRect();
    const left = Math.min(Math.max(event.clientX - box.left - tile.w / 2, 0), Math.max(box.width - tile.w, 0));
    Object.assign(this.thumb.style, {
      left: `${left}px`,
      width: `${tile.w}px`,
      height: `${tile.h}px`,
      backgroundImage: `url(${this.strip.url})`,
      backgroundPosition: `-${tile.x}px -${tile.y}px`,
    });
    this.thumb.querySelector('.when').textContent = `${tile.frame}`;
    this.thumb.dataset.frame = String(tile.frame);
    this.thumb.hidden = false;
  }

  frameAtPointer(event) {
    const box = this.element.getBoundingClientRect();
    const fraction = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
    return Math.round(fraction * (this.frameCount - 1));
  }

  xOf(frame) {
    const last = Math.max(this.frameCount - 1, 1);
    return (frame / last) * this.element.clientWidth;
  }

  setPosition(frame) {
    this.position = frame;
    this.head.style.transform = `translateX(${this.xOf(frame)}px)`;
  }

  render() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.element.clientWidth;
    const height = this.element.clientHeight;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const context = this.canvas.getContext('2d');
    context.scale(ratio, ratio);
    context.fillStyle = '#2a2f3a';
    context.fillRect(0, height / 2 - 2, width, 4);
    context.fillStyle = '#7aa2f7';
    for (const keyframe of this.keyframes) {
      const x = Math.round(this.xOf(keyframe)) + 0.5;
      context.fillRect(x - 0.5, height * 0.2, 1, height * 0.6);
    }
    this.setPosition(this.position);
  }
}
