// A finished recording, from IndexedDB to the server: a WAV file built from its chunks,
// its SHA-256, and a tus 1.0 upload to /api/audio/uploads that resumes from the server's
// offset after any interruption, as the Python agent's uploader does.

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
 * The recording as a WAV file: header + its chunks, cut at its frame count (a STOP may
 * end it inside the last chunk written).
 */
export async function buildWav(store, record) {
  const chunks = await store.chunks(record.recording_id);
  const available = chunks.reduce((n, c) => n + c.byteLength, 0) / 2 / record.channels;
  const frames = Math.min(record.frames, available);
  const dataBytes = frames * record.channels * 2;
  const wav = new Uint8Array(44 + dataBytes);
  wav.set(wavHeader(frames, record.sample_rate, record.channels), 0);
  let at = 44;
  for (const chunk of chunks) {
    if (at >= wav.length) break;
    const bytes = new Uint8Array(chunk, 0, Math.min(chunk.byteLength, wav.length - at));
    wav.set(bytes, at);
    at += bytes.length;
  }
  return {wav, frames};
}

/** SHA-256 of `bytes`, in lower-case hex. */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
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
 * @param {Uint8Array} options.wav the file
 * @param {string} options.key the device key (`Authorization: Bearer`)
 * @param {function(string)} options.keepUrl keeps the upload's URL (to resume it later)
 * @param {function(number)} options.progress called with the fraction sent
 * @returns {Promise<{recordingId: string, sha256: string}>} what the server stored
 * @throws {UploadInterrupted} retry later; the next call resumes
 * @throws {UploadRefused} never retried
 */
export async function tusUpload({record, wav, key, keepUrl, progress}) {
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
        headers: {...auth, "Upload-Length": String(wav.length), "Upload-Metadata": metadata},
      });
      if (response.status !== 201 || !response.headers.get("Location")) await fail(response);
      url = response.headers.get("Location");
      await keepUrl(url);
      offset = 0;
    }
    for (let rounds = 0; rounds < 100000; rounds++) {
      progress(offset / wav.length);
      const end = Math.min(offset + PATCH_BYTES, wav.length);
      response = await fetch(url, {
        method: "PATCH",
        headers: {...auth, "Content-Type": "application/offset+octet-stream",
          "Upload-Offset": String(offset)},
        body: wav.subarray(offset, end),
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
