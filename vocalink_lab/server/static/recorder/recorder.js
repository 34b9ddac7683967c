// The browser recorder: this page is a vocalink device, as the Python agent is.
//
// It registers on /ws/control (with its device key, or the join code of its URL), answers
// SYNC from the page clock, obeys START / STOP / PAUSE / RESUME / PING and ACKs each one,
// reports STATUS
// every second, keeps what it records in IndexedDB as it comes, and uploads each finished
// recording with tus, deleting it only once the server reports the same SHA-256. The
// connection, the capture and the uploads each go on when the others stop.
//
// It stays one module of about 600 lines: the `Recorder` holds the device's state (the
// connection, the take, the outbox), which its parts all read. What stands alone lives
// in its own module: capture.js (microphone and page clock), take.js (a recording in
// progress), store.js (IndexedDB), upload.js (WAV, SHA-256, tus), identity.js.

import {Capture, pageNow} from "./capture.js";
import {cleanName, defaultName, keepKey, keepName, loadIdentity, randomHex} from "./identity.js";
import {Store} from "./store.js";
import {Take} from "./take.js";
import {StoredWav, UploadInterrupted, UploadRefused, tusUpload} from "./upload.js";

const PROTOCOL = 1;
const WS_PATH = "/ws/control";
const RECONNECT_MIN_S = 0.2;
const RECONNECT_MAX_S = 10;
const UPLOAD_RETRY_MIN_S = 0.5;
const UPLOAD_RETRY_MAX_S = 10;
const STATUS_INTERVAL_MS = 1000;
const METER_INTERVAL_MS = 80;
const WELCOME_TIMEOUT_MS = 10000;
// A Wi-Fi that goes away sends no close, and a page cannot see WebSocket pings: a paired
// page that hears nothing for this many of the server's SYNC intervals (WELCOME's
// sync_interval_s) takes the connection for dead, at least MIN_SILENCE_MS.
const SILENT_INTERVALS = 3;
const MIN_SILENCE_MS = 3000;
const CLOSE_SILENT = 4000; // our own close code: no word from the server
// WebSocket close codes of the server's pairing (hub/pairing.py).
const CLOSE_IMPOSTOR = 4003;
const CLOSE_REJECTED = 4004;

const $ = (id) => document.getElementById(id);
/** Set an element's text if it differs (an unchanged write still costs a layout). */
function show(id, text) {
  const element = $(id);
  if (element.textContent !== text) element.textContent = text;
}

/** Wait `ms`, or less if `signal` fires meanwhile. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    let unsubscribe = () => {};
    const timer = setTimeout(() => { unsubscribe(); resolve(); }, ms);
    if (signal) {
      unsubscribe = signal.subscribe(() => { clearTimeout(timer); unsubscribe(); resolve(); });
    }
  });
}

/** A flag to wait for: `fire()` wakes the waiter (or the next one) and every subscriber. */
class Signal {
  constructor() {
    this.fired = false;
    this.waiters = [];
    this.subscribers = new Set();
  }

  fire() {
    this.fired = true;
    for (const resolve of this.waiters.splice(0)) resolve();
    for (const callback of [...this.subscribers]) callback();
  }

  async wait() {
    if (!this.fired) await new Promise((resolve) => this.waiters.push(resolve));
    this.fired = false;
  }

  /** Call `callback` at each `fire()` until the returned function is called. */
  subscribe(callback) {
    this.subscribers.add(callback);
    return () => this.subscribers.delete(callback);
  }
}

/** A command the page cannot obey now: its reason goes into the FAILED ACK. */
class Refused extends Error {}

class Recorder {
  constructor() {
    const {deviceId, name, key} = loadIdentity();
    this.deviceId = deviceId;
    this.name = name;
    this.key = key;
    this.joinCode = new URLSearchParams(location.search).get("join");
    this.capture = new Capture();
    this.store = null;
    this.ws = null;
    this.connected = false; // welcomed on the current connection
    this.everConnected = false;
    this.sessions = 0; // connections the server welcomed
    this.paired = false;
    this.serverName = null;
    this.silenceLimitMs = null; // from WELCOME: how long a silence means a dead link
    this.take = null;
    this.lastFinished = null;
    this.uploading = null; // {recordingId, fraction}
    this.pending = 0; // recordings waiting on this phone
    this.uploaded = [];
    // What the server confirmed, by recording id: the SHA-256 the page computed of its own
    // chunks and what RECORDING said, so the console (or a test) can compare with the catalog.
    this.sent = {};
    this.wantUpload = new Signal();
    this.wakeConnection = new Signal();
    this.wakeLock = null;
    this.battery = null;
    this.message = "";
    this.micError = null;
    this.needsTap = false;
    this.prepared = null; // {recordingId, wav}: the file just scanned, kept for its upload
  }

