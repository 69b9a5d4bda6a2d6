// The namespace's sessions: phase, stop reason, agent, age, tokens and cost against budget.
import { api, poll } from "./api.js";
import { age, clear, h, money } from "./dom.js";

export function showSessions(main, fail) {
  const text = h("input", { id: "filter-text", type: "search", placeholder: "title, id, agent" });
  const phase = h(
    "select",
    { id: "filter-phase" },
    ["", "Pending", "Running", "Idle", "Rescheduling", "Terminated"].map((p) => h("option", { value: p }, p || "any")),
  );
  const body = h("tbody");
  const count = h("p", { class: "muted", "aria-live": "polite" });
  main.append(
    h("h1", {}, "Sessions"),
    h(
      "form",
      { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "filter-text" }, "Filter"),
      text,
      h("label", { for: "filter-phase" }, "Phase"),
      phase,
    ),
    count,
    h(
      "table",
      { class: "sessions" },
      h("caption", { class: "visually-hidden" }, "Sessions of the namespace"),
      h(
        "thead",
        {},
        h("tr", {}, ["Session", "Phase", "Stop reason", "Agent", "Age", "Tokens in / out", "Cost / budget"].map((c) => h("th", { scope: "col" }, c))),
      ),
      body,
    ),
  );
  let rows = [];
  function render() {
    const needle = text.value.trim().toLowerCase();
    const shown = rows.filter(
      (r) =>
        (!phase.value || r.phase === phase.value) &&
        (!needle || [r.session.title, r.session.id, r.name, r.session.agent?.name].some((v) => (v ?? "").toLowerCase().includes(needle))),
    );
    count.textContent = `${shown.length} of ${rows.length} sessions`;
    clear(body).append(
      ...shown.map(({ session, phase: p, stopReason, name }) => {
        const usage = session.usage ?? {};
        const cost = money(usage.list_cost) ?? "–";
        const budget = money(session.budget?.max_list_cost);
        return h(
          "tr",
          { "data-session-id": session.id },
          h("td", {}, h("a", { href: `#/session/${encodeURIComponent(session.id)}` }, session.title || name || session.id), h("div", { class: "muted id" }, session.id)),
          h("td", {}, h("span", { class: `badge phase-${(p ?? session.status).toLowerCase()}` }, p ?? session.status)),
          h("td", {}, stopReason ?? "–"),
          h("td", {}, session.agent?.name ?? "–"),
          h("td", {}, h("time", { datetime: session.created_at, title: session.created_at }, age(session.created_at))),
          h("td", { class: "number" }, `${usage.input_tokens ?? 0} / ${usage.output_tokens ?? 0}`),
          h("td", { class: "number" }, budget ? `${cost} of ${budget}` : cost),
        );
      }),
    );
  }
  async function load() {
    const [sessions, status] = await Promise.all([
      api("GET", "/v1/sessions?limit=100&include_archived=true"),
      api("GET", "/v1/console/sessions"),
    ]);
    const byId = new Map(status.data.map((s) => [s.id, s]));
    rows = sessions.data.map((session) => {
      const found = byId.get(session.id);
      return { session, phase: found?.phase ?? null, stopReason: found?.stop_reason ?? null, name: found?.name ?? null };
    });
    render();
  }
  text.addEventListener("input", render);
  phase.addEventListener("change", render);
  return poll(load, fail);
}
