// One recording in progress: the capture's blocks from its first frame to its last,
// as 16-bit PCM chunks written to IndexedDB as they come.
//
// A take is frames [startFrame, stopFrame) of the capture's timeline. Both ends are set
// from instants of the page clock (a START's or STOP's `start_at`, or now), mapped to
// frames once with the offset in force at the START, so its length is exact to the
// sample: stopFrame = startFrame + round((stop_at - started_at) * rate), as the Python
// agent does.
//
// A PAUSE leaves frames [pause, resume) of the timeline out of the file (a RESUME's frame
// is mapped the same way): the file is the take's frames less the paused ones, and the
// take still ends at the STOP's instant, paused or not.

const CHUNK_S = 0.5; // PCM held in memory before it goes to IndexedDB

export class Take {
  /**
   * @param {object} options
   * @param {Capture} options.capture
   * @param {Store} options.store
   * @param {string} options.recordingId
   * @param {string|null} options.takeId
   * @param {string} options.deviceId
   * @param {number} options.startFrame first frame (capture timeline)
   * @param {number} options.offset the page time of frame 0 used for this take
   * @param {boolean} options.offline whether the server is unreachable now
   */
  constructor({capture, store, recordingId, takeId, deviceId, startFrame, offset, offline}) {
    this.capture = capture;
    this.store = store;
    this.recordingId = recordingId;
    this.takeId = takeId;
    this.deviceId = deviceId;
    this.sampleRate = capture.sampleRate;
    this.startFrame = startFrame;
    this.offset = offset;
    this.startedAt = capture.timeOf(startFrame, offset);
    this.stopFrame = null;
    this.maxFrames = null; // a START's duration_s: frames recorded, pauses not counted
    this.offline = offline;
    this.cursor = startFrame; // the next frame of the timeline to take in (or leave out)
    this.captured = 0; // frames in the file so far
    this.pauses = []; // [{from, to}] frames left out; `to` null while paused
    this.parts = [];
    this.partFrames = 0;
    this.seq = 0;
    this.error = null;
    this.writing = Promise.resolve();
    this.finishing = null;
    this.chunkFrames = Math.round(CHUNK_S * this.sampleRate);
    this.started = new Promise((resolve) => { this.markStarted = resolve; });
    this.finished = new Promise((resolve, reject) => {
      this.markFinished = resolve;
      this.markFailed = reject;
    });
    this.unsubscribe = null;
    this.createdAt = Date.now();
  }

  /** The record kept in IndexedDB (what RECORDING announces, once finished). */
  record(extra = {}) {
    return {
      recording_id: this.recordingId, take_id: this.takeId, device_id: this.deviceId,
      started_at: this.startedAt, sample_rate: this.sampleRate, channels: 1, format: "wav",
      frames: this.frames, offline: this.offline, state: "recording", created_at: this.createdAt,
      ...extra,
    };
  }

  /** Frames in the take so far (never past its end). */
  get frames() {
    return this.stopFrame === null ? this.captured
      : Math.min(this.captured, this.keptBetween(this.startFrame, this.stopFrame));
  }

  /** Whether the take is paused. */
  get paused() {
    const last = this.pauses[this.pauses.length - 1];
    return !!last && last.to === null;
  }

  /** The timeline frame heard at page time `t`, counted from the take's own start. */
  frameAt(t) {
    return this.startFrame + Math.round((t - this.startedAt) * this.sampleRate);
  }

  /** Leave out the frames from `frame` on (those already in the file stay). */
  pause(frame) {
    this.pauses.push({from: Math.max(frame, this.cursor), to: null});
  }

  /** Take frames in again from `frame` on (those already left out stay out). */
  resume(frame) {
    const last = this.pauses[this.pauses.length - 1];
    last.to = Math.max(frame, last.from, this.cursor);
  }

  /** How many of the timeline's frames [from, to) are not paused. */
  keptBetween(from, to) {
    let kept = Math.max(0, to - from);
    for (const p of this.pauses) {
      const end = p.to === null ? to : Math.min(p.to, to);
      kept -= Math.max(0, end - Math.max(p.from, from));
    }
    return kept;
  }

