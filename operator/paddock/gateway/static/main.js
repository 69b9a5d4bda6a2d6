// The console's entry: sign-in, and a page per location hash.
import { ApiError, api, credentials } from "./api.js";
import { clear, h, notice } from "./dom.js";
import { showResources } from "./resources.js";
import { showSession } from "./session.js";
import { showSessions } from "./sessions.js";

const main = document.getElementById("main");
const signOut = document.getElementById("sign-out");
let current = null; // the page shown: {stop()}

function signIn(message) {
  signOut.hidden = true;
  const credential = h("input", { id: "credential", type: "password", required: true, autocomplete: "off" });
  const namespace = h("input", { id: "namespace", type: "text", autocomplete: "off", spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" }, message ?? "");
  const form = h(
    "form",
    { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "credential" }, "Paddock API key or Kubernetes token"),
    credential,
    h("label", { for: "namespace" }, "Namespace (optional with an API key)"),
    namespace,
    h("button", { type: "submit" }, "Sign in"),
    error,
    h("p", { class: "muted" }, "The key stays in this tab (sessionStorage) and is sent only to this gateway."),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    credentials.save(credential.value.trim(), namespace.value.trim());
    try {
      await api("GET", "/v1/sessions?limit=1");
    } catch (exc) {
      credentials.forget();
      error.textContent = exc instanceof ApiError ? `${exc.status}: ${exc.message}` : String(exc);
      return;
    }
    route();
  });
  clear(main).append(form);
  credential.focus();
}

export function fail(exc) {
  if (exc instanceof ApiError && exc.status === 401) {
    credentials.forget();
    signIn("The gateway no longer accepts this credential.");
    return;
  }
  notice(exc instanceof ApiError ? `Error ${exc.status}: ${exc.message}` : String(exc));
}

function route() {
  current?.stop();
  current = null;
  notice("");
  if (!credentials.present) {
    signIn();
    return;
  }
  signOut.hidden = false;
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  for (const link of document.querySelectorAll("header nav a")) {
    const here = link.getAttribute("href") === `#/${page || "sessions"}`;
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  if (page === "session" && rest[0]) current = showSession(main, decodeURIComponent(rest[0]), fail);
  else if (page === "resources") current = showResources(main, fail);
  else current = showSessions(main, fail);
  main.focus({ preventScroll: true });
}

signOut.addEventListener("click", () => {
  credentials.forget();
  route();
});
window.addEventListener("hashchange", route);
route();
