// outlast realtime for browser pages: no build step, no dependencies.
//
//   import { subscribeToRun, subscribeToStream } from "https://runtime.example.com/api/v1/realtime.js";
//   const run = subscribeToRun(runId, { token, onChange: (change) => render(change.run) });
//   for await (const chunk of subscribeToStream(runId, "tokens", { token })) output.append(chunk.data);
//
// `token` is a public access token (POST /api/v1/auth/public-tokens, from your server); it travels as
// `?token=` because EventSource cannot send headers. The browser reconnects by itself with
// Last-Event-ID, so a dropped connection loses and repeats nothing. Both functions return a
// subscription: an async iterator of what arrives, with `close()`; it ends when the run is final.

const API = new URL(".", import.meta.url).href.replace(/\/$/, "");

function follow(path, eventName, { token, after, baseUrl = API, onMessage, onEnd, onError } = {}) {
  const url = new URL(baseUrl.replace(/\/$/, "") + path);
  if (token) url.searchParams.set("token", token);
  if (after) url.searchParams.set("after", after);
  const source = new EventSource(url);
  const items = [];
  const waiters = [];
  let finished = false;

  function settle(item) {
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(item); else items.push(item);
  }
  function finish(error) {
    if (finished) return;
    finished = true;
    source.close();
    while (waiters.length) {
      const waiter = waiters.shift();
      if (error) waiter.reject(error); else waiter.resolve({ value: undefined, done: true });
    }
    if (error) items.push({ error });
  }

  source.addEventListener(eventName, (event) => {
    const data = JSON.parse(event.data);
    if (onMessage) onMessage(data);
    settle({ value: data, done: false });
  });
  source.addEventListener("end", (event) => {
    if (onEnd) onEnd(JSON.parse(event.data));
    finish();
  });
  source.addEventListener("error", () => {
    // CONNECTING: the browser retries by itself (with Last-Event-ID). CLOSED: it was refused.
    if (source.readyState !== EventSource.CLOSED || finished) return;
    const error = new Error(`outlast: ${path} was refused (a wrong or expired token?)`);
    if (onError) onError(error);
    finish(error);
  });

  return {
    close: () => finish(),
    [Symbol.asyncIterator]() {
      return {
        next() {
          const item = items.shift();
          if (item && item.error) return Promise.reject(item.error);
          if (item) return Promise.resolve(item);
          if (finished) return Promise.resolve({ value: undefined, done: true });
          return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
        },
        return() {
          finish();
          return Promise.resolve({ value: undefined, done: true });
        },
      };
    },
  };
}

/** Changes of a run ({cursor, kind, status, run, ...}); `onChange(change)`, `onEnd({status})`, `onError(error)`. */
export function subscribeToRun(runId, options = {}) {
  return follow(`/runs/${encodeURIComponent(runId)}/subscribe`, "run", { ...options, onMessage: options.onChange });
}

/** Chunks of a run's named stream ({cursor, data, ...}), in order; `onChunk(chunk)`, `onEnd`, `onError`. */
export function subscribeToStream(runId, name, options = {}) {
  const path = `/runs/${encodeURIComponent(runId)}/streams/${encodeURIComponent(name)}`;
  return follow(path, "chunk", { ...options, onMessage: options.onChunk });
}
