"""Screenshots of the web dashboard for the docs: docs/screenshots/*.png.

    .venv/bin/python scripts/screenshots.py                       # starts its own stack (Redis, workers, API)
    .venv/bin/python scripts/screenshots.py --url http://127.0.0.1:8000 --key ait_...

Uses the same browser as the tests: Debian's Chromium (`scripts/ensure-chromium.sh`) driven by
Playwright, which never downloads a browser.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright
from skimage import data as samples

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
WIDE = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@contextmanager
def target(url: str | None, key: str | None) -> Iterator[tuple[str, str]]:
    if url:
        if not key:
            sys.exit("--key is required with --url")
        yield url.rstrip("/"), key
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from stack import running_stack  # the tests' deployment: its own Redis on a free port, real workers

    with tempfile.TemporaryDirectory(prefix="aitasks-shots-") as tmp, running_stack(Path(tmp)) as s:
        s.wait_workers()
        yield s.url, s.new_key("screenshots")


def picture(path: Path) -> Path:
    Image.fromarray(np.asarray(samples.astronaut())).resize((384, 384)).save(path, "PNG")
    return path


def shot(page: Page, name: str, full: bool = False) -> None:
    page.wait_for_timeout(250)  # let transitions settle
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    # Keep the files small for the repository.
    img = Image.open(path).convert("RGB")
    buf = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    path.write_bytes(buf.getvalue())
    print(f"wrote {path.relative_to(ROOT)}")


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    page.fill("#api-key", key)
    page.click("#signin-submit")
    expect(page.locator("#submit-form")).to_be_visible()


def loaded(page: Page, selector: str) -> None:
    page.wait_for_function(f"() => {{ const i = document.querySelector({selector!r}); "
                           "return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (default: start a private stack)")
    parser.add_argument("--key", help="an API key of that service")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM}: run scripts/ensure-chromium.sh (or set CHROMIUM_PATH)")
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    OUT.mkdir(parents=True, exist_ok=True)

    with target(args.url, args.key) as (url, key), sync_playwright() as p, \
            tempfile.TemporaryDirectory() as tmp:
        photo = picture(Path(tmp) / "astronaut.png")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(base_url=url, viewport=WIDE, device_scale_factor=1)
        context.set_default_timeout(60_000)
        page = context.new_page()

        page.goto("/")
        page.fill("#api-key", "ait_" + "•" * 20)
        shot(page, "sign-in")
        sign_in(page, key)

        # The submit form, generated from background_removal's schema, with the picture's preview.
        page.goto("/#/submit/background_removal")
        page.set_input_files("#f-image", str(photo))
        loaded(page, ".field[data-field=image] img.preview")
        shot(page, "submit-form")

        # A validation error shown at its field.
        page.goto("/#/submit/diagnostic")
        page.fill("#f-parameters-steps", "0")
        page.click("#submit-job")
        expect(page.locator('.field[data-field="parameters.steps"] .field-error')).not_to_be_empty()
        shot(page, "validation")

        # A running job: progress with the worker's message, and the cancel button.
        page.fill("#f-parameters-steps", "40")
        page.fill("#f-parameters-duration_s", "20")
        page.click("#submit-job")
        expect(page.locator("#job-progress")).to_be_visible()
        page.wait_for_function("() => Number(document.getElementById('job-progress')"
                               ".getAttribute('aria-valuenow')) >= 35")
        shot(page, "running-job")
        page.click("#job-cancel")
        expect(page.locator("#job-status")).to_have_text("REVOKED")

        # A finished image job: before and after, the files.
        page.goto("/#/submit/background_removal")
        page.set_input_files("#f-image", str(photo))
        page.click("#submit-job")
        expect(page.locator("#job-status")).to_have_text("SUCCESS", timeout=180_000)
        loaded(page, "#result-image")
        loaded(page, "img.input-image")
        result_hash = page.url.split("#", 1)[1]
        shot(page, "result", full=True)

        page.goto("/#/jobs")
        expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
        shot(page, "jobs")

        # Documents: an upload ingested, and a question answered from it.
        notes = Path(tmp) / "arctic-terns.txt"
        notes.write_text("Arctic terns fly from the Arctic to the Antarctic and back every year, a round trip "
                         "of about seventy thousand kilometres, the longest migration of any animal.\n\n"
                         "Their diet is mostly small fish and krill caught by plunge diving.\n")
        page.goto("/#/documents")
        page.set_input_files("#doc-file", str(notes))
        page.fill("#doc-id", "terns")
        page.click("#doc-upload")
        expect(page.locator('#documents-table tr[data-document-id="terns"] .badge')).to_have_text(
            "completed", timeout=180_000)
        page.fill("#search-query", "which bird travels the farthest each year?")
        page.click("#search-go")
        expect(page.locator("#search-results .search-hit").first).to_be_visible(timeout=120_000)
        shot(page, "documents", full=True)

        page.goto("/#/system")
        expect(page.locator("#queues-table")).to_be_visible()
        shot(page, "system", full=True)

        phone = browser.new_context(base_url=url, viewport=PHONE, device_scale_factor=1, is_mobile=True)
        phone_page = phone.new_page()
        sign_in(phone_page, key)
        phone_page.goto(f"/#{result_hash}")
        loaded(phone_page, "#result-image")
        shot(phone_page, "phone-result", full=True)
        phone_page.goto("/#/submit/diagnostic")
        shot(phone_page, "phone-submit")
        phone.close()
        context.close()
        browser.close()


if __name__ == "__main__":
    main()
