import { api, text } from "../api.js";
import { clear, h } from "../dom.js";

/** Prometheus text format: [{name, labels, value}] (comments skipped). */
export function parseMetrics(body) {
  const out = [];
  for (const line of body.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[k] = v.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** What a limit's usage is now, from GET /api/v1/limits (blank for a limit with no usage to show). */
function limitUsage(name, usage) {
  if (name === "max_queued") return `${usage.queued} queued`;
  if (name === "max_running") return `${usage.running} running`;
  if (name === "submits_per_s" && usage.submit_tokens !== null) return `${usage.submit_tokens} tokens left`;
  return "";
}

function table(id, head, rows) {
  return h("div", { class: "table-wrap" }, h("table", { id },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: String(head.length), class: "muted" }, "none")))));
}

export async function systemPage(view) {
  const box = h("div", { id: "system" });
  view.append(h("section", { class: "card" }, h("div", { class: "row" }, h("h1", {}, "System"), h("span", { class: "spacer" }),
    h("span", { class: "muted small", id: "system-updated" })), box));
  let timer = null;
  let stopped = false;

  async function load() {
    let ready;
    let metrics;
    let sys;
    let limits;
    try {
      const [r, m, s, l] = await Promise.all([text("/readyz"), text("/metrics"), api("/api/v1/system?minutes=15"),
        api("/api/v1/limits")]);
      ready = JSON.parse(r.text);
      ready.http = r.status;
      metrics = parseMetrics(m.text);
      sys = s;
      limits = l;
    } catch (exc) {
      clear(box, h("p", { class: "form-error" }, `Cannot read the service's state: ${exc.message}`));
      timer = setTimeout(load, 5000);
      return;
    }
    if (stopped) return;
    const queues = metrics.filter((s) => s.name === "aitasks_queue_depth").map((s) => s.labels.queue);
    const finished = metrics.filter((s) => s.name === "aitasks_jobs_finished_total");
    const byStatus = {};
    const byType = {};
    for (const s of finished) {
      byStatus[s.labels.status] = (byStatus[s.labels.status] || 0) + s.value;
      byType[s.labels.task_type] ??= {};
      byType[s.labels.task_type][s.labels.status] = s.value;
    }
    // Throughput and failure rate come from the service's per-minute counters (GET /api/v1/system).
    const rate = sys.per_minute.toFixed(1);
    const failRate = sys.failure_rate === null ? "—" : `${Math.round(100 * sys.failure_rate)} %`;
    const recent = sys.history.slice(-5).map((m) =>
      `${m.minute.slice(11, 16)}: ${m.succeeded} ok, ${m.failed} failed, ${m.cancelled} cancelled`).join(" · ");
    const types = metrics.filter((s) => s.name === "aitasks_jobs_submitted_total").map((s) => s.labels.task_type);
    const statuses = ["SUCCESS", "FAILURE", "REVOKED"];

    clear(box,
      h("div", { class: "tiles" },
        h("div", { class: `tile ${ready.status === "ready" ? "ok" : "bad"}`, id: "readiness" },
          h("span", { class: "big" }, ready.status), h("span", {}, `redis: ${ready.redis}`),
          ready.missing ? h("span", {}, ready.missing) : ""),
        h("div", { class: "tile" }, h("span", { class: "big", id: "jobs-running" }, String(sum(metrics, "aitasks_jobs_running"))), h("span", {}, "jobs running")),
        h("div", { class: "tile" }, h("span", { class: "big", id: "throughput" }, String(rate)), h("span", {}, `finished / min (last ${sys.history.length} min)`)),
        h("div", { class: "tile" }, h("span", { class: "big", id: "failure-rate" }, failRate), h("span", {}, "failure rate (same window)"))),
      h("p", { class: "muted small", id: "history" }, recent),
      h("h2", {}, "Queues"),
      table("queues-table", ["Queue", "Waiting", "Workers"], queues.map((q) => [q,
        String(sum(metrics, "aitasks_queue_depth", (l) => l.queue === q)),
        String(sum(metrics, "aitasks_workers", (l) => l.queue === q))])),
      h("h2", {}, `Your limits (tenant ${limits.tenant})`),
      table("limits-table", ["Limit", "In force", "Set for you", "Now"], Object.entries(limits.limits).map(([name, value]) => [
        name, value === null ? "—" : value === 0 && name !== "weight" ? "no limit" : String(value),
        limits.own.includes(name) ? "yes" : "default", limitUsage(name, limits.usage)])),
      sys.tenants ? h("h2", {}, "Tenants (busiest first)") : "",
      sys.tenants ? table("tenants-table", ["Tenant", "Waiting", "Running"],
        sys.tenants.map((t) => [t.tenant, String(t.waiting), String(t.running)])) : "",
      h("h2", {}, "Workers"),
      table("workers-table", ["Worker", "Queues", "Pool", "Running"], sys.workers.map((w) => [
        w.name, w.queues.join(", "), String(w.concurrency ?? "?"),
        w.running.length ? h("span", {}, w.running.map((r) => h("span", { class: "run" },
          r.task_id ? h("a", { href: `#/job/${r.task_id}` }, r.task_type) : r.task_type,
          ` ${r.progress} % `, h("span", { class: "muted small" }, r.message), h("br")))) : h("span", { class: "muted" }, "idle")])),
      h("h2", {}, "Finished jobs"),
      h("p", { id: "finished-by-status" }, statuses.map((s) => h("span", { class: `badge status-${s.toLowerCase()}` }, `${s} ${byStatus[s] || 0}`)), " ",
        h("span", { class: "muted small" }, "since Redis's counters began")),
      table("types-table", ["Type", "Submitted", ...statuses, "Avg run time"], types.map((t) => {
        const count = sum(metrics, "aitasks_job_duration_seconds_count", (l) => l.task_type === t);
        const secs = sum(metrics, "aitasks_job_duration_seconds_sum", (l) => l.task_type === t);
        return [t, String(sum(metrics, "aitasks_jobs_submitted_total", (l) => l.task_type === t)),
          ...statuses.map((s) => String((byType[t] || {})[s] || 0)), count ? `${(secs / count).toFixed(2)} s` : "—"];
      })),
      h("p", { class: "muted small" }, "From ", h("a", { href: "/metrics" }, "/metrics"), ", ", h("a", { href: "/readyz" }, "/readyz"), " and /api/v1/system."));
    document.getElementById("system-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    timer = setTimeout(load, 5000);
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}
