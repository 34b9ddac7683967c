// A finished recording, from IndexedDB to the server: a WAV file read from its chunks,
// its SHA-256, and a tus 1.0 upload to /api/audio/uploads that resumes from the server's
// offset after any interruption, as the Python agent's uploader does.

import {Sha256} from "./sha256.js";

export const UPLOADS_PATH = "/api/audio/uploads";
const TUS_VERSION = "1.0.0";
const PATCH_BYTES = 1 << 20; // ~1 MiB per PATCH: a cut costs at most that much

/** The upload stopped part-way (network, server restart): retrying resumes it. */
export class UploadInterrupted extends Error {}

/** The server will never take this file (it stays on the phone, marked refused). */
export class UploadRefused extends Error {}

/** A 44-byte RIFF/WAVE header for 16-bit PCM. */
export function wavHeader(frames, sampleRate, channels) {
  const dataBytes = frames * channels * 2;
  const header = new DataView(new ArrayBuffer(44));
  const text = (at, value) => {
    for (let i = 0; i < value.length; i++) header.setUint8(at + i, value.charCodeAt(i));
  };
  text(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  text(8, "WAVE");
  text(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, channels, true);
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * channels * 2, true); // byte rate
  header.setUint16(32, channels * 2, true); // block align
  header.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Uint8Array(header.buffer);
}

/**
 * A finished recording's WAV file as it lies in IndexedDB: the 44-byte header, then its
 * chunks' PCM cut at its frame count (a STOP may end it inside the last chunk written).
 * It is never built whole: an hour at 48 kHz is 345 MB, more than a phone's tab may hold.
 * `scan` walks the chunks once (hashing them); `read` gives any byte range from the few
 * chunks it covers.
 */
export class StoredWav {
  /**
   * @param {Store} store
   * @param {object} record the recording's record (id, rate, channels)
   * @param {number} frames frames in the file
   * @param {number[]} lengths PCM bytes the file takes from each chunk, by seq
   */
  constructor(store, record, frames, lengths) {
    this.store = store;
    this.recordingId = record.recording_id;
    this.frames = frames;
    this.header = wavHeader(frames, record.sample_rate, record.channels);
    // Where each chunk's bytes start in the file, and the end: a range finds its chunks
    // by binary search.
    this.starts = new Float64Array(lengths.length + 1);
    this.starts[0] = this.header.length;
    lengths.forEach((n, i) => { this.starts[i + 1] = this.starts[i] + n; });
    this.size = this.starts[lengths.length];
  }

  /**
   * Walk a recording's chunks in order, hashing the file they make.
   *
   * @param {Store} store
   * @param {object} record its record: `frames` says how long the file is, unless fewer
   *   frames reached IndexedDB (then the file is what there is, as a reload recovers it)
   * @returns {Promise<{wav: StoredWav, sha256: string, frames: number}>}
   */
  static async scan(store, record) {
    const frameBytes = 2 * record.channels;
    let frames = record.frames;
    // The header holds the length, which is known only at the end if chunks are missing:
    // hash as the record says, and once more with what there is if that was too much.
    for (;;) {
      const want = frames * frameBytes;
      const hash = new Sha256().update(wavHeader(frames, record.sample_rate, record.channels));
      const lengths = [];
      let got = 0;
      for await (const pcm of store.chunkStream(record.recording_id)) {
        const n = Math.min(pcm.byteLength, want - got);
        hash.update(new Uint8Array(pcm, 0, n));
        lengths.push(n);
        got += n;
        if (got >= want) break;
      }
      if (got === want) {
        return {wav: new StoredWav(store, record, frames, lengths), sha256: hash.hex(), frames};
      }
      frames = Math.floor(got / frameBytes);
    }
  }

  /**
   * The file's bytes [start, end), read from the chunks that hold them and no others.
   * @param {number} start
   * @param {number} end at most `size`
   * @returns {Promise<Uint8Array>}
   */
  async read(start, end) {
    const out = new Uint8Array(end - start);
    if (start < this.header.length) {
      out.set(this.header.subarray(start, Math.min(end, this.header.length)));
    }
    const starts = this.starts;
    let first = 0; // the last chunk starting at or before `start`
    let hi = starts.length - 2;
    while (first < hi) {
      const mid = (first + hi + 1) >> 1;
      if (starts[mid] <= start) first = mid;
      else hi = mid - 1;
    }
    let seq = first;
    while (seq < starts.length - 1 && starts[seq] < end) {
      // Chunks in the range, read a few at a time (one PATCH covers ~20 of 0.5 s).
      const chunks = await this.store.chunksFrom(this.recordingId, seq, 16);
      if (!chunks.length) throw new Error(`chunk ${seq} of ${this.recordingId} is gone`);
      for (const pcm of chunks) {
        const from = Math.max(start, starts[seq]);
        const to = Math.min(end, starts[seq + 1]);
        if (to > from) {
          out.set(new Uint8Array(pcm, from - starts[seq], to - from), from - start);
        }
        seq += 1;
        if (seq >= starts.length - 1 || starts[seq] >= end) break;
      }
    }
    return out;
  }
}

