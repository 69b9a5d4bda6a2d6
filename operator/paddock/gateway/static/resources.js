// Agents and environments with their Ready conditions and warm pools.
import { api, poll } from "./api.js";
import { h } from "./dom.js";

function ready(conditions) {
  const found = conditions.find((c) => c.type === "Ready");
  if (!found) return h("span", { class: "badge" }, "unknown");
  const text = found.status === "True" ? "Ready" : `Not ready: ${found.reason ?? ""}`;
  return h("span", { class: `badge ready-${found.status.toLowerCase()}`, title: found.message ?? "" }, text);
}

function conditionList(conditions) {
  return h(
    "ul",
    { class: "conditions" },
    conditions.map((c) => h("li", {}, `${c.type}: ${c.status}`, c.reason ? ` (${c.reason})` : "", c.message ? ` – ${c.message}` : "")),
  );
}

function table(caption, columns, rows) {
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
}

export function showResources(main, fail) {
  main.append(h("h1", {}, "Agents and environments"));
  const holder = h("div");
  main.append(holder);
  async function load() {
    const [agents, environments] = await Promise.all([api("GET", "/v1/console/agents"), api("GET", "/v1/console/environments")]);
    holder.replaceChildren(
      table(
        "Agents",
        ["Agent", "Ready", "Harness pods ready", "Active sessions", "Conditions"],
        agents.data.map((a) =>
          h(
            "tr",
            { "data-agent-id": a.id },
            h("td", {}, a.name, h("div", { class: "muted id" }, a.id)),
            h("td", {}, ready(a.conditions)),
            h("td", { class: "number" }, `${a.ready_replicas ?? 0} / ${a.replicas ?? 0}`),
            h("td", { class: "number" }, a.active_sessions ?? 0),
            h("td", {}, conditionList(a.conditions)),
          ),
        ),
      ),
      table(
        "Environments",
        ["Environment", "Ready", "Warm sandboxes ready / size", "Bound", "Conditions"],
        environments.data.map((e) =>
          h(
            "tr",
            { "data-environment-id": e.id },
            h("td", {}, e.name, h("div", { class: "muted id" }, e.id)),
            h("td", {}, ready(e.conditions)),
            h("td", { class: "number warm" }, `${e.warm_pool.ready ?? 0} / ${e.warm_pool.size ?? 0}`),
            h("td", { class: "number" }, e.warm_pool.bound ?? 0),
            h("td", {}, conditionList(e.conditions)),
          ),
        ),
      ),
    );
  }
  return poll(load, fail);
}
