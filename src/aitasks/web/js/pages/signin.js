import { api, auth } from "../api.js";
import { h } from "../dom.js";

export function signIn(view, { next }) {
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true,
                             placeholder: "ait_…", spellcheck: "false" });
  const error = h("div", { class: "field-error", id: "signin-error", role: "alert" });
  const button = h("button", { type: "submit", id: "signin-submit" }, "Sign in");
  const form = h("form", { class: "card narrow", id: "signin-form" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Use an API key of your tenant (",
      h("code", {}, "aitasks keys create --tenant NAME"), "). It stays in this tab's session storage and is sent "
      + "only as the Authorization header."),
    h("div", { class: "field" }, h("label", { for: "api-key" }, "API key"), input, error),
    button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    error.textContent = "";
    if (!key) { error.textContent = "Enter an API key."; return; }
    button.disabled = true;
    try {
      await api("/api/v1/tasks/?limit=1", { key });
      auth.set(key);
      const target = next && next !== "#/signin" ? next : "#/submit";
      if (location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
      else location.hash = target;
    } catch (exc) {
      error.textContent = exc.status === 401 ? "This key is not valid (unknown or revoked)." : exc.message;
    } finally {
      button.disabled = false;
    }
  });
  view.append(form);
  input.focus();
}
