// Pictures received ahead of the playhead while playing: for each position
// (frame number of the first clip) one decoded picture per clip. A new
// generation starts at every play and pause, so answers to an abandoned run
// are recognised and dropped.

export class PlayBuffer {
  constructor() {
    this.generation = 0;
    this.pictures = new Map(); // position -> [{ bitmap, frame, seq }] by clip
    this.requested = new Set();
  }

  /// Forgets everything and starts a new generation.
  reset() {
    this.generation += 1;
    for (const pictures of this.pictures.values()) for (const entry of pictures) entry?.bitmap.close();
    this.pictures.clear();
    this.requested.clear();
  }

  /// True the first time a position is asked for in this generation.
  claim(position) {
    if (this.requested.has(position)) return false;
    this.requested.add(position);
    return true;
  }

  /// Stores a picture; false (and the picture is freed) if it belongs to an older generation.
  put(generation, position, clip, entry) {
    if (generation !== this.generation) {
      entry.bitmap.close();
      return false;
    }
    const pictures = this.pictures.get(position) ?? [];
    pictures[clip] = entry;
    this.pictures.set(position, pictures);
    return true;
  }

  /// The pictures of every clip at `position`, removed from the buffer; null if any is missing.
  take(position, clips) {
    const pictures = this.pictures.get(position);
    if (!pictures || pictures.filter(Boolean).length < clips) return null;
    this.pictures.delete(position);
    this.requested.delete(position);
    return pictures;
  }
}
