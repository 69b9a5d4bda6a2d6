// The JSON API with the credential the user signed in with. The key lives in
// sessionStorage (this tab only, gone when it closes) and goes out as a header on fetch:
// no cookie, so no request from another site can carry it (docs/console.md).

const KEY = "paddock.credential";
const NAMESPACE = "paddock.namespace";

export const credentials = {
  get present() {
    return Boolean(sessionStorage.getItem(KEY));
  },
  save(credential, namespace) {
    sessionStorage.setItem(KEY, credential);
    if (namespace) sessionStorage.setItem(NAMESPACE, namespace);
    else sessionStorage.removeItem(NAMESPACE);
  },
  forget() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(NAMESPACE);
  },
};

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function headers(extra = {}) {
  const result = { Authorization: `Bearer ${sessionStorage.getItem(KEY) ?? ""}`, ...extra };
  const namespace = sessionStorage.getItem(NAMESPACE);
  if (namespace) result["x-paddock-namespace"] = namespace;
  return result;
}

async function failure(response) {
  let error = {};
  try {
    error = (await response.json()).error ?? {};
  } catch {
    // not the envelope: the status says enough
  }
  return new ApiError(response.status, error.type ?? "error", error.message ?? response.statusText);
}

export async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Every page of a list of events, oldest first. */
export async function allEvents(path) {
  const events = [];
  let page = null;
  do {
    const query = new URLSearchParams({ limit: "1000" });
    if (page) query.set("page", page);
    const answer = await api("GET", `${path}?${query}`);
    events.push(...answer.data);
    page = answer.next_page;
  } while (page);
  return events;
}

/** Opens the server-sent events of ``path``; once the gateway has subscribed (the answer's
 * headers came), returns them as an async iterator of {type, id, data}. fetch rather than
 * EventSource, which cannot send the credential header. */
export async function openStream(path, { signal } = {}) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await failure(response);
  return frames(response.body.pipeThrough(new TextDecoderStream()).getReader());
}

async function* frames(reader) {
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { type: "message", id: null, data: "" };
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.type = text;
        else if (field === "id") message.id = text;
        else if (field === "data") message.data += (message.data ? "\n" : "") + text;
      }
      if (message.data) yield { ...message, data: JSON.parse(message.data) };
    }
  }
}

const REFRESH_MS = 3000;

/** Run ``load`` now and every few seconds until ``stop()`` (a page's listing refresh);
 * its errors go to ``fail`` and the refresh goes on. */
export function poll(load, fail) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await load();
    } catch (exc) {
      fail(exc);
    }
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
