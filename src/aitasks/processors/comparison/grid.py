"""The comparison grid: one labelled tile per picture, laid out in rows, drawn with Pillow.

A tile is a square picture area (the image fitted inside, centred; transparency shown on a
checkerboard) above a label band. A child that did not succeed gets a tile saying FAILED (or
CANCELLED) with its error instead of a picture.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

GAP = 12  # pixels between tiles and around the grid
BACKGROUND = (255, 255, 255)
LABEL_INK = (20, 20, 20)
FAILED_FILL = (150, 28, 28)
CANCELLED_FILL = (95, 95, 95)
CHECKER = ((236, 236, 236), (204, 204, 204))


@dataclass
class Tile:
    label: str  # first line: the type (or "original"); the rest: key parameters
    image: bytes | None = None  # None: a failure tile
    failure: str | None = None  # "FAILED", "CANCELLED", "MISSING"
    error: str | None = None


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font: no system font needed


def fit_text(draw: ImageDraw.ImageDraw, text: str, fnt: Any, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=fnt) <= width:
        return text
    while text and draw.textlength(text + "…", font=fnt) > width:
        text = text[:-1]
    return text + "…"


def pack(draw: ImageDraw.ImageDraw, items: list[str], fnt: Any, width: int, max_lines: int) -> list[str]:
    """``items`` joined with ", " into at most ``max_lines`` lines of ``width`` pixels, breaking between
    items (an item too long for a line is shortened); a line cut short ends with an ellipsis."""
    lines: list[str] = []
    for item in items:
        joined = f"{lines[-1]}, {item}" if lines else item
        if lines and draw.textlength(joined, font=fnt) <= width:
            lines[-1] = joined
        elif len(lines) < max_lines:
            lines.append(item)
        else:
            lines[-1] = lines[-1] + ", …"
            break
    return [fit_text(draw, line, fnt, width) for line in lines]


def checkerboard(size: tuple[int, int], square: int) -> Image.Image:
    board = Image.new("RGB", size, CHECKER[0])
    draw = ImageDraw.Draw(board)
    for y in range(0, size[1], square):
        for x in range(0, size[0], square):
            if (x // square + y // square) % 2:
                draw.rectangle((x, y, x + square - 1, y + square - 1), fill=CHECKER[1])
    return board


def picture(data: bytes, side: int) -> Image.Image:
    """The image scaled to fit a ``side`` square (up or down), RGBA kept for the checkerboard."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgba = img.convert("RGBA")
    scale = min(side / rgba.width, side / rgba.height)
    size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
    return rgba.resize(size, Image.Resampling.LANCZOS)


def failure_panel(tile: Tile, side: int) -> Image.Image:
    panel = Image.new("RGB", (side, side), FAILED_FILL if tile.failure == "FAILED" else CANCELLED_FILL)
    draw = ImageDraw.Draw(panel)
    big = font(max(14, side // 7))
    word = tile.failure or "FAILED"
    draw.text((side / 2, side * 0.3), word, font=big, fill=(255, 255, 255), anchor="mm")
    small = font(max(10, side // 20))
    chars = max(8, int(side / (small.size * 0.55))) if isinstance(small, ImageFont.FreeTypeFont) else 30
    lines = textwrap.wrap(tile.error or "", chars)[: max(1, int(side * 0.55 / (side // 20 + 4)))]
    y = side * 0.45
    for line in lines:
        draw.text((side / 2, y), fit_text(draw, line, small, side - 8), font=small, fill=(255, 255, 255),
                  anchor="mt")
        y += small.size + 4 if isinstance(small, ImageFont.FreeTypeFont) else 14
    return panel


def compose(tiles: list[Tile], side: int, columns: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """The grid as PNG bytes, and its layout: per tile, the picture area ``[x, y, w, h]``."""
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    size_main, size_sub = max(12, side // 14), max(10, side // 18)
    label_h = size_main + 2 * size_sub + 16
    width = GAP + columns * (side + GAP)
    height = GAP + rows * (side + label_h + GAP)
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    main_font, sub_font = font(size_main), font(size_sub)
    layout: list[dict[str, Any]] = []
    for i, tile in enumerate(tiles):
        x = GAP + (i % columns) * (side + GAP)
        y = GAP + (i // columns) * (side + label_h + GAP)
        if tile.image is not None:
            pic = picture(tile.image, side)
            px, py = x + (side - pic.width) // 2, y + (side - pic.height) // 2
            board = checkerboard((pic.width, pic.height), max(6, side // 24))
            board.paste(pic, (0, 0), pic)
            grid.paste(board, (px, py))
            placed = [px, py, pic.width, pic.height]
        else:
            grid.paste(failure_panel(tile, side), (x, y))
            placed = [x, y, side, side]
        draw.rectangle((x - 1, y - 1, x + side, y + side), outline=(170, 170, 170))
        head, _, rest = tile.label.partition("\n")
        draw.text((x, y + side + 6), fit_text(draw, head, main_font, side), font=main_font, fill=LABEL_INK)
        for n, line in enumerate(pack(draw, rest.split(", ") if rest else [], sub_font, side, 2)):
            draw.text((x, y + side + 10 + size_main + n * (size_sub + 2)), line, font=sub_font, fill=(70, 70, 70))
        layout.append({"cell": [x, y, side, side], "picture": placed})
    out = io.BytesIO()
    grid.save(out, "PNG", compress_level=3)
    return out.getvalue(), {"width": width, "height": height, "columns": columns, "rows": rows,
                            "tile_px": side, "label_px": label_h, "cells": layout}
