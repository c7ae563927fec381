"""Secondary Capture pixels with burned-in patient identifiers, as a screenshot from a workstation shows them.

The text is drawn with Pillow's bundled font (no system font lookup), so the pixels are identical on every
machine that has the same Pillow. The bounding box of the ink of each string is returned for the manifest:
that is ground truth for burned-in-text detectors and for pixel masking.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SC_SIZE = 512
IMAGE_MARGIN = 64  # the rendered anatomy sits inside this margin; the text lives in the bands above/below it
FONT_SIZE = 18
TEXT_VALUE = 255
CT_WINDOW = (-160.0, 240.0)  # soft-tissue window used to turn HU into 8-bit grey

Corner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]


@dataclass(frozen=True)
class TextBox:
    """A burned-in string and the pixel box of its ink: [left, top, right, bottom), x = column, y = row."""

    kind: str
    text: str
    box: tuple[int, int, int, int]


_TRANSLITERATION = str.maketrans({"Ä": "AE", "Ö": "OE", "Ü": "UE", "ß": "SS"})


def overlay_text(text: str) -> str:
    """Upper-case ASCII, as many workstation overlays print names ("MÜLLER" → "MUELLER").

    Pillow's bundled font has no glyphs beyond ASCII, and a system font would make the pixels machine-dependent.
    """
    folded = unicodedata.normalize("NFKD", text.upper().translate(_TRANSLITERATION))
    return folded.encode("ascii", "ignore").decode("ascii")


def window_to_uint8(hu: np.ndarray, window: tuple[float, float] = CT_WINDOW) -> np.ndarray:
    low, high = window
    scaled = (np.clip(hu, low, high) - low) / (high - low) * 255.0
    return np.rint(scaled).astype(np.uint8)


def render_screen_capture(
    anatomy: np.ndarray, texts: list[tuple[Corner, str, str]]
) -> tuple[np.ndarray, list[TextBox]]:
    """Compose an 8-bit 512×512 screen: ``anatomy`` (uint8, square) centred, ``texts`` in the corners.

    ``texts`` holds (corner, kind, text); several strings in one corner are stacked in order.
    """
    size = SC_SIZE - 2 * IMAGE_MARGIN
    canvas = Image.new("L", (SC_SIZE, SC_SIZE), 0)
    picture = Image.fromarray(anatomy, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    canvas.paste(picture, (IMAGE_MARGIN, IMAGE_MARGIN))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    line_height = FONT_SIZE + 6
    used: dict[Corner, int] = {}
    boxes = []
    for corner, kind, text in texts:
        line = used.get(corner, 0)
        used[corner] = line + 1
        anchor = ("l" if corner.endswith("left") else "r") + "t"
        x = 8 if corner.endswith("left") else SC_SIZE - 8
        y = 6 + line * line_height if corner.startswith("top") else SC_SIZE - IMAGE_MARGIN + 6 + line * line_height
        draw.text((x, y), text, fill=TEXT_VALUE, font=font, anchor=anchor)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor=anchor)
        boxes.append(TextBox(kind=kind, text=text, box=(int(left), int(top), int(right), int(bottom))))
    return np.asarray(canvas, dtype=np.uint8), boxes
