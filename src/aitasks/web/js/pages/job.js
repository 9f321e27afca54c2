import { api, blobUrl, catalog, download, follow, localInputs } from "../api.js";
import { TERMINAL, clear, fmtBytes, fmtTime, h, statusBadge } from "../dom.js";

const IMAGE_EXTENSIONS = ["png", "jpg", "webp"];

async function inputPictures(taskId, type, local) {
  const out = [];
  for (const field of (type && type.file_inputs) || []) {
    if (local && local[field]) { out.push({ field, url: local[field] }); continue; }
    for (const ext of IMAGE_EXTENSIONS) {
      try {
        out.push({ field, url: await blobUrl(`/api/v1/tasks/${taskId}/artifacts/input-${field}.${ext}`) });
        break;
      } catch { /* not this extension, or no such input */ }
    }
  }
  return out;
}

function figure(caption, img) {
  return h("figure", {}, img, h("figcaption", {}, caption));
}

async function renderResult(box, job, type) {
  const result = job.result || {};
  const artifacts = result.artifacts || [];
  const pictures = h("div", { class: "compare" });
  const inputs = await inputPictures(job.task_id, type, localInputs.get(job.task_id));
  for (const { field, url } of inputs) {
    pictures.append(figure(`Input: ${field}`, h("img", { src: url, alt: `input ${field}`, class: "input-image" })));
  }
  const images = artifacts.filter((a) => (a.media_type || "").startsWith("image/"));
  const main = images.find((a) => a.name === result.image_artifact) || images[0];
  for (const a of main ? [main, ...images.filter((x) => x !== main)] : []) {
    const img = h("img", { alt: `output ${a.name}`, class: a === main ? "result-image" : "extra-image",
                           id: a === main ? "result-image" : undefined });
    pictures.append(figure(a === main ? `Output: ${a.name}` : a.name, img));
    blobUrl(a.url).then((u) => { img.src = u; }).catch((exc) => { img.alt = `could not load: ${exc.message}`; });
  }
  const pdfs = artifacts.filter((a) => a.media_type === "application/pdf");
  const docs = pdfs.map((a) => {
    const frame = h("iframe", { class: "pdf", title: a.name });
    blobUrl(a.url).then((u) => { frame.src = u; });
    return frame;
  });
  const list = h("ul", { class: "artifacts", id: "artifacts" }, artifacts.map((a) => h("li", {},
    h("a", { href: a.url, class: "artifact-link", "data-name": a.name,
             onclick: (ev) => { ev.preventDefault(); download(a.url, a.name); } }, a.name),
    h("span", { class: "muted small" }, ` ${a.media_type}, ${fmtBytes(a.bytes)}`))));
  const { artifacts: _a, image_data: _d, ...rest } = result;
  clear(box,
    h("h2", {}, "Result"),
    pictures.childElementCount ? pictures : "",
    docs,
    artifacts.length ? [h("h3", {}, "Files"), list] : h("p", { class: "muted" }, "No files."),
    h("details", {}, h("summary", {}, "Result JSON"), h("pre", {}, JSON.stringify(rest, null, 2))));
}

