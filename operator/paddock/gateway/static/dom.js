// Builds DOM nodes from data without ever parsing it as markup: text becomes text nodes,
// attributes are set one by one. Nothing in the console uses innerHTML.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

/** Text that may be long: shown whole when short, else collapsed behind its first line. */
export function collapsible(summary, text, { limit = 400, lines = 8, className = "" } = {}) {
  const body = h("pre", { class: className }, text);
  if (text.length <= limit && text.split("\n").length <= lines) {
    return h("div", { class: "block" }, h("div", { class: "label" }, summary), body);
  }
  const first = text.split("\n", 1)[0].slice(0, 120);
  return h(
    "details",
    { class: "block" },
    h("summary", {}, summary, " ", h("span", { class: "muted" }, `${first}… (${text.length} characters)`)),
    body,
  );
}

export function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function money(amount) {
  if (!amount) return null;
  return `$${(Number(amount.amount) / 100).toFixed(2)}`;
}

export function notice(text) {
  document.getElementById("notice").textContent = text;
}