  async start() {
    this.store = await Store.open();
    await this.recover();
    try {
      this.capture.prepare();
      const context = this.capture.context;
      context.addEventListener("statechange", () => {
        // Suspended by the system (a call, a locked phone on some browsers): ask for a tap.
        if (this.capture.node) this.needsTap = context.state !== "running";
        this.render();
      });
    } catch (error) {
      this.micError = `no audio: ${error.message || error}`;
    }
    this.bindUi();
    this.connectionLoop();
    this.uploadLoop();
    setInterval(() => this.sendStatus(), STATUS_INTERVAL_MS);
    setInterval(() => this.render(), 250);
    this.drawMeter();
    if (navigator.getBattery) {
      navigator.getBattery().then((battery) => { this.battery = battery; }, () => {});
    }
    await this.enableMic();
  }

  // -- the screen -------------------------------------------------------------------------

  bindUi() {
    const input = $("name");
    input.value = this.name;
    const commit = () => {
      const name = cleanName(input.value) || defaultName(this.deviceId);
      input.value = name;
      if (name === this.name) return;
      this.name = name;
      keepName(name);
      // The name travels in REGISTER: register again (not during a take).
      if (this.ws && !this.take) this.ws.close(1000, "renamed");
    };
    input.addEventListener("change", commit);
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") input.blur(); });
    $("enable").addEventListener("click", () => {
      // Resumed within the tap itself: some browsers allow it nowhere else.
      const context = this.capture.context;
      if (context && context.state !== "running") context.resume().catch(() => {});
      this.enableMic();
    });
    $("ident").textContent = `id ${this.deviceId}`;
    window.addEventListener("online", () => this.wakeConnection.fire());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        this.wakeConnection.fire();
        if (this.take) this.keepAwake();
      }
    });
    window.addEventListener("beforeunload", (event) => {
      if (!this.take) return;
      // Everything captured so far goes to IndexedDB now, while the person is asked
      // whether to leave; pagehide writes the little that comes after.
      this.take.flush();
      event.preventDefault(); // a take in progress: ask before leaving
    });
    window.addEventListener("pagehide", () => { if (this.take) this.take.flush(); });
  }

  state() {
    if (this.take) return this.take.paused ? "paused" : "recording";
    if (this.uploading) return "uploading";
    if (!this.connected) return this.everConnected || this.pending ? "offline" : "connecting";
    return this.paired ? "ready" : "pending";
  }

  render() {
    const state = this.state();
    let text;
    let detail = "";
    if (state === "recording" || state === "paused") {
      const s = Math.floor(this.take.elapsed);
      const clock = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
      if (state === "recording") {
        text = `RECORDING ${clock}`;
        if (!this.connected) detail = "server unreachable: recording goes on";
      } else {
        text = "PAUSED";
        detail = `${clock} recorded`;
      }
    } else if (state === "uploading") {
      text = `UPLOADING ${Math.floor(this.uploading.fraction * 100)}%`;
      if (this.pending > 1) detail = `${this.pending - 1} more waiting`;
    } else if (state === "offline") {
      text = "OFFLINE";
      detail = `${this.pending} waiting`;
    } else if (state === "connecting") {
      text = "CONNECTING";
    } else if (state === "pending") {
      text = "WAITING FOR APPROVAL";
      detail = this.joinCode ? "" : "approve this device on the dashboard";
    } else {
      text = "READY";
      if (this.pending) detail = `${this.pending} waiting to upload`;
    }
    // Written only when changed: the page redraws four times a second, mostly unchanged.
    const mic = this.micError ? "error" : this.capture.running ? "on" : "off";
    if (document.body.dataset.state !== state) document.body.dataset.state = state;
    if (document.body.dataset.mic !== mic) document.body.dataset.mic = mic;
    show("state", text);
    show("detail", detail);
    show("server", this.serverName || location.host);
    show("message", this.micError || this.message);
    this.renderBattery();
    if ($("name").disabled !== !!this.take) $("name").disabled = !!this.take;
    if ($("enable").hidden !== !this.needsTap) $("enable").hidden = !this.needsTap;
  }

  /** The battery, where the browser tells it (Chromium does; Safari and Firefox do not). */
  renderBattery() {
    const battery = this.battery;
    const known = battery && Number.isFinite(battery.level);
    const percent = known ? Math.round(battery.level * 100) : null;
    show("battery", known ? `${battery.charging ? "charging " : ""}${percent}%` : "");
    // A phone about to die mid-take is worth a colour: below 15 % and not charging.
    $("battery").classList.toggle("low", known && percent < 15 && !battery.charging);
  }

  drawMeter() {
    // A dozen updates a second, and only when the bar moves, by a transform (no layout):
    // redrawn at the display's rate by its width, the meter alone held a renderer at
    // about 15 % of a core (benchmarks/browser.py).
    const level = this.capture.meter > 1e-6 ? 20 * Math.log10(this.capture.meter) : -120;
    const percent = Math.round(Math.max(0, Math.min(1, (level + 60) / 60)) * 100);
    if (percent !== this.meterShown) {
      this.meterShown = percent;
      // The bar is a cover over the gradient, shrinking from the right.
      $("meter-bar").style.transform = `scaleX(${(100 - percent) / 100})`;
      $("meter").setAttribute("aria-valuenow", String(Math.round(Math.max(-60, level))));
    }
    setTimeout(() => requestAnimationFrame(() => this.drawMeter()), METER_INTERVAL_MS);
  }

  say(text) {
    this.message = text;
    if (text) console.info(`[vocalink] ${text}`);
  }

  async enableMic() {
    try {
      // Most phones let audio run only after a tap: then the button asks for one.
      this.needsTap = !await this.capture.open();
      this.micError = null;
    } catch (error) {
      this.needsTap = false;
      this.micError = error && error.name === "NotAllowedError"
        ? "microphone access was refused: allow it in the browser's site settings"
        : `no microphone: ${error && error.message ? error.message : error}`;
      console.warn(`[vocalink] ${this.micError}`);
    }
    this.render();
  }

  async keepAwake() {
    if (!navigator.wakeLock || this.wakeLock) return;
    try {
      this.wakeLock = await navigator.wakeLock.request("screen");
      this.wakeLock.addEventListener("release", () => { this.wakeLock = null; });
    } catch (error) {
      // Not granted (battery saver, hidden page): recording goes on regardless.
    }
  }

  releaseWake() {
    if (this.wakeLock) this.wakeLock.release().catch(() => {});
    this.wakeLock = null;
  }

  // -- the connection ---------------------------------------------------------------------

  async connectionLoop() {
    let delay = RECONNECT_MIN_S;
    for (;;) {
      const welcomed = await this.connectOnce();
      if (welcomed) delay = RECONNECT_MIN_S; // was connected: start over quickly
      // Jittered: phones that lost the server do not come back as a herd.
      const wait = delay * (0.5 + Math.random());
      delay = Math.min(delay * 2, RECONNECT_MAX_S);
      await sleep(wait * 1000, this.wakeConnection);
    }
  }

  connectOnce() {
    return new Promise((resolve) => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      let ws;
      try {
        ws = new WebSocket(`${scheme}://${location.host}${WS_PATH}`);
      } catch (error) {
        resolve(false);
        return;
      }
      let welcomed = false;
      let ended = false;
      let heard = performance.now();
      this.ws = ws;
      // Ends this connection once, whether it closed or went silent; a silent one is
      // closed without waiting for a closing handshake that cannot come back.
      const end = (event) => {
        if (ended) return;
        ended = true;
        clearTimeout(deadline);
        clearInterval(watchdog);
        ws.onopen = ws.onmessage = ws.onclose = null;
        if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
          ws.close(CLOSE_SILENT, "no word from the server");
        }
        if (this.ws === ws) this.ws = null;
        this.disconnected(event);
        resolve(welcomed);
      };
      // A server that does not welcome us in time (a half-open network) is tried again.
      const deadline = setTimeout(() => { if (!welcomed) ws.close(); }, WELCOME_TIMEOUT_MS);
      const watchdog = setInterval(() => {
        const limit = this.silenceLimitMs;
        if (welcomed && this.paired && limit && performance.now() - heard > limit) {
          end({code: CLOSE_SILENT, reason: "no word from the server", silent: true});
        }
      }, 1000);
      ws.onopen = () => this.send(this.register(), ws);
      ws.onmessage = (event) => {
        heard = performance.now();
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        if (message.type === "WELCOME") welcomed = true;
        this.onMessage(message).catch((error) => console.error("[vocalink]", error));
      };
      ws.onclose = end;
    });
  }

  register() {
    const rate = this.capture.sampleRate;
    const message = {
      type: "REGISTER", device_id: this.deviceId, name: this.name, protocol: PROTOCOL,
      platform: "browser",
      capabilities: {sample_rates: rate ? [Math.round(rate)] : [], channels: [1], formats: ["wav"]},
    };
    if (this.key) message.token = this.key;
    else if (this.joinCode) message.join_code = this.joinCode;
    return message;
  }

  send(message, ws = this.ws) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false; // offline: reported again later
    ws.send(JSON.stringify(message));
    return true;
  }

  disconnected(event) {
    const wasConnected = this.connected;
    this.connected = false;
    this.paired = false;
    if (this.take) this.take.offline = true; // part of this take has no server
    if (event.code === CLOSE_REJECTED) {
      // Unpaired by the operator (or a wrong join code): the key is no good any more.
      this.key = null;
      keepKey(null);
      this.say(`the server refused this device: ${event.reason || "rejected"}`);
    } else if (event.code === CLOSE_IMPOSTOR) {
      this.say(`the server refused this device: ${event.reason || "its id is paired elsewhere"}`);
    } else if (event.silent) {
      this.say("no word from the server: the network may be gone; reconnecting");
    } else if (wasConnected) {
      this.say("disconnected from the server; reconnecting");
    }
    this.render();
  }

  async onMessage(message) {
    switch (message.type) {
      case "WELCOME":
        return this.welcomed(message);
      case "SYNC":
        if (message.t1 === undefined || message.t1 === null) {
          const t1 = pageNow();
          this.send({type: "SYNC", id: message.id, t0: message.t0, t1, t2: pageNow()});
        }
        return undefined;
      case "COMMAND":
        return this.onCommand(message);
      case "SERVER":
        this.serverName = message.server_name;
        if (message.event === "shutting_down") this.say("the server is shutting down");
        return undefined;
      case "ERROR":
        this.say(`server: ${message.detail}`);
        return undefined;
      default:
        return undefined; // unknown types are ignored (forward compatibility)
    }
  }

  async welcomed(welcome) {
    this.serverName = welcome.server_name;
    this.silenceLimitMs = welcome.sync_interval_s
      ? Math.max(MIN_SILENCE_MS, SILENT_INTERVALS * welcome.sync_interval_s * 1000) : null;
    if (welcome.device_key) {
      this.key = welcome.device_key;
      keepKey(this.key);
    }
    const first = !this.connected;
    this.connected = true;
    this.everConnected = true;
    this.paired = welcome.paired !== false;
    this.say(this.paired ? "" : "waiting for an operator to approve this device");
    if (first) {
      this.sessions += 1;
      this.sendStatus();
      await this.announcePending();
    }
    this.wantUpload.fire();
    this.render();
  }

  sendStatus() {
    if (!this.connected) return;
    const {level, peak} = this.capture.takeLevels();
    const take = this.take;
    const state = take ? (take.paused ? "PAUSED" : "RECORDING")
      : this.uploading ? "UPLOADING" : "IDLE";
    const status = {type: "STATUS", state, pending_uploads: this.pending};
    if (level !== null) Object.assign(status, {level_dbfs: level, peak_dbfs: peak});
    if (this.battery && Number.isFinite(this.battery.level)) status.battery = this.battery.level;
    if (take) Object.assign(status, {recording_id: take.recordingId, elapsed_s: take.elapsed});
    this.send(status);
  }

  // -- commands ---------------------------------------------------------------------------

  async onCommand(command) {
    if (Array.isArray(command.targets) && !command.targets.includes(this.deviceId)) return;
    let outcome;
    try {
      outcome = await this.obey(command);
    } catch (error) {
      if (!(error instanceof Refused)) console.error("[vocalink] command failed", error);
      this.ack(command, "FAILED", {error: String(error.message || error).slice(0, 300)});
      return;
    }
    this.ack(command, "SUCCESS", outcome || {});
  }

  ack(command, status, fields) {
    const ack = {
      type: "ACK", command_id: command.command_id, action: command.action,
      device_id: this.deviceId, status,
    };
    for (const [name, value] of Object.entries(fields)) {
      if (value !== null && value !== undefined) ack[name] = value;
    }
    this.send(ack);
  }

  async obey(command) {
    switch (command.action) {
      case "START":
        return this.startTake(command);
      case "STOP":
        return this.stopTake(command);
      case "PAUSE":
      case "RESUME":
        return this.pauseTake(command.action === "PAUSE");
      case "PING":
      case "SYNC_NOW":
        return {}; // the ACK is the answer
      default:
        throw new Refused(`${command.action} is not supported by the browser recorder yet`);
    }
  }

  async startTake(command) {
    if (this.take) throw new Refused(`already recording ${this.take.recordingId}`);
    const params = command.params || {};
    if (params.format && String(params.format).toLowerCase() !== "wav") {
      throw new Refused(`format '${params.format}' is not supported (use wav)`);
    }
    if (!this.capture.running) await this.enableMic();
    if (!this.capture.running || this.capture.offset === null) {
      throw new Refused(this.micError || "the microphone is not enabled: tap the recorder page");
    }
    const capture = this.capture;
    const rate = capture.sampleRate;
    if (params.sample_rate && params.sample_rate !== rate) {
      // A wish only: the browser records at its audio context's rate, and says so.
      this.say(`recording at ${rate} Hz (${params.sample_rate} Hz was asked)`);
    }
    const offset = capture.offset;
    const at = typeof command.start_at === "number" ? command.start_at : pageNow();
    let startFrame = capture.frameAt(at, offset);
    if (startFrame < capture.oldestFrame) startFrame = capture.frameAt(pageNow(), offset);
    const take = new Take({
      capture, store: this.store, recordingId: `rec-${randomHex(10)}`,
      takeId: command.take_id || null, deviceId: this.deviceId, startFrame, offset,
      offline: !this.connected,
    });
    // Frames recorded, not elapsed: a pause does not count, as with the Python agent.
    if (params.duration_s) take.maxFrames = Math.round(params.duration_s * rate);
    this.take = take;
    take.finished.then((record) => this.takeFinished(take, record),
      (error) => this.takeFailed(take, error));
    try {
      await take.begin();
    } catch (error) {
      this.take = null;
      throw new Refused(`cannot store the recording: ${error.message || error}`);
    }
    this.keepAwake();
    this.render();
    const startedAt = await take.started;
    return {recording_id: take.recordingId, started_at: startedAt};
  }

  async stopTake(command) {
    const take = this.take;
    if (!take) {
      const last = this.lastFinished;
      if (last && (!command.take_id || command.take_id === last.take_id)) {
        return {recording_id: last.recording_id, started_at: last.started_at}; // it ended by itself
      }
      throw new Refused("not recording");
    }
    const at = typeof command.start_at === "number" ? command.start_at : pageNow();
    // To the sample, from the take's own start: its length is exact.
    const record = await take.stopAt(take.frameAt(at));
    return {recording_id: record.recording_id, started_at: record.started_at};
  }

  /**
   * Pause or resume the take on arrival, as the Python agent does (it does not schedule
   * them): what the microphone hears while paused is left out of the file.
   */
  pauseTake(pause) {
    const take = this.take;
    if (!take) throw new Refused("not recording");
    if (take.paused === pause) throw new Refused(pause ? "already paused" : "not paused");
    const frame = take.frameAt(pageNow());
    if (pause) take.pause(frame);
    else take.resume(frame);
    this.render();
    this.sendStatus(); // the new state at once, not at the next tick
    return {recording_id: take.recordingId};
  }

  async takeFinished(take, record) {
    if (this.take === take) this.take = null;
    this.lastFinished = record;
    this.releaseWake();
    this.render();
    try {
      await this.prepare(record);
    } catch (error) {
      this.say(`could not prepare ${record.recording_id}: ${error.message || error}`);
    }
    this.wantUpload.fire();
  }

  takeFailed(take, error) {
    if (this.take === take) this.take = null;
    this.releaseWake();
    this.say(`recording failed: ${error.message || error}`);
    this.refreshPending();
  }

  // -- the outbox and uploads -------------------------------------------------------------

  /** Recordings a closed tab left half-written are finished with what reached the disk. */
  async recover() {
    for (const record of await this.store.recordings()) {
      if (record.state !== "recording") continue;
      let bytes = 0; // counted a few chunks at a time: a long take does not fit in memory
      for await (const pcm of this.store.chunkStream(record.recording_id)) bytes += pcm.byteLength;
      const frames = Math.floor(bytes / 2 / record.channels);
      await this.store.updateRecording(record.recording_id,
        {state: "finished", frames, recovered: true});
    }
    await this.refreshPending();
  }

  async refreshPending() {
    const records = await this.store.recordings();
    this.pending = records.filter((r) => r.state !== "recording").length;
  }

  /** Hash the WAV once, keep its SHA-256 and size in the record, and announce it. */
  async prepare(record) {
    let ready = record;
    if (record.state === "finished") {
      const {wav, sha256, frames} = await StoredWav.scan(this.store, record);
      ready = await this.store.updateRecording(record.recording_id,
        {state: "ready", sha256, bytes: wav.size, frames});
      this.prepared = {recordingId: record.recording_id, wav};
    }
    await this.refreshPending();
    if (ready) this.announce(ready);
    return ready;
  }

  announce(record) {
    this.send({
      type: "RECORDING", recording_id: record.recording_id, take_id: record.take_id || undefined,
      started_at: record.started_at, sample_rate: record.sample_rate, channels: record.channels,
      frames: record.frames, bytes: record.bytes, sha256: record.sha256, format: "wav",
      offline: !!record.offline, recovered: !!record.recovered,
    });
  }

  async announcePending() {
    for (const record of await this.store.recordings()) {
      if (record.state === "ready" && !record.refused) this.announce(record);
    }
  }

  async uploadLoop() {
    let delay = UPLOAD_RETRY_MIN_S;
    for (;;) {
      await this.wantUpload.wait();
      // A pending device's uploads would be refused; each WELCOME fires again.
      if (!this.connected || !this.paired || !this.key) continue;
      try {
        await this.uploadAll();
        delay = UPLOAD_RETRY_MIN_S;
      } catch (error) {
        this.say(`upload interrupted (${error.message || error}); retrying`);
        await sleep(delay * 1000, this.wakeConnection);
        delay = Math.min(delay * 2, UPLOAD_RETRY_MAX_S);
        this.wantUpload.fire();
      }
    }
  }

  async uploadAll() {
    const records = (await this.store.recordings())
      .filter((r) => r.state !== "recording" && !r.refused)
      .sort((a, b) => a.created_at - b.created_at);
    for (let record of records) {
      if (record.state === "finished") record = await this.prepare(record);
      if (!record) continue;
      const id = record.recording_id;
      this.uploading = {recordingId: id, fraction: 0};
      this.render();
      try {
        let wav = this.prepared && this.prepared.recordingId === id ? this.prepared.wav : null;
        if (!wav) {
          // Prepared by an earlier page (or before a failed attempt): hashed again, so a
          // file whose chunks changed meanwhile is never sent under the old SHA-256.
          const scanned = await StoredWav.scan(this.store, record);
          if (scanned.sha256 !== record.sha256) {
            throw new UploadRefused("its chunks no longer match the sha256 announced");
          }
          wav = scanned.wav;
          this.prepared = {recordingId: id, wav};
        }
        const result = await tusUpload({
          record, file: wav, key: this.key,
          keepUrl: (url) => this.store.updateRecording(id, {upload_url: url}),
          progress: (fraction) => { this.uploading.fraction = fraction; },
        });
        if (result.sha256 !== record.sha256) {
          throw new UploadRefused(`the server stored sha256 ${result.sha256 || "(none)"} ` +
            `but the file is ${record.sha256}; it stays on this device`);
        }
        await this.store.deleteRecording(id); // only now: the server has the same bytes
        if (this.prepared && this.prepared.recordingId === id) this.prepared = null;
        this.uploaded.push(id);
        this.sent[id] = {
          sha256: record.sha256, frames: record.frames, bytes: record.bytes,
          sample_rate: record.sample_rate, take_id: record.take_id || null,
          offline: !!record.offline, recovered: !!record.recovered,
        };
        this.say(`uploaded ${id}`);
      } catch (error) {
        if (error instanceof UploadRefused) {
          await this.store.updateRecording(id, {refused: true, last_error: error.message});
          this.say(`the server refused ${id}: ${error.message}`);
        } else {
          await this.store.updateRecording(id, {
            attempts: (record.attempts || 0) + 1, last_error: String(error.message || error),
          });
          throw error instanceof UploadInterrupted ? error : new UploadInterrupted(String(error));
        }
      } finally {
        this.uploading = null;
        await this.refreshPending();
        this.render();
      }
    }
  }
}

const recorder = new Recorder();
window.vocalinkRecorder = recorder; // for a look from the console
recorder.start().catch((error) => {
  console.error("[vocalink] the recorder could not start", error);
  $("message").textContent = `the recorder could not start: ${error.message || error}`;
});
