import { api, catalog, localInputs } from "../api.js";
import { h } from "../dom.js";
import { buildForm } from "../form.js";

export async function submitPage(view, { params }) {
  // Types with their own submit path (document uploads) are not submitted from this form.
  const types = (await catalog()).filter((t) => !t.submit_path);
  const wanted = params[0] || localStorage.getItem("aitasks.lastType") || "background_removal";
  const type = types.find((t) => t.name === wanted) || types[0];
  localStorage.setItem("aitasks.lastType", type.name);

  const picker = h("select", { id: "task-type", "aria-label": "Job type" },
    types.map((t) => h("option", { value: t.name, disabled: !t.available }, t.available ? t.name : `${t.name} (not configured)`)));
  picker.value = type.name;
  picker.addEventListener("change", () => { location.hash = `#/submit/${picker.value}`; });

  const form = buildForm(type);
  const button = h("button", { type: "submit", id: "submit-job" }, "Submit job");
  const el = h("form", { class: "card", id: "submit-form", novalidate: true },
    h("div", { class: "row" }, h("h1", {}, "New job"), h("span", { class: "spacer" }), picker),
    h("p", { class: "muted", id: "type-description" }, type.description || ""),
    type.available ? "" : h("p", { class: "form-error" }, type.unavailable_reason || "Not available here."),
    form.element,
    h("div", { class: "row actions" }, button,
      h("small", { class: "muted" }, `Runs on the ${type.queue} queue; time limit ${type.limits.time_limit_s} s.`)));

  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.clearErrors();
    if (!form.validate()) return;
    button.disabled = true;
    button.textContent = "Submitting…";
    try {
      const { data, inputs } = form.formData();
      const accepted = await api("/api/v1/tasks/submit/", { method: "POST", body: data });
      localInputs.set(accepted.task_id, inputs);
      location.hash = `#/job/${accepted.task_id}`;
    } catch (exc) {
      form.showServerError(exc);
    } finally {
      button.disabled = false;
      button.textContent = "Submit job";
    }
  });
  view.append(el);
}
