"""The web dashboard in a real browser (Debian's Chromium driven by Playwright) against the real
stack, and the stream tokens it uses for live updates, over HTTP."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright
from skimage import data as samples

from aitasks.client import sse
from aitasks.jobs.apikeys import revoke_key
from stack import Stack, key_of, queue_held, submit, wait_status, ws_open, ws_rest

pytestmark = pytest.mark.slow  # headless Chromium

TASKS = "/api/v1/tasks"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


# --- browser -------------------------------------------------------------------------------------


def launch(playwright: Any) -> Browser:
    """Debian's Chromium, never a browser Playwright downloads."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the dashboard tests need it. Run `make install` "
                    "(scripts/ensure-chromium.sh installs Debian's `chromium` with apt-get, as root or with sudo) "
                    "or set CHROMIUM_PATH to a Chromium binary.", pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


@pytest.fixture
def key(stack: Stack) -> str:
    return stack.new_key()


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    page.fill("#api-key", key)
    page.click("#signin-submit")
    expect(page.locator("#submit-form")).to_be_visible()


def astronaut_png(path: Path) -> Path:
    Image.fromarray(np.asarray(samples.astronaut())).resize((256, 256)).save(path, "PNG")
    return path


def api(stack: Stack, key: str) -> httpx.Client:
    return stack.client(key=key)


# --- pages ---------------------------------------------------------------------------------------