  /** Seconds recorded so far. */
  get elapsed() {
    return this.frames / this.sampleRate;
  }

  /** Write its record, take in the blocks already held, and follow the capture. */
  async begin() {
    await this.store.putRecording(this.record());
    for (const block of this.capture.blocksSince(this.startFrame)) {
      this.feed(block.frame, block.samples);
    }
    this.unsubscribe = this.capture.onBlock((frame, samples) => this.feed(frame, samples));
  }

  /** End the take at `stopFrame` (it finishes once that frame is captured). */
  stopAt(stopFrame) {
    this.stopFrame = Math.max(this.startFrame, stopFrame);
    if (this.cursor >= this.stopFrame) this.finish();
    return this.finished;
  }

  feed(frame, samples) {
    if (this.finishing) return;
    const end = frame + samples.length;
    // A gap in the capture (the context was suspended): silence keeps the timeline.
    if (frame > this.cursor) this.advance(frame, null, frame);
    if (end > this.cursor) this.advance(end, samples, frame);
    if (end > this.startFrame) this.markStarted(this.startedAt);
    if (this.stopFrame !== null && this.cursor >= this.stopFrame) this.finish();
  }

  /**
   * Move the cursor to `to` (not past the end), taking in what is not paused: `samples`
   * (whose first frame is `frame`), or silence if null.
   */
  advance(to, samples, frame) {
    const limit = this.stopFrame === null ? to : Math.min(to, this.stopFrame);
    let at = this.cursor;
    while (at < limit) {
      const pause = this.pauses.find((p) => p.to === null || p.to > at);
      if (pause && pause.from <= at) { // left out
        at = pause.to === null ? limit : Math.min(limit, pause.to);
        continue;
      }
      let until = pause ? Math.min(limit, pause.from) : limit;
      if (this.maxFrames !== null) until = Math.min(until, at + this.maxFrames - this.captured);
      this.append(samples ? samples.subarray(at - frame, until - frame)
        : new Float32Array(until - at));
      at = until;
      if (this.maxFrames !== null && this.captured >= this.maxFrames) {
        this.stopFrame = at; // the START's duration is reached
        break;
      }
    }
    this.cursor = at;
  }

  append(floats) {
    if (!floats.length) return;
    const pcm = new Int16Array(floats.length);
    for (let i = 0; i < floats.length; i++) {
      const x = floats[i];
      // Clip, not wrap; round to nearest.
      pcm[i] = x >= 1 ? 32767 : x <= -1 ? -32768 : Math.round(x * 32767);
    }
    this.parts.push(pcm);
    this.partFrames += pcm.length;
    this.captured += pcm.length;
    if (this.partFrames >= this.chunkFrames) this.flush();
  }

  flush() {
    if (!this.partFrames) return;
    const chunk = new Int16Array(this.partFrames);
    let at = 0;
    for (const part of this.parts) {
      chunk.set(part, at);
      at += part.length;
    }
    this.parts = [];
    this.partFrames = 0;
    const seq = this.seq++;
    // Sent at once, not after the previous write: a page about to unload (pagehide) has
    // no later turn of its event loop to send it in. Chunks are keyed by seq, so their
    // order on disk does not matter; a failure (a full disk) is kept and reported.
    const write = this.store.putChunk(this.recordingId, seq, chunk.buffer)
      .catch((error) => { this.error = this.error || error; });
    this.writing = Promise.all([this.writing, write]);
  }

  /** Stop taking blocks, write what is left, mark the record finished. */
  finish() {
    if (this.finishing) return this.finishing;
    if (this.unsubscribe) this.unsubscribe();
    if (this.stopFrame === null) this.stopFrame = this.cursor;
    this.markStarted(this.startedAt);
    this.flush();
    this.finishing = (async () => {
      await this.writing;
      if (this.error) throw this.error;
      const record = this.record({state: "finished"});
      await this.store.putRecording(record);
      return record;
    })();
    this.finishing.then(this.markFinished, this.markFailed);
    return this.finishing;
  }
}
