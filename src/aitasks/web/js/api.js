// The API, as the dashboard uses it: the key from session storage as the Bearer token; live updates
// over SSE with a short-lived stream token (EventSource cannot send headers, and a key in a URL
// would land in access logs).

const KEY = "aitasks.apiKey";

export const auth = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.fields = (body && body.fields) || [];
  }
}

export async function api(path, { method = "GET", body, headers = {}, key, ok = [] } = {}) {
  const h = { ...headers };
  const k = key ?? auth.key;
  if (k) h.Authorization = `Bearer ${k}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, { method, headers: h, body: payload, cache: "no-store" });
  } catch (exc) {
    throw new ApiError(0, { error: `The API cannot be reached (${exc.message}).` });
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (!r.ok && !ok.includes(r.status)) {
    if (r.status === 401 && !key) window.dispatchEvent(new CustomEvent("aitasks:unauthorized"));
    throw new ApiError(r.status, data);
  }
  return data;
}

export async function text(path) {
  const r = await fetch(path, { cache: "no-store" });
  return { status: r.status, text: await r.text() };
}

let catalogPromise = null;
export function catalog() {
  catalogPromise ??= api("/api/v1/task-types").catch((exc) => { catalogPromise = null; throw exc; });
  return catalogPromise;
}

const blobs = new Map();
/** An artifact (Bearer-protected) as a blob: URL an <img> or <iframe> can show. */
export async function blobUrl(url) {
  if (blobs.has(url)) return blobs.get(url);
  const r = await fetch(url, { headers: { Authorization: `Bearer ${auth.key}` } });
  if (!r.ok) throw new ApiError(r.status, { error: `download failed (HTTP ${r.status})` });
  const obj = URL.createObjectURL(await r.blob());
  blobs.set(url, obj);
  return obj;
}

export async function download(url, name) {
  const obj = await blobUrl(url);
  const a = document.createElement("a");
  a.href = obj;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

export async function streamToken() {
  return api("/api/v1/stream-tokens", { method: "POST" });
}

/**
 * Follow a job's SSE stream: onUpdate(status) for each message; reconnects with a fresh token when
 * the connection drops, and stops after the final state (`event: end`). Returns {close()}.
 */
export function follow(taskId, onUpdate, onProblem = () => {}) {
  let source = null;
  let closed = false;
  let timer = null;
  let failures = 0;

  async function open() {
    if (closed) return;
    let token;
    try {
      token = (await streamToken()).token;
    } catch (exc) {
      onProblem(exc);
      if (exc.status === 401) return;
      retry();
      return;
    }
    if (closed) return;
    source = new EventSource(`/api/v1/tasks/${encodeURIComponent(taskId)}/events?token=${encodeURIComponent(token)}`);
    source.onmessage = (ev) => {
      failures = 0;
      onProblem(null);
      onUpdate(JSON.parse(ev.data));
    };
    source.addEventListener("end", () => { closed = true; source.close(); });
    source.onerror = () => {
      if (closed) return;
      source.close();
      retry();
    };
  }

  function retry() {
    failures += 1;
    if (failures > 2) onProblem(new Error("live updates interrupted: reconnecting…"));
    timer = setTimeout(open, Math.min(5000, 400 * failures));
  }

  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (source) source.close();
    },
  };
}

// Files chosen in this browser for a job, shown as its "before" picture without a download.
export const localInputs = new Map();