export async function jobPage(view, { params }) {
  const taskId = params[0];
  let job;
  try {
    job = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/status/`);
  } catch (exc) {
    view.append(h("div", { class: "card" }, h("h1", {}, "Job not found"), h("p", {}, exc.message),
      h("a", { href: "#/jobs" }, "All jobs")));
    return undefined;
  }
  const types = await catalog().catch(() => []);
  const type = types.find((t) => t.name === job.task_type);

  const badge = statusBadge(job.status, "job-status");
  const bar = h("div", { class: "bar" });
  const pct = h("span", { class: "pct", id: "job-progress-text" });
  const progress = h("div", { class: "progress", id: "job-progress", role: "progressbar", "aria-valuemin": "0",
                              "aria-valuemax": "100", "aria-label": "progress" }, bar, pct);
  const message = h("p", { class: "message", id: "job-message" });
  const attempts = h("span", { class: "muted", id: "job-attempts" });
  const line = h("span", { class: "muted", id: "job-line" });
  const cancel = h("button", { type: "button", id: "job-cancel", class: "danger" }, "Cancel");
  const live = h("span", { class: "muted small", id: "job-live" });
  const error = h("div", { class: "job-error", id: "job-error", role: "alert", hidden: true });
  const resultBox = h("div", { id: "job-result" });
  const times = h("dl", { class: "times" });

  let rendered = -1;
  function update(s) {
    job = { ...job, ...s };
    badge.textContent = job.status;
    badge.className = `badge status-${job.status.toLowerCase()}`;
    const p = Math.max(0, Math.min(100, Number(job.progress) || 0));
    bar.style.width = `${p}%`;
    pct.textContent = `${p} %`;
    progress.setAttribute("aria-valuenow", String(p));
    progress.classList.toggle("done", job.status === "SUCCESS");
    progress.classList.toggle("failed", job.status === "FAILURE" || job.status === "REVOKED");
    message.textContent = job.message || "";
    attempts.textContent = job.attempts ? `attempt${job.attempts === 1 ? "" : "s"}: ${job.attempts}` : "";
    line.textContent = job.status === "PENDING" && job.queue_position ? `${ordinal(job.queue_position)} in line` : "";
    const terminal = TERMINAL.has(job.status);
    cancel.hidden = terminal;
    if (job.cancel_requested && !terminal) { cancel.disabled = true; cancel.textContent = "Cancelling…"; }
    clear(times,
      h("dt", {}, "Created"), h("dd", {}, fmtTime(job.created_at)),
      h("dt", {}, "Started"), h("dd", {}, fmtTime(job.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, fmtTime(job.finished_at)));
    if (job.error) {
      error.hidden = false;
      clear(error, h("strong", {}, job.status === "FAILURE" ? "Failed" : "Last attempt failed"),
        ` after ${job.attempts} attempt${job.attempts === 1 ? "" : "s"}`,
        job.error_type ? ` (${job.error_type})` : "", ": ", h("span", { class: "error-text" }, job.error));
    } else {
      error.hidden = true;
    }
    if (job.status === "REVOKED") clear(resultBox, h("p", { class: "muted" }, "Cancelled: no result."));
    if (job.status === "SUCCESS" && job.result && rendered !== job.seq) {
      rendered = job.seq;
      renderResult(resultBox, job, type);
    }
    if (terminal) live.textContent = "";
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    try {
      const answer = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/cancel/`, { method: "POST", ok: [400] });
      if (answer && answer.message) message.textContent = answer.message;
    } catch (exc) {
      message.textContent = exc.message;
      cancel.disabled = false;
      cancel.textContent = "Cancel";
    }
  });

  view.append(h("section", { class: "card job", id: "job-view", "data-task-id": taskId },
    h("div", { class: "row" }, h("h1", {}, type ? type.name : job.task_type), h("span", { class: "spacer" }), badge),
    h("p", { class: "muted small" }, "id ", h("code", {}, taskId), ` · queue ${job.queue}`),
    progress,
    h("div", { class: "row" }, message, h("span", { class: "spacer" }), line, attempts),
    h("div", { class: "row" }, cancel, live),
    error, times, resultBox));
  update(job);
  if (TERMINAL.has(job.status) && job.status !== "SUCCESS") return undefined;
  live.textContent = "live";
  const stream = follow(taskId, update, (problem) => { live.textContent = problem ? problem.message : "live"; });
  // Events carry no place in line: while the job waits, its status is read again every 2 s for it.
  let lineTimer = null;
  async function refreshLine() {
    if (job.status !== "PENDING") { line.textContent = ""; return; }
    try {
      const s = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/status/`);
      if (job.status === "PENDING") {
        job.queue_position = s.queue_position;
        line.textContent = s.queue_position ? `${ordinal(s.queue_position)} in line` : "";
      }
    } catch (exc) { /* the stream shows problems */ }
    lineTimer = setTimeout(refreshLine, 2000);
  }
  lineTimer = setTimeout(refreshLine, 2000);
  return () => { stream.close(); clearTimeout(lineTimer); };
}

/** 1st, 2nd, 3rd, 4th … 11th, 12th, 13th, 21st. */
export function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
  return `${n}${suffix}`;
}
