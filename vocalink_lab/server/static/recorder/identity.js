// Who this phone is, kept in localStorage: a device id made once (`web-<8 hex>`), a name
// the person may edit (by default from the user agent), and the device key the server
// gave it when it paired (presented as REGISTER's `token` from then on).

const KEYS = {
  id: "vocalink.device_id", name: "vocalink.device_name", key: "vocalink.device_key",
};
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** `bytes` random bytes in hex. */
export function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A name the protocol takes: 1 to 64 characters, no control characters ("" if none). */
export function cleanName(text) {
  // eslint-disable-next-line no-control-regex
  return String(text || "").replace(/[\x00-\x1f\x7f]/g, " ").trim().slice(0, 64).trim();
}

/** "Chrome on Android (3f2a)": enough to tell phones apart in the device list. */
export function defaultName(deviceId) {
  const ua = navigator.userAgent;
  const os = /iPhone/.test(ua) ? "iPhone" : /iPad/.test(ua) ? "iPad"
    : /Android/.test(ua) ? "Android" : /Mac OS X/.test(ua) ? "Mac"
      : /Windows/.test(ua) ? "Windows" : /CrOS/.test(ua) ? "ChromeOS"
        : /Linux/.test(ua) ? "Linux" : "a device";
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox"
    : /(Chrome|Chromium|CriOS)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari"
      : "Browser";
  return `${browser} on ${os} (${deviceId.slice(-4)})`;
}

/** The stored identity, the device id made (and kept) on the first visit. */
export function loadIdentity() {
  let deviceId = localStorage.getItem(KEYS.id);
  if (!deviceId || !ID.test(deviceId)) {
    deviceId = `web-${randomHex(4)}`;
    localStorage.setItem(KEYS.id, deviceId);
  }
  return {
    deviceId,
    name: cleanName(localStorage.getItem(KEYS.name)) || defaultName(deviceId),
    key: localStorage.getItem(KEYS.key) || null,
  };
}

/** Keep the name the person chose. */
export function keepName(name) {
  localStorage.setItem(KEYS.name, name);
}

/** Keep the device key (`null` forgets it: the server no longer knows it). */
export function keepKey(key) {
  if (key) localStorage.setItem(KEYS.key, key);
  else localStorage.removeItem(KEYS.key);
}
