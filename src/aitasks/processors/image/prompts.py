"""Prompt refinement for ``image_generation``: a fixed, documented expansion (no model, no randomness).

The rule, applied by :func:`refine_prompt`:

1. The subject is the user's prompt with surrounding whitespace trimmed, every run of whitespace
   (newlines included) collapsed to one space, and trailing commas removed.
2. The style's terms follow (:data:`STYLES`); no style (``None``) adds none.
3. The quality terms follow (:data:`QUALITY_TERMS`), unless ``quality=False``.
4. A term already contained in the text built so far (compared case-insensitively) is skipped, so
   "a highly detailed fox" does not get "highly detailed" twice.
5. The parts are joined with ", ".

Example: ``refine_prompt("a red fox  in snow", "watercolor")`` gives
``"a red fox in snow, watercolor painting, soft washes, paper texture, highly detailed, sharp focus,
high quality"``.

:data:`DEFAULT_NEGATIVE_PROMPT` is what the job steers away from when the client sends no negative
prompt (and refinement is on).
"""

from __future__ import annotations

from typing import Literal, get_args

StyleName = Literal["photo", "digital-art", "anime", "oil-painting", "watercolor"]

STYLES: dict[str, tuple[str, ...]] = {
    "photo": ("photograph", "natural lighting", "35mm lens"),
    "digital-art": ("digital art", "vibrant colors", "concept art"),
    "anime": ("anime style", "cel shading", "clean line art"),
    "oil-painting": ("oil painting", "visible brush strokes", "rich texture"),
    "watercolor": ("watercolor painting", "soft washes", "paper texture"),
}
assert tuple(STYLES) == get_args(StyleName), "STYLES and StyleName must name the same styles"

QUALITY_TERMS: tuple[str, ...] = ("highly detailed", "sharp focus", "high quality")

DEFAULT_NEGATIVE_PROMPT = (
    "blurry, low quality, lowres, jpeg artifacts, deformed, distorted, disfigured, bad anatomy, "
    "extra limbs, watermark, text, signature"
)


def subject(prompt: str) -> str:
    """Step 1 of the rule: trimmed, whitespace collapsed, trailing commas removed."""
    return " ".join(prompt.split()).rstrip(", ").strip()


def refine_prompt(prompt: str, style: str | None, *, quality: bool = True) -> str:
    """The prompt expanded by the rule in this module's docstring."""
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
    parts = [subject(prompt)]
    terms = [*(STYLES[style] if style else ()), *(QUALITY_TERMS if quality else ())]
    for term in terms:
        if term.lower() not in ", ".join(parts).lower():
            parts.append(term)
    return ", ".join(p for p in parts if p)
