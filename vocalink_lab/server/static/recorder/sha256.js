// SHA-256 (FIPS 180-4) fed piece by piece. crypto.subtle.digest wants the whole input in
// one buffer, and an hour-long recording does not fit in a phone's memory: the page hashes
// the file a few IndexedDB chunks at a time instead.
//
// Plain 32-bit integer arithmetic (`| 0`, `>>>`) over Int32Arrays, a block loop with its
// state in locals: what V8 compiles well (about 150 MB/s in Chromium on 2 busy cores).

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const INITIAL = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/**
 * Run the compression function over the 64-byte blocks of `bytes[at, end)`.
 * @param {Int32Array} state the eight working words, updated in place
 * @param {Int32Array} w a 64-word scratch schedule
 * @param {Uint8Array} bytes
 * @param {number} at first byte (a block's start)
 * @param {number} end past the last whole block
 */
function compress(state, w, bytes, at, end) {
  let h0 = state[0], h1 = state[1], h2 = state[2], h3 = state[3];
  let h4 = state[4], h5 = state[5], h6 = state[6], h7 = state[7];
  for (; at + 64 <= end; at += 64) {
    for (let i = 0, p = at; i < 16; i++, p += 4) {
      w[i] = (bytes[p] << 24) | (bytes[p + 1] << 16) | (bytes[p + 2] << 8) | bytes[p + 3];
    }
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15];
      const b = w[i - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0;
      d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
  }
  state[0] = h0; state[1] = h1; state[2] = h2; state[3] = h3;
  state[4] = h4; state[5] = h5; state[6] = h6; state[7] = h7;
}

/** An incremental SHA-256: `update` with the input's pieces in order, then `hex`. */
export class Sha256 {
  constructor() {
    this.state = new Int32Array(INITIAL);
    this.w = new Int32Array(64);
    this.pending = new Uint8Array(64); // the start of a block not yet complete
    this.filled = 0;
    this.length = 0; // bytes taken in
  }

  /**
   * Take in the next bytes of the input.
   * @param {Uint8Array} bytes
   * @returns {Sha256} this
   */
  update(bytes) {
    const n = bytes.length;
    let at = 0;
    this.length += n;
    if (this.filled) {
      at = Math.min(64 - this.filled, n);
      this.pending.set(bytes.subarray(0, at), this.filled);
      this.filled += at;
      if (this.filled < 64) return this;
      compress(this.state, this.w, this.pending, 0, 64);
      this.filled = 0;
    }
    // Whole blocks straight from the caller's bytes: no copy.
    const whole = at + ((n - at) & ~63);
    compress(this.state, this.w, bytes, at, whole);
    if (whole < n) {
      this.pending.set(bytes.subarray(whole), 0);
      this.filled = n - whole;
    }
    return this;
  }

  /**
   * The digest of what was taken in so far (more may still be added after).
   * @returns {Uint8Array} 32 bytes
   */
  digest() {
    const state = new Int32Array(this.state);
    // Padding: 0x80, zeros, then the length in bits as 64-bit big-endian, ending a block.
    const tail = new Uint8Array(this.filled < 56 ? 64 : 128);
    tail.set(this.pending.subarray(0, this.filled));
    tail[this.filled] = 0x80;
    const view = new DataView(tail.buffer);
    view.setUint32(tail.length - 8, Math.floor(this.length / 0x20000000));
    view.setUint32(tail.length - 4, (this.length % 0x20000000) * 8);
    compress(state, new Int32Array(64), tail, 0, tail.length);
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) outView.setInt32(i * 4, state[i]);
    return out;
  }

  /**
   * The digest in lower-case hex.
   * @returns {string}
   */
  hex() {
    return Array.from(this.digest(), (b) => b.toString(16).padStart(2, "0")).join("");
  }
}
