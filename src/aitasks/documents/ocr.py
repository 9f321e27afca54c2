"""OCR with Tesseract (Debian ``tesseract-ocr``, through pytesseract) of scanned PDF pages and image files.

PDF pages are rendered by pypdfium2 (Apache/BSD; PyMuPDF is AGPL and stays out), under the lock of
``pdfium``, at about 300 dpi, Tesseract's sweet spot, with the pixel count capped so a poster-sized page
cannot exhaust memory.
"""

from __future__ import annotations

import functools
import io
import math
import os
import shutil
from typing import Any

from PIL import Image, ImageOps

from aitasks.documents import pdfium
from aitasks.documents.errors import CorruptDocument, DocumentTooLarge, OcrUnavailable

OCR_DPI = 300
MAX_RENDER_PIXELS = 40_000_000  # ~ an A3 page at 300 dpi; bigger pages render at a lower dpi
MAX_IMAGE_PIXELS = 60_000_000  # an uploaded scan above this is refused before it is decoded
OCR_TIMEOUT_S = 120.0


@functools.cache
def tesseract_version() -> str:
    """Tesseract's version, or OcrUnavailable with how to install it."""
    import pytesseract  # type: ignore[import-untyped]

    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise OcrUnavailable(
            "A page needs OCR but Tesseract is not installed: run scripts/ensure-tesseract.sh "
            "(Debian package tesseract-ocr).")
    return str(pytesseract.get_tesseract_version())


def ocr_image(image: Image.Image, lang: str = "eng", timeout_s: float = OCR_TIMEOUT_S) -> str:
    """The text Tesseract reads in an image (automatic page segmentation)."""
    import pytesseract  # type: ignore[import-untyped]

    tesseract_version()
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    # Tesseract's OpenMP threads cost more than they give on a small machine (one page: 0.9 s with them,
    # 0.4 s without, on 2 cores). Only its own process gets the limit: torch, in this one, keeps its threads.
    pytesseract.pytesseract.environ = {"OMP_THREAD_LIMIT": "1", **os.environ}
    try:
        text = pytesseract.image_to_string(image, lang=lang, config="--psm 3", timeout=timeout_s)
    except RuntimeError as exc:  # pytesseract raises RuntimeError on its timeout
        raise CorruptDocument(f"OCR of a page took longer than {timeout_s:.0f} s and was stopped.") from exc
    except pytesseract.TesseractError as exc:
        raise CorruptDocument(f"Tesseract could not read the page: {exc.message}") from exc
    from aitasks.documents.text import normalize_text

    return normalize_text(str(text))


def render_pdf_page(pdf: Any, page_number: int, dpi: int = OCR_DPI, max_pixels: int = MAX_RENDER_PIXELS) -> Image.Image:
    """Render page ``page_number`` (from 1) of an open ``pypdfium2.PdfDocument`` in grey at ~``dpi``,
    under the PDFium lock (Tesseract then reads the image outside it)."""
    with pdfium.locked():
        page = pdf[page_number - 1]
        try:
            width_pt, height_pt = page.get_size()
            scale = dpi / 72.0
            if width_pt * height_pt * scale * scale > max_pixels:
                scale = math.sqrt(max_pixels / max(width_pt * height_pt, 1.0))
            bitmap = page.render(scale=scale, grayscale=True)
            try:
                return bitmap.to_pil().copy()  # copy: the bitmap's buffer is freed on close
            finally:
                bitmap.close()
        finally:
            page.close()


def load_scan(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode a PNG/JPEG scan upright (EXIF rotation), refusing absurd sizes before decoding pixels."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # read from the header: nothing decoded yet
        if width * height > max_pixels:
            raise DocumentTooLarge(
                f"The image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted.")
        image.load()
    except DocumentTooLarge:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise CorruptDocument("The image is damaged and cannot be decoded.") from None
    return ImageOps.exif_transpose(image).convert("L")


def ocr_scan(data: bytes, lang: str = "eng", max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """OCR a PNG/JPEG scan."""
    return ocr_image(load_scan(data, max_pixels), lang=lang)
