// One session as a live timeline: its history, then its stream (with text deltas), child
// threads as nested lanes; and what the user can do: send, interrupt, approve or deny a
// tool call, archive. Everything a model wrote goes in as text (dom.js).
import { allEvents, api, openStream } from "./api.js";
import { append, clear, collapsible, h, money, notice } from "./dom.js";

const TOOL_USES = new Set(["agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"]);
const TOOL_RESULTS = new Set(["agent.tool_result", "agent.mcp_tool_result"]);

function blocksText(content) {
  if (typeof content === "string") return content;
  return (content ?? [])
    .map((b) => (b.type === "text" ? b.text : `[${b.type}]`))
    .join("\n");
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function when(event) {
  const stamp = event.processed_at ?? event.created_at;
  return stamp ? h("time", { datetime: stamp }, new Date(stamp).toLocaleTimeString()) : null;
}

/** A list of events in the page: the session's own, or one thread's. */
class Lane {
  constructor(list) {
    this.list = list;
    this.entries = new Map(); // event id -> element
    this.toolCalls = new Map(); // tool use id -> element holding its result
    this.threads = new Map(); // thread id -> Lane
  }

  entry(event, kind, ...children) {
    const item = h("li", { class: `event ${kind}`, "data-type": event.type, "data-event-id": event.id ?? "" }, h("div", { class: "meta" }, h("span", { class: "kind" }, kindLabel(event)), when(event)), ...children);
    if (event.id && this.entries.has(event.id)) this.entries.get(event.id).replaceWith(item);
    else this.list.append(item);
    if (event.id) this.entries.set(event.id, item);
    return item;
  }

  add(event) {
    if (event.id && this.entries.has(event.id) && !this.entries.get(event.id).classList.contains("streaming")) return;
    const thread = event.session_thread_id;
    if (thread && this.threads.has(thread) && !event.type.startsWith("session.thread_")) {
      this.threads.get(thread).add(event);
      return;
    }
    const type = event.type;
    if (type === "user.message") this.entry(event, "user", h("div", { class: "text" }, blocksText(event.content)));
    else if (type === "agent.message") this.entry(event, "agent", h("div", { class: "text" }, blocksText(event.content)));
    else if (type === "agent.thinking") this.entry(event, "thinking", event.thinking ? collapsible("Thinking", event.thinking) : null);
    else if (TOOL_USES.has(type)) {
      const result = h("div", { class: "result" });
      const item = this.entry(
        event,
        "tool",
        h("div", { class: "tool-name" }, event.name ?? event.tool_name ?? "tool", event.server_name ? ` (${event.server_name})` : ""),
        collapsible("Input", json(event.input ?? {})),
        event.evaluated_permission === "ask" ? h("div", { class: "muted" }, "Asks for approval") : null,
        result,
      );
      this.toolCalls.set(event.id, result);
      item.dataset.toolUseId = event.id;
    } else if (TOOL_RESULTS.has(type)) {
      const holder = this.toolCalls.get(event.tool_use_id ?? event.mcp_tool_use_id);
      const shown = collapsible(event.is_error ? "Error result" : "Result", blocksText(event.content), { className: event.is_error ? "is-error" : "" });
      if (holder) {
        clear(holder).append(shown);
        holder.closest("li").classList.toggle("failed", Boolean(event.is_error));
        if (event.id) this.entries.set(event.id, holder.closest("li"));
      } else this.entry(event, "tool", shown);
    } else if (type === "user.tool_confirmation") {
      const holder = this.toolCalls.get(event.tool_use_id);
      const text = event.result === "allow" ? "Approved" : `Denied${event.deny_message ? `: ${event.deny_message}` : ""}`;
      if (holder) {
        holder.before(h("div", { class: `confirmation ${event.result}` }, text));
        if (event.id) this.entries.set(event.id, holder.closest("li"));
      } else this.entry(event, "user", text);
    } else if (type === "user.interrupt") this.entry(event, "user", "Interrupted");
    else if (type === "session.error") {
      const error = event.error ?? {};
      const retry = error.retry_status?.type;
      this.entry(event, "error", h("div", {}, `${error.type ?? "error"}: ${error.message ?? ""}`), retry ? h("div", { class: "muted" }, retry === "retrying" ? "retrying" : `retry: ${retry}`) : null);
    } else if (type.startsWith("session.status_")) {
      const reason = event.stop_reason?.type;
      const text = type === "session.status_rescheduled" ? "rescheduled: its worker or sandbox is being replaced" : type.slice("session.status_".length);
      this.entry(event, "status", h("div", {}, text, reason ? ` (${reason})` : ""));
    } else if (type === "session.thread_created") {
      const list = h("ol", { class: "timeline" });
      const lane = new Lane(list);
      this.threads.set(event.session_thread_id, lane);
      this.entry(event, "thread", h("section", { class: "lane", "aria-label": `Thread ${event.agent_name ?? ""} ${event.session_thread_id}` }, h("h3", {}, `Thread of ${event.agent_name ?? "an agent"}`, h("span", { class: "muted id" }, ` ${event.session_thread_id}`)), list));
      lane.follow = true;
    } else if (type.startsWith("session.thread_status_")) {
      const lane = this.threads.get(event.session_thread_id);
      const reason = event.stop_reason?.type;
      const line = h("li", { class: "event status", "data-type": type }, h("div", {}, type.slice("session.thread_status_".length), reason ? ` (${reason})` : ""));
      (lane ? lane.list : this.list).append(line);
    } else if (type === "agent.thread_message_sent" || type === "agent.thread_message_received") {
      const other = event.to_agent_name ?? event.from_agent_name ?? "";
      this.entry(event, "thread-message", collapsible(type.endsWith("sent") ? `To ${other}` : `From ${other}`, blocksText(event.content)));
    } else if (type.startsWith("span.")) {
      // Model request spans: progress, not content; the status says as much.
    } else this.entry(event, "other", collapsible(type, json(event)));
  }

  /** A stream's preview of an event being written: ``event_start`` then ``event_delta``s. */
  preview(frame) {
    if (frame.type === "event_start") {
      const event = { ...frame.event, content: [] };
      if (this.entries.has(event.id)) return;
      const item = this.entry(event, event.type === "agent.message" ? "agent" : "thinking", h("div", { class: "text" }));
      item.classList.add("streaming");
    } else if (frame.type === "event_delta") {
      const item = this.entries.get(frame.event_id);
      const text = frame.delta?.content?.text;
      if (item?.classList.contains("streaming") && text) append(item.querySelector(".text"), [text]);
    }
  }
}

function kindLabel(event) {
  const labels = {
    "user.message": "You",
    "user.interrupt": "You",
    "user.tool_confirmation": "You",
    "agent.message": "Agent",
    "agent.thinking": "Thinking",
    "session.error": "Error",
    "session.thread_created": "Thread",
    "agent.thread_message_sent": "To a thread",
    "agent.thread_message_received": "From a thread",
  };
  if (labels[event.type]) return labels[event.type];
  if (TOOL_USES.has(event.type) || TOOL_RESULTS.has(event.type)) return "Tool call";
  if (event.type.startsWith("session.")) return "Status";
  return event.type;
}

/** Follows ``base``'s log into ``lane``: the stream first (live events from then on), then
 * the history, then the stream's events; ``Lane.add`` drops what both had. */
async function follow(base, lane, { deltas, signal, onEvent, onLive = () => {} }) {
  const query = deltas ? "?event_deltas[]=agent.message" : "";
  const path = base.includes("/threads/") ? `${base}/stream` : `${base}/events/stream${query}`;
  const stream = await openStream(path, { signal });
  for (const event of await allEvents(`${base}/events`)) {
    lane.add(event);
    onEvent(event);
  }
  onLive();
  for await (const frame of stream) {
    if (frame.type === "event_start" || frame.type === "event_delta") lane.preview(frame.data);
    else if (frame.type === "error") throw new Error(frame.data.error?.message ?? "the stream failed");
    else {
      const known = frame.data.id && lane.entries.has(frame.data.id) && !lane.entries.get(frame.data.id).classList.contains("streaming");
      lane.add(frame.data);
      if (!known) onEvent(frame.data);
    }
  }
}

export function showSession(main, sessionId, fail) {
  const controller = new AbortController();
  const base = `/v1/sessions/${encodeURIComponent(sessionId)}`;
  const title = h("h1", {}, sessionId);
  const summary = h("dl", { class: "summary" });
  const pending = h("section", { class: "pending", "aria-label": "Tool calls waiting for approval", "aria-live": "polite" });
  const list = h("ol", { class: "timeline", "aria-label": "Timeline" });
  const lane = new Lane(list);
  const live = h("p", { class: "muted live" }, "connecting…");
  const message = h("textarea", { id: "message", rows: 2, required: true });
  let session = null;
  let waiting = []; // tool use ids the latest requires_action idle names

  async function send(events) {
    try {
      await api("POST", `${base}/events`, { events });
    } catch (exc) {
      fail(exc);
    }
  }

  const interrupt = h("button", { type: "button", onclick: () => send([{ type: "user.interrupt" }]) }, "Interrupt");
  const archive = h(
    "button",
    {
      type: "button",
      class: "danger",
      onclick: async () => {
        if (!confirm("Archive this session? It is terminated and takes no more events.")) return;
        try {
          await api("POST", `${base}/archive`, {});
          notice("Session archived.");
          await refresh();
        } catch (exc) {
          fail(exc);
        }
      },
    },
    "Archive",
  );
  const form = h(
    "form",
    { class: "send" },
    h("label", { for: "message" }, "Message"),
    message,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Send"), interrupt, archive),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = message.value.trim();
    if (!text) return;
    await send([{ type: "user.message", content: [{ type: "text", text }] }]);
    message.value = "";
  });

  main.append(
    h("p", {}, h("a", { href: "#/sessions" }, "← Sessions")),
    title,
    summary,
    pending,
    h("section", { "aria-labelledby": "actions-title", class: "actions" }, h("h2", { id: "actions-title", class: "visually-hidden" }, "Actions"), form),
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), live, list),
  );

  function renderSummary() {
    const usage = session.usage ?? {};
    const budget = money(session.budget?.max_list_cost);
    const cost = money(usage.list_cost) ?? "–";
    title.textContent = session.title || session.id;
    const pairs = [
      ["Status", h("span", { class: `badge phase-${session.status}`, id: "session-status" }, session.status)],
      ["Id", session.id],
      ["Agent", session.agent?.name ?? "–"],
      ["Tokens in / out", `${usage.input_tokens ?? 0} / ${usage.output_tokens ?? 0}`],
      ["Cost", budget ? `${cost} of ${budget}` : cost],
    ];
    if (session.status_message) pairs.push(["Note", session.status_message]);
    if (session.archived_at) pairs.push(["Archived", session.archived_at]);
    clear(summary).append(...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const over = session.status === "terminated" || Boolean(session.archived_at);
    for (const control of [...form.elements]) control.disabled = over;
  }

  async function refresh() {
    try {
      session = await api("GET", base);
      renderSummary();
    } catch (exc) {
      fail(exc);
    }
  }

  function renderPending() {
    clear(pending);
    for (const id of waiting) {
      const call = lane.entries.get(id) ?? [...lane.threads.values()].map((t) => t.entries.get(id)).find(Boolean);
      const name = call?.querySelector(".tool-name")?.textContent ?? "a tool";
      const reasonId = `deny-${id}`;
      const reason = h("input", { id: reasonId, type: "text" });
      const answer = (result) => {
        const event = { type: "user.tool_confirmation", tool_use_id: id, result };
        if (result === "deny" && reason.value.trim()) event.deny_message = reason.value.trim();
        waiting = waiting.filter((w) => w !== id);
        renderPending();
        send([event]);
      };
      pending.append(
        h(
          "div",
          { class: "approval", "data-tool-use-id": id },
          h("h2", {}, "Approve ", h("code", {}, name), "?"),
          call ? h("p", {}, h("a", { href: `#event-${id}`, onclick: (e) => { e.preventDefault(); call.scrollIntoView(); } }, "Show the call")) : null,
          h("label", { for: reasonId }, "Message if denied"),
          reason,
          h("div", { class: "buttons" }, h("button", { type: "button", onclick: () => answer("allow") }, "Approve"), h("button", { type: "button", class: "danger", onclick: () => answer("deny") }, "Deny")),
        ),
      );
    }
  }

  function onEvent(event) {
    if (event.type === "session.status_idle") {
      waiting = event.stop_reason?.type === "requires_action" ? [...(event.stop_reason.event_ids ?? [])] : [];
      renderPending();
    } else if (event.type === "session.status_running" || event.type === "session.status_terminated") {
      waiting = [];
      renderPending();
    }
    if (event.type.startsWith("session.status_") || event.type === "session.usage") refresh();
    if (event.type === "session.thread_created") {
      const threadLane = lane.threads.get(event.session_thread_id);
      const threadBase = `${base}/threads/${encodeURIComponent(event.session_thread_id)}`;
      follow(threadBase, threadLane, { deltas: false, signal: controller.signal, onEvent: () => {} }).catch(() => {});
    }
  }

  (async () => {
    await refresh();
    await follow(base, lane, { deltas: true, signal: controller.signal, onEvent, onLive: () => (live.textContent = "live") });
    live.textContent = "the stream ended";
  })().catch((exc) => {
    if (controller.signal.aborted) return;
    live.textContent = "not live";
    fail(exc);
  });

  return {
    stop() {
      controller.abort();
    },
  };
}
