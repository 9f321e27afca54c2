import { api, catalog } from "../api.js";
import { STATUSES, TERMINAL, clear, fmtTime, h, statusBadge } from "../dom.js";

const PAGE = 20;

export async function jobsPage(view, { query }) {
  const types = await catalog().catch(() => []);
  const status = query.get("status") || "";
  const taskType = query.get("type") || "";
  const cursors = (query.get("trail") || "").split(",").filter(Boolean); // cursors of the pages before
  const cursor = query.get("cursor") || "";

  const statusSel = h("select", { id: "filter-status", "aria-label": "Status" },
    h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  statusSel.value = status;
  const typeSel = h("select", { id: "filter-type", "aria-label": "Job type" },
    h("option", { value: "" }, "any type"), types.map((t) => h("option", { value: t.name }, t.name)));
  typeSel.value = taskType;
  const go = (extra = {}) => {
    const q = new URLSearchParams();
    const s = extra.status ?? statusSel.value;
    const t = extra.type ?? typeSel.value;
    if (s) q.set("status", s);
    if (t) q.set("type", t);
    if (extra.cursor) q.set("cursor", extra.cursor);
    if (extra.trail && extra.trail.length) q.set("trail", extra.trail.join(","));
    location.hash = `#/jobs${q.toString() ? `?${q}` : ""}`;
  };
  statusSel.addEventListener("change", () => go());
  typeSel.addEventListener("change", () => go());

  const body = h("tbody");
  const note = h("p", { class: "muted small", id: "jobs-note" });
  const prev = h("button", { type: "button", id: "jobs-prev", disabled: !cursor }, "← Newer");
  const next = h("button", { type: "button", id: "jobs-next", disabled: true }, "Older →");
  prev.addEventListener("click", () => {
    const trail = cursors.slice(0, -1);
    go({ cursor: cursors[cursors.length - 1] === "first" ? "" : cursors[cursors.length - 1], trail });
  });
  let nextCursor = null;
  next.addEventListener("click", () => go({ cursor: nextCursor, trail: [...cursors, cursor || "first"] }));

  view.append(h("section", { class: "card" },
    h("div", { class: "row wrap" }, h("h1", {}, "Jobs"), h("span", { class: "spacer" }), statusSel, typeSel,
      h("a", { href: "#/submit", class: "button" }, "New job")),
    h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["Job", "Type", "Status", "Progress", "Created", "Finished"].map((c) => h("th", {}, c)))),
      body)),
    note,
    h("div", { class: "row pager" }, prev, next)));

  let timer = null;
  let stopped = false;
  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (status) q.set("status", status);
    if (taskType) q.set("task_type", taskType);
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await api(`/api/v1/tasks/?${q}`);
    } catch (exc) {
      note.textContent = exc.message;
      return;
    }
    if (stopped) return;
    nextCursor = page.next_cursor;
    next.disabled = !nextCursor;
    clear(body, page.tasks.length ? page.tasks.map((t) => h("tr", { "data-task-id": t.task_id },
      h("td", {}, h("a", { href: `#/job/${t.task_id}`, class: "mono" }, t.task_id.slice(0, 8))),
      h("td", {}, t.task_type),
      h("td", {}, statusBadge(t.status)),
      h("td", {}, h("div", { class: "progress mini", title: t.message || "" },
        h("div", { class: "bar", style: undefined }), h("span", { class: "pct" }, `${t.progress} %`))),
      h("td", {}, fmtTime(t.created_at)),
      h("td", {}, fmtTime(t.finished_at)))) : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No jobs.")));
    body.querySelectorAll("tr[data-task-id]").forEach((row, i) => {
      row.querySelector(".bar").style.width = `${page.tasks[i].progress}%`;
    });
    const running = page.tasks.some((t) => !TERMINAL.has(t.status));
    note.textContent = running ? "Updating while jobs run." : "";
    if (running) timer = setTimeout(load, 2000);
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}
