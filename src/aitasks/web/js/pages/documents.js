import { api } from "../api.js";
import { clear, fmtTime, h } from "../dom.js";

// Document status -> the badge colour of the job status it corresponds to.
const BADGE = { processing: "processing", completed: "success", failed: "failure", deleting: "revoked" };

export async function documentsPage(view) {
  // --- upload ---
  const file = h("input", { type: "file", id: "doc-file", "aria-label": "Document file",
    accept: ".pdf,.docx,.txt,.md,.html,.htm,.png,.jpg,.jpeg" });
  const docId = h("input", { type: "text", id: "doc-id", placeholder: "document id (optional)", "aria-label": "Document id" });
  const uploadError = h("p", { class: "form-error", id: "doc-upload-error", hidden: true });
  const uploadButton = h("button", { type: "submit", id: "doc-upload" }, "Upload");
  const uploadForm = h("form", { class: "card", id: "doc-upload-form", novalidate: true },
    h("h1", {}, "Documents"),
    h("p", { class: "muted" }, "PDF, DOCX, text, Markdown, HTML or a scanned page (OCR). Uploading the same id again replaces the document."),
    h("div", { class: "row wrap" }, file, docId, uploadButton),
    uploadError);
  uploadForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    uploadError.hidden = true;
    if (!file.files.length) {
      uploadError.textContent = "Choose a file first.";
      uploadError.hidden = false;
      return;
    }
    const data = new FormData();
    data.append("file", file.files[0]);
    if (docId.value.trim()) data.append("document_id", docId.value.trim());
    uploadButton.disabled = true;
    try {
      await api("/api/v1/documents/", { method: "POST", body: data });
      file.value = "";
      docId.value = "";
      await load();
    } catch (exc) {
      const field = exc.fields && exc.fields[0];
      uploadError.textContent = field ? `${field.field}: ${field.message}` : exc.message;
      uploadError.hidden = false;
    } finally {
      uploadButton.disabled = false;
    }
  });

  // --- search ---
  const query = h("input", { type: "search", id: "search-query", placeholder: "Ask anything about your documents",
    "aria-label": "Search query", maxlength: "2000" });
  const searchButton = h("button", { type: "submit", id: "search-go" }, "Search");
  const results = h("ol", { class: "search-results", id: "search-results" });
  const searchNote = h("p", { class: "muted small", id: "search-note" });
  const searchForm = h("form", { class: "card", id: "search-form", novalidate: true },
    h("h2", {}, "Search"), h("div", { class: "row" }, query, searchButton), searchNote, results);
  searchForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!query.value.trim()) return;
    searchButton.disabled = true;
    searchNote.textContent = "Searching… (the first search loads the model: a few seconds)";
    try {
      const found = await api("/api/v1/search", { method: "POST", body: { query: query.value.trim(), top_k: 5 } });
      searchNote.textContent = found.results.length ? "" : "Nothing found.";
      clear(results, found.results.map((r) => h("li", { class: "search-hit" },
        h("div", { class: "row" }, h("strong", {}, r.filename || r.document_id),
          h("span", { class: "muted small" }, r.page ? `page ${r.page}` : ""),
          h("span", { class: "spacer" }), h("span", { class: "mono small" }, `score ${r.score.toFixed(2)}`)),
        h("p", { class: "hit-text" }, r.text))));
    } catch (exc) {
      searchNote.textContent = exc.message;
      clear(results);
    } finally {
      searchButton.disabled = false;
    }
  });

  // --- list ---
  const body = h("tbody");
  const listNote = h("p", { class: "muted small", id: "documents-note" });
  const more = h("button", { type: "button", id: "documents-more", hidden: true }, "More");
  const list = h("section", { class: "card" },
    h("h2", {}, "Your documents"),
    h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "documents-table" },
      h("thead", {}, h("tr", {}, ["Document", "File", "Status", "Pages", "Chunks", "Uploaded", ""].map((c) => h("th", {}, c)))),
      body)),
    listNote, more);

  let timer = null;
  let stopped = false;
  let shown = [];
  let cursor = null;

  function row(d) {
    const remove = h("button", { type: "button", class: "small danger", "data-delete": d.document_id }, "Delete");
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete ${d.document_id} and everything indexed from it?`)) return;
      remove.disabled = true;
      try {
        await api(`/api/v1/documents/${encodeURIComponent(d.document_id)}`, { method: "DELETE" });
        await load();
      } catch (exc) {
        listNote.textContent = exc.message;
        remove.disabled = false;
      }
    });
    const status = h("span", { class: `badge status-${BADGE[d.status] || ""}`, title: d.error || d.message || "" }, d.status);
    return h("tr", { "data-document-id": d.document_id },
      h("td", { class: "mono" }, d.document_id),
      h("td", {}, d.filename || ""),
      h("td", {}, status, d.status === "failed" && d.error ? h("div", { class: "small form-error" }, d.error) : ""),
      h("td", {}, d.pages ?? "—"),
      h("td", {}, d.chunks ?? "—"),
      h("td", {}, fmtTime(d.uploaded_at)),
      h("td", {}, remove));
  }

  function render() {
    clear(body, shown.length ? shown.map(row) : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No documents yet.")));
    more.hidden = !cursor;
  }

  async function load(append = false) {
    clearTimeout(timer);
    const q = new URLSearchParams({ limit: "50" });
    if (append && cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await api(`/api/v1/documents/?${q}`);
    } catch (exc) {
      listNote.textContent = exc.message;
      return;
    }
    if (stopped) return;
    shown = append ? [...shown, ...page.documents] : page.documents;
    cursor = page.next_cursor;
    render();
    const busy = shown.some((d) => d.status === "processing" || d.status === "deleting");
    listNote.textContent = busy ? "Updating while documents are processed." : "";
    if (busy) timer = setTimeout(() => load(), 2000);
  }
  more.addEventListener("click", () => load(true));

  view.append(uploadForm, searchForm, list);
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}
