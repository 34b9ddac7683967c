// The capture worklet: runs on the audio thread and hands the page the microphone's
// samples, mono Float32, in batches, each with the context frame of its first sample.
//
// Frames are counted with the context's own `currentFrame`, so the page can place every
// sample on one timeline (and map it to its clock) even when the input had no data for a
// moment: a render quantum without input is sent as silence, never skipped.

const BATCH_FRAMES = 1024; // about 21 ms at 48 kHz: few messages, fine enough for a meter

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.batch = new Float32Array(BATCH_FRAMES);
    this.filled = 0;
    this.batchStart = 0;
  }

  process(inputs) {
    const input = inputs[0];
    const channel = input && input.length > 0 ? input[0] : null;
    // A quantum is 128 frames today; a future render size hint may change it.
    const frames = channel ? channel.length : 128;
    let done = 0;
    while (done < frames) {
      if (this.filled === 0) this.batchStart = currentFrame + done;
      const take = Math.min(frames - done, BATCH_FRAMES - this.filled);
      if (channel) {
        this.batch.set(channel.subarray(done, done + take), this.filled);
      } else {
        this.batch.fill(0, this.filled, this.filled + take);
      }
      this.filled += take;
      done += take;
      if (this.filled === BATCH_FRAMES) {
        const samples = this.batch;
        this.port.postMessage({frame: this.batchStart, samples}, [samples.buffer]);
        this.batch = new Float32Array(BATCH_FRAMES);
        this.filled = 0;
      }
    }
    return true; // keep running while the page lives
  }
}

registerProcessor("vocalink-capture", CaptureProcessor);
