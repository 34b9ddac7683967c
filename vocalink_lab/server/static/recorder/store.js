// The page's outbox, in IndexedDB: every recording's PCM chunks as they are captured and
// a record of what it is, kept until the server confirms it stored the same bytes.
//
// Two object stores: `recordings` (one record per recording, keyed by its id: ids, rate,
// frames, state, sha256, upload URL) and `chunks` (16-bit PCM, keyed by
// [recording_id, seq]). A lost connection, or a closed tab, loses nothing already written.

const DB_NAME = "vocalink-recorder";
const DB_VERSION = 1;
// Chunks read together: 0.5 s each, so 16 of them are ~0.8 MB at 48 kHz.
const CHUNK_BATCH = 16;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}

/**
 * Ask for the commit at once (IndexedDB 3.0) instead of when the page's event loop next
 * turns: a tab closed or reloaded right after a write still keeps it, since the commit
 * already reached the browser's storage. Older browsers auto-commit as before.
 */
function commitNow(tx) {
  if (typeof tx.commit === "function") tx.commit();
}

export class Store {
  constructor(db) {
    this.db = db;
  }

  /** Open (and create on first use) the database. */
  static async open() {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("recordings")) {
        db.createObjectStore("recordings", {keyPath: "recording_id"});
      }
      if (!db.objectStoreNames.contains("chunks")) {
        db.createObjectStore("chunks", {keyPath: ["recording_id", "seq"]});
      }
    };
    return new Store(await request(req));
  }

  /** Write (or replace) a recording's record. */
  async putRecording(record) {
    const tx = this.db.transaction("recordings", "readwrite");
    tx.objectStore("recordings").put(record);
    commitNow(tx);
    await done(tx);
  }

  /** Merge `changes` into a recording's record; return the record (null if gone). */
  async updateRecording(recordingId, changes) {
    const tx = this.db.transaction("recordings", "readwrite");
    const recordings = tx.objectStore("recordings");
    const record = await request(recordings.get(recordingId));
    if (record) recordings.put(Object.assign(record, changes));
    await done(tx);
    return record || null;
  }

  /** Every recording's record. */
  async recordings() {
    const tx = this.db.transaction("recordings", "readonly");
    const all = await request(tx.objectStore("recordings").getAll());
    await done(tx);
    return all;
  }

  /** Append a chunk of 16-bit PCM (an ArrayBuffer) to a recording. */
  async putChunk(recordingId, seq, pcm) {
    const tx = this.db.transaction("chunks", "readwrite");
    tx.objectStore("chunks").put({recording_id: recordingId, seq, pcm});
    commitNow(tx);
    await done(tx);
  }

  /**
   * Up to `count` of a recording's chunks from `seq` on, in order (ArrayBuffers), up to the
   * first one missing: chunks are written side by side, and a tab closed meanwhile may keep
   * a later one without an earlier one; what follows a hole would play at the wrong time.
   */
  async chunksFrom(recordingId, seq, count) {
    const tx = this.db.transaction("chunks", "readonly");
    const range = IDBKeyRange.bound([recordingId, seq], [recordingId, seq + count - 1]);
    const found = await request(tx.objectStore("chunks").getAll(range));
    await done(tx);
    const chunks = [];
    for (const c of found) { // in key order, so by seq
      if (c.seq !== seq + chunks.length) break;
      chunks.push(c.pcm);
    }
    return chunks;
  }

  /**
   * A recording's chunks in order, up to the first one missing, read `batch` at a time:
   * an hour-long recording (345 MB at 48 kHz) is never all in memory.
   */
  async *chunkStream(recordingId, batch = CHUNK_BATCH) {
    for (let seq = 0; ; seq += batch) {
      const chunks = await this.chunksFrom(recordingId, seq, batch);
      yield* chunks;
      if (chunks.length < batch) return;
    }
  }

  /** Forget a recording: its record and its chunks, together. */
  async deleteRecording(recordingId) {
    const tx = this.db.transaction(["recordings", "chunks"], "readwrite");
    tx.objectStore("recordings").delete(recordingId);
    tx.objectStore("chunks").delete(IDBKeyRange.bound([recordingId, 0], [recordingId, Infinity]));
    await done(tx);
  }
}
