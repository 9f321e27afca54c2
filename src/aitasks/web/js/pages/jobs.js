import { ApiError, api, auth, catalog } from "../api.js";
import { STATUSES, TERMINAL, clear, fmtTime, h, statusBadge } from "../dom.js";

const PAGE = 20;

export async function jobsPage(view, { query }) {
  const types = await catalog().catch(() => []);
  const status = query.get("status") || "";
  const taskType = query.get("type") || "";
  const cursors = (query.get("trail") || "").split(",").filter(Boolean); // cursors of the pages before
  const cursor = query.get("cursor") || "";
  const text = query.get("q") || "";
  const after = query.get("after") || ""; // yyyy-mm-dd, a UTC day (the date inputs' own format)
  const before = query.get("before") || "";

  const statusSel = h("select", { id: "filter-status", "aria-label": "Status" },
    h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  statusSel.value = status;
  const typeSel = h("select", { id: "filter-type", "aria-label": "Job type" },
    h("option", { value: "" }, "any type"), types.map((t) => h("option", { value: t.name }, t.name)));
  typeSel.value = taskType;
  const search = h("input", { type: "search", id: "filter-q", placeholder: "message or error", "aria-label": "Text",
    value: text, maxlength: "200" });
  const afterIn = h("input", { type: "date", id: "filter-after", "aria-label": "Created from (UTC day)", value: after });
  const beforeIn = h("input", { type: "date", id: "filter-before", "aria-label": "Created before (UTC day)",
    value: before });
  const go = (extra = {}) => {
    const q = new URLSearchParams();
    const s = extra.status ?? statusSel.value;
    const t = extra.type ?? typeSel.value;
    if (s) q.set("status", s);
    if (t) q.set("type", t);
    if (search.value.trim()) q.set("q", search.value.trim());
    if (afterIn.value) q.set("after", afterIn.value);
    if (beforeIn.value) q.set("before", beforeIn.value);
    if (extra.cursor) q.set("cursor", extra.cursor);
    if (extra.trail && extra.trail.length) q.set("trail", extra.trail.join(","));
    location.hash = `#/jobs${q.toString() ? `?${q}` : ""}`;
  };
  for (const input of [statusSel, typeSel, search, afterIn, beforeIn]) input.addEventListener("change", () => go());

  // The list's filters as the API takes them (the export uses the same).
  const filters = () => {
    const q = new URLSearchParams();
    if (status) q.set("status", status);
    if (taskType) q.set("task_type", taskType);
    if (text) q.set("q", text);
    if (after) q.set("created_after", `${after}T00:00:00Z`);
    if (before) q.set("created_before", `${before}T00:00:00Z`);
    return q;
  };
  const exportAs = (format) => async () => {
    const q = filters();
    q.set("format", format);
    const r = await fetch(`/api/v1/tasks/export?${q}`, { headers: { Authorization: `Bearer ${auth.key}` },
      cache: "no-store" });
    if (!r.ok) {
      note.textContent = new ApiError(r.status, await r.json().catch(() => null)).message;
      return;
    }
    const link = h("a", { href: URL.createObjectURL(await r.blob()), download: `aitasks-history.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  };
  const exportCsv = h("button", { type: "button", id: "jobs-export-csv", title: "Ended jobs with these filters" },
    "Export CSV");
  const exportJsonl = h("button", { type: "button", id: "jobs-export-jsonl", title: "Ended jobs with these filters" },
    "Export JSONL");
  exportCsv.addEventListener("click", exportAs("csv"));
  exportJsonl.addEventListener("click", exportAs("jsonl"));

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
    h("div", { class: "row wrap filters" }, search, h("label", { class: "small" }, "from ", afterIn),
      h("label", { class: "small" }, "before ", beforeIn), h("span", { class: "spacer" }), exportCsv, exportJsonl),
    h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["Job", "Type", "Status", "Progress", "Created", "Finished"].map((c) => h("th", {}, c)))),
      body)),
    note,
    h("div", { class: "row pager" }, prev, next)));

  let timer = null;
  let stopped = false;
  async function load() {
    const q = filters();
    q.set("limit", String(PAGE));
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
