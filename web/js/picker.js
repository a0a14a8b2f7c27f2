// The list of videos under the storage root (GET /api/v1/videos?prefix=),
// filtered by prefix as the user types. A click opens a video; `+` adds it
// to the grid. The open videos are highlighted.

import { api } from './auth.js';
import { formatBytes } from './stats.js';

export class Picker {
  constructor(list, filter, handlers) {
    this.list = list;
    this.handlers = handlers; // { open(path), add(path), error(message) }
    this.open = new Set();
    let timer;
    filter.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.load(filter.value), 200);
    });
    this.load('');
  }

  async load(prefix) {
    try {
      const response = await api(`/api/v1/videos?prefix=${encodeURIComponent(prefix)}`);
      const body = await response.json();
      if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
      this.list.replaceChildren(...body.videos.map((video) => this.item(video)));
      if (!body.videos.length) this.list.innerHTML = '<li class="none">no videos here</li>';
      this.mark(this.open);
    } catch (error) {
      this.list.replaceChildren();
      this.handlers.error(`Cannot list videos: ${error.message}`);
    }
  }

  item(video) {
    const item = document.createElement('li');
    item.dataset.path = video.path;
    const open = document.createElement('button');
    open.className = 'open';
    open.textContent = video.path;
    open.title = `Open ${video.path} (${formatBytes(video.size).replace('/s', '')})`;
    open.onclick = () => this.handlers.open(video.path);
    const add = document.createElement('button');
    add.className = 'add';
    add.textContent = '+';
    add.title = 'Add to the grid';
    add.onclick = () => this.handlers.add(video.path);
    item.append(open, add);
    return item;
  }

  /// Highlights the videos on screen.
  mark(paths) {
    this.open = new Set(paths);
    for (const item of this.list.querySelectorAll('li')) {
      item.classList.toggle('current', this.open.has(item.dataset.path));
    }
  }
}
