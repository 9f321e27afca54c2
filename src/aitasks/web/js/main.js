// The dashboard: a hash router over a few pages. Everything comes from the API of this origin.

import { auth } from "./api.js";
import { clear, h } from "./dom.js";
import { documentsPage } from "./pages/documents.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import { signIn } from "./pages/signin.js";
import { submitPage } from "./pages/submit.js";
import { systemPage } from "./pages/system.js";

const PAGES = { submit: submitPage, job: jobPage, jobs: jobsPage, documents: documentsPage, system: systemPage };
const view = document.getElementById("view");
let cleanup = null;
let generation = 0;

function parse() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const [page, ...params] = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: page || "submit", params, query: new URLSearchParams(qs || "") };
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } }
  cleanup = null;
  const mine = ++generation;
  const { page, params, query } = parse();
  const signedIn = Boolean(auth.key);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  document.getElementById("who").textContent = signedIn ? `key ${auth.key.slice(0, 8)}…` : "";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  clear(view);
  if (!signedIn || page === "signin") {
    signIn(view, { next: page === "signin" ? "#/submit" : location.hash });
    return;
  }
  const render = PAGES[page] || PAGES.submit;
  const container = h("div", { class: "page", "data-page": page });
  view.append(container);
  try {
    const done = await render(container, { params, query });
    if (mine === generation) cleanup = done || null;
    else if (done) done();
  } catch (exc) {
    if (mine === generation) container.append(h("p", { class: "form-error" }, exc.message || String(exc)));
  }
}

document.getElementById("signout").addEventListener("click", () => {
  auth.clear();
  location.hash = "#/signin";
  route();
});
window.addEventListener("aitasks:unauthorized", () => {
  auth.clear();
  route();
});
window.addEventListener("hashchange", route);
route();