function base64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error}`;
  } catch (error) {
    return `HTTP ${response.status}`;
  }
}

async function fail(response) {
  const message = await errorOf(response);
  // 401/403: not paired yet, or the key changed; the file itself is fine: try later.
  if (response.status >= 500 || [401, 403, 404, 408, 409, 410, 423, 460].includes(response.status)) {
    throw new UploadInterrupted(message);
  }
  throw new UploadRefused(message);
}

/**
 * Send one recording with tus, from wherever the server is.
 *
 * @param {object} options
 * @param {object} options.record its IndexedDB record (ids, started_at, sha256, upload_url)
 * @param {{size: number, read: function(number, number): Promise<Uint8Array>}} options.file
 *   the file (a `StoredWav`): its size, and its bytes by range, a PATCH's worth at a time
 * @param {string} options.key the device key (`Authorization: Bearer`)
 * @param {function(string)} options.keepUrl keeps the upload's URL (to resume it later)
 * @param {function(number)} options.progress called with the fraction sent
 * @returns {Promise<{recordingId: string, sha256: string}>} what the server stored
 * @throws {UploadInterrupted} retry later; the next call resumes
 * @throws {UploadRefused} never retried
 */
export async function tusUpload({record, file, key, keepUrl, progress}) {
  const auth = {"Authorization": `Bearer ${key}`, "Tus-Resumable": TUS_VERSION};
  let url = record.upload_url || null;
  let offset = null;
  let response;
  try {
    if (url) {
      response = await fetch(url, {method: "HEAD", headers: auth, cache: "no-store"});
      if (response.status === 200) {
        if (response.headers.get("Vocalink-Recording-Id")) return stored(response);
        offset = Number(response.headers.get("Upload-Offset"));
      } else if (response.status !== 404 && response.status !== 410) {
        await fail(response);
      }
    }
    if (offset === null) {
      const fields = {
        recording_id: record.recording_id, device_id: record.device_id,
        take_id: record.take_id || "", started_at: String(record.started_at),
        sha256: record.sha256, filename: `${record.recording_id}.wav`,
      };
      const metadata = Object.entries(fields).filter(([, v]) => v)
        .map(([k, v]) => `${k} ${base64(v)}`).join(",");
      response = await fetch(UPLOADS_PATH, {
        method: "POST",
        headers: {...auth, "Upload-Length": String(file.size), "Upload-Metadata": metadata},
      });
      if (response.status !== 201 || !response.headers.get("Location")) await fail(response);
      url = response.headers.get("Location");
      await keepUrl(url);
      offset = 0;
    }
    for (let rounds = 0; rounds < 100000; rounds++) {
      progress(offset / file.size);
      const end = Math.min(offset + PATCH_BYTES, file.size);
      const body = await file.read(offset, end);
      response = await fetch(url, {
        method: "PATCH",
        headers: {...auth, "Content-Type": "application/offset+octet-stream",
          "Upload-Offset": String(offset)},
        body,
      });
      if (response.status === 204) {
        if (response.headers.get("Vocalink-Recording-Id")) {
          progress(1);
          return stored(response);
        }
        offset = Number(response.headers.get("Upload-Offset"));
        continue;
      }
      if (response.status === 409 && response.headers.get("Upload-Offset")) {
        offset = Number(response.headers.get("Upload-Offset")); // ours was stale
        continue;
      }
      await fail(response);
    }
    throw new UploadInterrupted("the upload offset kept moving; will retry");
  } catch (error) {
    if (error instanceof UploadInterrupted || error instanceof UploadRefused) throw error;
    throw new UploadInterrupted(String(error)); // fetch failed: the network
  }
}

function stored(response) {
  return {
    recordingId: response.headers.get("Vocalink-Recording-Id"),
    sha256: response.headers.get("Vocalink-Sha256") || "",
  };
}
