// The microphone: getUserMedia -> AudioWorklet -> Float32 blocks on one frame timeline,
// mapped to the page clock.
//
// The page clock is what the device reports to the server (SYNC, ACK, RECORDING):
// seconds since 1970, from `performance.timeOrigin + performance.now()`. Every block comes
// with the context frame of its first sample; a frame is mapped to the page clock by an
// offset (page time of frame 0) estimated from the blocks' arrival: a block cannot arrive
// before its last sample was captured, so the smallest `arrival - end_frame / rate` over
// the last seconds is the offset, give or take the audio callback's granularity (a few ms).

/** The page clock: seconds since 1970 (what SYNC, ACK and RECORDING carry). */
export function pageNow() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

const OFFSET_WINDOW_S = 3; // the minimum is taken over this long: drift stays negligible
const PREROLL_S = 1.5; // kept so that a START arriving a little late starts at its instant

export class Capture {
  constructor() {
    this.context = null;
    this.stream = null;
    this.node = null;
    this.listeners = new Set();
    this.endFrame = 0; // the frame after the last one received
    this.preroll = []; // recent blocks: {frame, samples}
    this.candidates = []; // {arrival, offset} of recent blocks, for the windowed minimum
    this.inputLatency = 0;
    this.sumSquares = 0;
    this.count = 0;
    this.peak = 0;
    this.meter = 0; // RMS of the latest blocks, for the meter on screen
    this.blocks = 0;
  }

  /** The context's real rate (what is recorded, whatever a START wishes). */
  get sampleRate() {
    return this.context ? this.context.sampleRate : null;
  }

  /** Whether samples flow. */
  get running() {
    return !!this.context && this.context.state === "running" && !!this.node && this.blocks > 0;
  }

  /**
   * Create the audio context (suspended until the page may play audio): its rate is
   * known at once, before the microphone is granted.
   */
  prepare() {
    if (!this.context) this.context = new AudioContext({latencyHint: "interactive"});
    return this.context.sampleRate;
  }

  /** Ask for the microphone and start the worklet; true once the context runs. */
  async open() {
    this.prepare();
    if (!this.stream) {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: false, noiseSuppression: false, autoGainControl: false,
          channelCount: 1,
        },
      });
      const [track] = this.stream.getAudioTracks();
      const settings = track && track.getSettings ? track.getSettings() : {};
      // What the browser says the capture path delays (Chromium reports it); the samples
      // were heard that much before the worklet saw them.
      this.inputLatency = typeof settings.latency === "number" ? settings.latency : 0;
    }
    if (!this.node) {
      const context = this.context;
      await context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
      const source = context.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(context, "vocalink-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers",
      });
      this.node.port.onmessage = (event) => this.received(event.data);
      source.connect(this.node);
      // Pulled by the destination so that it always runs; it outputs silence.
      this.node.connect(context.destination);
    }
    return this.resume();
  }

  /** Resume the context (needs a user's tap on most phones); true once it runs. */
  async resume() {
    if (this.context && this.context.state !== "running") {
      try {
        await Promise.race([this.context.resume(),
          new Promise((resolve) => setTimeout(resolve, 1000))]);
      } catch (error) {
        // Not allowed yet: the page asks for a tap.
      }
    }
    return !!this.context && this.context.state === "running";
  }

  /** Call `listener(frame, samples)` for every block. */
  onBlock(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  received({frame, samples}) {
    const rate = this.context.sampleRate;
    const end = frame + samples.length;
    const arrival = pageNow();
    this.blocks += 1;
    this.endFrame = end;
    const candidates = this.candidates;
    candidates.push({arrival, offset: arrival - end / rate});
    while (candidates.length && candidates[0].arrival < arrival - OFFSET_WINDOW_S) {
      candidates.shift();
    }
    let sum = 0;
    let peak = 0;
    for (let i = 0; i < samples.length; i++) {
      const x = samples[i];
      sum += x * x;
      const a = x < 0 ? -x : x;
      if (a > peak) peak = a;
    }
    this.sumSquares += sum;
    this.count += samples.length;
    if (peak > this.peak) this.peak = peak;
    this.meter = 0.7 * this.meter + 0.3 * Math.sqrt(sum / samples.length);
    const preroll = this.preroll;
    preroll.push({frame, samples});
    while (preroll.length && preroll[0].frame + preroll[0].samples.length
           < end - PREROLL_S * rate) {
      preroll.shift();
    }
    for (const listener of this.listeners) listener(frame, samples);
  }

  /** Page time of frame 0 (see the top of this file); null before the first block. */
  get offset() {
    if (!this.candidates.length) return null;
    let best = Infinity;
    for (const c of this.candidates) if (c.offset < best) best = c.offset;
    return best - this.inputLatency;
  }

  /** The frame heard at page time `t` (seconds since 1970), with the given offset. */
  frameAt(t, offset = this.offset) {
    return Math.round((t - offset) * this.context.sampleRate);
  }

  /** The page time at which `frame` was heard, with the given offset. */
  timeOf(frame, offset = this.offset) {
    return offset + frame / this.context.sampleRate;
  }

  /** Blocks still held that end after `frame` (a late START starts from them). */
  blocksSince(frame) {
    return this.preroll.filter((b) => b.frame + b.samples.length > frame);
  }

  /** The oldest frame still held. */
  get oldestFrame() {
    return this.preroll.length ? this.preroll[0].frame : this.endFrame;
  }

  /** RMS and peak level (dBFS) since the last call, and forget them; null if none. */
  takeLevels() {
    if (!this.count) return {level: null, peak: null};
    const level = dbfs(Math.sqrt(this.sumSquares / this.count));
    const peak = dbfs(this.peak);
    this.sumSquares = 0;
    this.count = 0;
    this.peak = 0;
    return {level, peak};
  }
}

/** An amplitude in dBFS, floored at -120 as the server's `levels.FLOOR_DBFS`. */
export function dbfs(amplitude) {
  if (!(amplitude > 1e-6)) return -120;
  return Math.max(-120, Math.min(100, 20 * Math.log10(amplitude)));
}