def test_the_dashboard_is_static_files_from_this_origin(stack):
    r = httpx.get(f"{stack.url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert 'type="module"' in r.text and "http" not in r.text.split("<body>")[0].replace('http-equiv', '')
    js = httpx.get(f"{stack.url}/ui/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(f"{stack.url}/ui/app.css").headers["content-type"].startswith("text/css")
    assert httpx.get(f"{stack.url}/ui/nope.js").status_code == 404


def test_sign_in_keeps_the_key_in_session_storage_only(page, key):
    page.goto("/")
    page.fill("#api-key", "ait_not-a-real-key")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_contain_text("not valid")
    sign_in(page, key)
    expect(page.locator("#nav")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('aitasks.apiKey')") == key
    assert page.evaluate("k => Object.values(localStorage).includes(k)", key) is False
    assert key not in page.url
    page.click("#signout")
    expect(page.locator("#signin-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('aitasks.apiKey')") is None


def test_an_image_job_through_the_form_shows_progress_and_the_result(page, stack, key, tmp_path):
    picture = astronaut_png(tmp_path / "astronaut.png")
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    sign_in(page, key)
    page.goto("/#/submit/background_removal")
    expect(page.locator("#task-type")).to_have_value("background_removal")
    page.set_input_files("#f-image", str(picture))
    expect(page.locator(".field[data-field=image] img.preview")).to_be_visible()
    page.click("#submit-job")
    expect(page.locator("#job-view")).to_be_visible()
    task_id = page.locator("#job-view").get_attribute("data-task-id")
    assert task_id and task_id in page.url
    # Record every width the bar takes from here on.
    page.evaluate("""() => {
        const bar = document.getElementById('job-progress');
        window.__seen = [Number(bar.getAttribute('aria-valuenow'))];
        new MutationObserver(() => window.__seen.push(Number(bar.getAttribute('aria-valuenow'))))
            .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
    }""")
    expect(page.locator("#job-status")).to_have_text("SUCCESS", timeout=180_000)
    expect(page.locator("#job-progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#job-progress-text")).to_have_text("100 %")
    seen = page.evaluate("window.__seen")
    assert seen[-1] == 100 and seen == sorted(seen), seen
    page.wait_for_function("() => { const i = document.getElementById('result-image');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
    assert page.evaluate("document.getElementById('result-image').naturalWidth") == 256
    page.wait_for_function("() => { const i = document.querySelector('img.input-image');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    expect(page.locator("#artifacts a.artifact-link")).not_to_have_count(0)
    expect(page.locator("#job-cancel")).to_be_hidden()
    # Live updates went over SSE with a stream token, never with the key in a URL.
    assert any("/events?token=ast_" in u for u in requests), requests
    assert not any(key in u for u in requests)
    # The same result opened later (no local copy of the input): the input comes from the API.
    page.reload()
    page.wait_for_function("() => { const i = document.getElementById('result-image');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
    page.wait_for_function("() => { const i = document.querySelector('img.input-image');"
                           " return i && i.complete && i.naturalWidth > 0; }")


def test_cancelling_a_long_diagnostic_job_in_the_ui_ends_revoked(page, stack, key):
    sign_in(page, key)
    page.goto("/#/submit/diagnostic")
    expect(page.locator("#f-parameters-steps")).to_be_visible()
    page.fill("#f-parameters-duration_s", "30")
    page.fill("#f-parameters-steps", "30")
    page.click("#submit-job")
    expect(page.locator("#job-view")).to_be_visible()
    task_id = page.locator("#job-view").get_attribute("data-task-id")
    expect(page.locator("#job-status")).to_have_text("PROCESSING", timeout=60_000)
    page.wait_for_function("() => Number(document.getElementById('job-progress').getAttribute('aria-valuenow')) > 0",
                           timeout=30_000)
    page.click("#job-cancel")
    expect(page.locator("#job-status")).to_have_text("REVOKED", timeout=30_000)
    expect(page.locator("#job-cancel")).to_be_hidden()
    with api(stack, key) as c:
        assert c.get(f"{TASKS}/{task_id}/status/").json()["status"] == "REVOKED"


def test_a_value_out_of_bounds_is_shown_at_its_field_before_anything_is_sent(page, stack, key):
    sign_in(page, key)
    page.goto("/#/submit/diagnostic")
    page.fill("#f-parameters-steps", "0")
    page.click("#submit-job")
    error = page.locator('.field[data-field="parameters.steps"] .field-error')
    expect(error).to_contain_text("must be at least 1")
    expect(page.locator("#f-parameters-steps")).to_have_attribute("aria-invalid", "true")
    page.fill("#f-parameters-duration_s", "3601")
    page.click("#submit-job")
    expect(page.locator('.field[data-field="parameters.duration_s"] .field-error')).to_contain_text("at most 3600")
    assert "#/submit/diagnostic" in page.url
    with api(stack, key) as c:
        assert c.get(f"{TASKS}/").json()["tasks"] == []
    page.fill("#f-parameters-steps", "2")
    expect(error).to_have_text("")


def test_the_servers_refusal_is_shown_next_to_the_field_it_names(page, stack, key, tmp_path):
    picture = astronaut_png(tmp_path / "astronaut.png")
    sign_in(page, key)
    page.goto("/#/submit/style_transfer")
    page.set_input_files("#f-image", str(picture))
    page.click("#submit-job")  # neither a preset nor a style_image: only the server knows that rule
    expect(page.locator('.field[data-field="parameters.style"] .field-error')).to_contain_text(
        "give a preset", timeout=30_000)
    expect(page.locator(".form-error")).to_contain_text("give exactly one of parameters.style or style_image")
    assert "#/submit/style_transfer" in page.url


def test_the_jobs_page_filters_and_pages(page, stack, key):
    with api(stack, key) as c:
        ids = [submit(c, parameters={"steps": 1}) for _ in range(21)]
        for task_id in ids:
            wait_status(c, task_id)
        failed = submit(c, parameters={"fail": True})  # the newest, so first in the list
        wait_status(c, failed)
    sign_in(page, key)
    page.goto("/#/jobs")
    rows = page.locator("#jobs-table tbody tr[data-task-id]")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("data-task-id", failed)
    page.click("#jobs-next")
    expect(rows).to_have_count(2)
    page.click("#jobs-prev")
    expect(rows).to_have_count(20)
    page.select_option("#filter-status", "FAILURE")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", failed)
    page.select_option("#filter-type", "background_removal")
    expect(page.locator("#jobs-table tbody")).to_contain_text("No jobs.")
    page.goto(f"/#/job/{failed}")
    expect(page.locator("#job-status")).to_have_text("FAILURE")
    expect(page.locator("#job-error")).to_contain_text("after 1 attempt")


def test_the_jobs_page_filters_by_text_and_day_and_exports_what_it_shows(page, stack, key, tmp_path):
    with api(stack, key) as c:
        ok = submit(c, parameters={"steps": 1})
        failed = submit(c, parameters={"fail": True})
        for task_id in (ok, failed):
            wait_status(c, task_id)
        error = c.get(f"/api/v1/tasks/{failed}/status/").json()["error"]
        # The export reads the store of record: wait until the recorder wrote both.
        deadline = time.monotonic() + 60
        while len(c.get("/api/v1/tasks/export").text.splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    sign_in(page, key)
    page.goto("/#/jobs")
    rows = page.locator("#jobs-table tbody tr[data-task-id]")
    expect(rows.first).to_be_visible()
    page.fill("#filter-q", error[:15].upper())
    page.press("#filter-q", "Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", failed)
    assert "q=" in page.url
    with page.expect_download() as download:
        page.click("#jobs-export-csv")
    saved = tmp_path / "export.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("task_id,task_type,status") and len(lines) == 2 and lines[1].startswith(failed)
    page.fill("#filter-q", "")
    page.fill("#filter-after", "2999-01-01")
    page.press("#filter-after", "Enter")
    page.locator("#filter-after").dispatch_event("change")
    expect(page.locator("#jobs-table tbody")).to_contain_text("No jobs.")
    page.fill("#filter-after", "2000-01-01")
    page.locator("#filter-after").dispatch_event("change")
    expect(rows).to_have_count(2)


def test_the_documents_page_uploads_searches_and_deletes(page, stack, key, tmp_path):
    """Upload a text file from the page, watch it become `completed`, find it by a paraphrase (the real
    embedding model in the API process), then delete it: the row goes and search finds nothing of it."""
    doc = tmp_path / "migration.txt"
    doc.write_text("Arctic terns fly from the Arctic to the Antarctic and back every year, a round trip of "
                   "about seventy thousand kilometres, the longest migration of any animal.\n\n"
                   "Their diet is mostly small fish and krill caught by plunge diving.\n")
    sign_in(page, key)
    page.goto("/#/documents")
    page.set_input_files("#doc-file", str(doc))
    page.fill("#doc-id", "terns")
    page.click("#doc-upload")
    row = page.locator('#documents-table tr[data-document-id="terns"]')
    expect(row).to_contain_text("migration.txt")
    expect(row.locator(".badge")).to_have_text("completed", timeout=120_000)
    expect(row.locator("td").nth(4)).not_to_have_text("—")  # chunks

    page.fill("#search-query", "which bird travels the farthest each year?")
    page.click("#search-go")
    hits = page.locator("#search-results .search-hit")
    expect(hits.first).to_contain_text("migration.txt", timeout=120_000)
    expect(hits.first).to_contain_text("seventy thousand kilometres")

    page.on("dialog", lambda d: d.accept())
    row.locator("button[data-delete]").click()
    expect(row).to_have_count(0)
    expect(page.locator("#documents-table tbody")).to_contain_text("No documents yet.")
    page.click("#search-go")
    expect(page.locator("#search-note")).to_have_text("Nothing found.")
    # The upload form names the missing file instead of sending nothing.
    page.click("#doc-upload")
    expect(page.locator("#doc-upload-error")).to_have_text("Choose a file first.")


def test_the_system_page_shows_queues_workers_and_finished_jobs(page, stack, key):
    sign_in(page, key)
    page.goto("/#/system")
    expect(page.locator("#readiness")).to_contain_text("ready")
    table = page.locator("#queues-table")
    expect(table).to_contain_text("cpu")
    expect(table).to_contain_text("gpu")
    expect(page.locator("#finished-by-status")).to_contain_text("SUCCESS")
    expect(page.locator("#types-table")).to_contain_text("diagnostic")
    # Workers with what they run, and throughput from the service's per-minute counters.
    workers = page.locator("#workers-table")
    expect(workers).to_contain_text("cpu")
    expect(workers).to_contain_text("gpu")
    expect(page.locator("#history")).to_contain_text("ok")
    assert float(page.locator("#throughput").inner_text()) >= 0


def test_a_waiting_job_shows_its_place_in_line_and_the_system_page_the_limits(page, stack, key):
    """The cpu slot held by the tenant's own long job: its third waiting job says "3rd in line" and moves up
    as the ones ahead are cancelled; the system page shows the tenant's limits and usage."""
    sign_in(page, key)
    with api(stack, key) as c, queue_held(c):
        waiting = [submit(c, parameters={"steps": 1}) for _ in range(3)]
        page.goto(f"/#/job/{waiting[2]}")
        expect(page.locator("#job-line")).to_have_text("3rd in line", timeout=30_000)
        assert c.post(f"{TASKS}/{waiting[0]}/cancel/").status_code == 200
        expect(page.locator("#job-line")).to_have_text("2nd in line", timeout=30_000)
        page.goto("/#/system")
        limits = page.locator("#limits-table")
        expect(limits).to_contain_text("max_running")
        expect(limits).to_contain_text("1 running")
        expect(limits).to_contain_text("2 queued")
    for task_id in waiting[1:]:
        with api(stack, key) as c:
            assert wait_status(c, task_id)["status"] == "SUCCESS"


def test_pages_fit_a_phone_screen(browser, stack, key):
    context = browser.new_context(base_url=stack.url, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        pg = context.new_page()
        sign_in(pg, key)
        for hash_ in ("#/submit/background_removal", "#/jobs", "#/documents", "#/system"):
            pg.goto(f"/{hash_}")
            pg.wait_for_timeout(300)
            assert pg.evaluate("document.documentElement.scrollWidth") <= 390, hash_
    finally:
        context.close()


# --- stream tokens, over HTTP --------------------------------------------------------------------


def token_for(client: httpx.Client) -> dict[str, Any]:
    r = client.post("/api/v1/stream-tokens")
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def sse_statuses(stack: Stack, task_id: str, token: str) -> tuple[int, list[str]]:
    with httpx.stream("GET", f"{stack.url}{TASKS}/{task_id}/events", params={"token": token}, timeout=60) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [r.json()["code"]]
        return 200, [update["status"] for update in sse.updates(r.iter_lines())]


def test_a_stream_token_opens_the_sse_stream_and_websockets_of_its_tenant_only(stack):
    with stack.client() as mine, stack.client() as other:
        task_id = submit(mine, parameters={"steps": 2})
        wait_status(mine, task_id)
        body = token_for(mine)
        assert body["token"].startswith("ast_") and body["expires_in"] == 60
        assert body["expires_at"] == pytest.approx(time.time() + 60, abs=5)
        status, events = sse_statuses(stack, task_id, body["token"])
        assert status == 200 and events[-1] == "SUCCESS", events
        # A token works for any of its tenant's jobs, never for another tenant's.
        assert sse_statuses(stack, task_id, token_for(other)["token"]) == (404, ["not_found"])
        # The WebSockets take it too, from the query string.
        for path in (f"{TASKS}/{task_id}/ws", f"/api/ws/tasks/{task_id}"):
            with ws_open(stack, f"{path}?token={body['token']}", None) as ws:
                messages, code = ws_rest(ws, 30)
            assert code == 1000 and messages, messages
            with ws_open(stack, f"{path}?token=ast_forged", None) as ws:
                messages, code = ws_rest(ws, 30)
            assert code == 4401, messages


def test_a_stream_token_expires_and_the_key_is_never_a_token(stack):
    with stack.client() as c:
        task_id = submit(c, parameters={"steps": 1})
        wait_status(c, task_id)
        assert c.post("/api/v1/stream-tokens", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.post(f"{stack.url}/api/v1/stream-tokens").status_code == 401
        # The API key itself in the URL: refused.
        assert sse_statuses(stack, task_id, key_of(c)) == (401, ["unauthorized"])
        assert sse_statuses(stack, task_id, "ast_" + "x" * 32) == (401, ["unauthorized"])
        token = token_for(c)["token"]
        stored = f"aitasks:stream-token:{hashlib.sha256(token.encode()).hexdigest()}"
        assert 0 < stack.redis.ttl(stored) <= 60
        assert sse_statuses(stack, task_id, token)[0] == 200
        stack.redis.pexpire(stored, 1)
        time.sleep(0.05)
        assert sse_statuses(stack, task_id, token) == (401, ["unauthorized"])
        # The header keeps working exactly as before, and wins over a token.
        with c.stream("GET", f"{TASKS}/{task_id}/events", params={"token": "ast_bad"}) as r:
            assert r.status_code == 200


def test_revoking_the_key_ends_its_stream_tokens(stack):
    key = stack.new_key()
    with stack.client(key=key) as c:
        task_id = submit(c, parameters={"steps": 1})
        wait_status(c, task_id)
        token = token_for(c)["token"]
        assert sse_statuses(stack, task_id, token)[0] == 200
        revoke_key(stack.redis, key)
        assert sse_statuses(stack, task_id, token) == (401, ["unauthorized"])


def test_the_openapi_schema_documents_stream_tokens(stack):
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    op = schema["paths"]["/api/v1/stream-tokens"]["post"]
    assert "201" in op["responses"] and "401" in op["responses"] and op["security"] == [{"bearer": []}]
    events = schema["paths"][f"{TASKS}/{{task_id}}/events"]["get"]
    assert any(p["name"] == "token" and p["in"] == "query" for p in events["parameters"])
