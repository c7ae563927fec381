"""Find and blank text burned into pixel data (PS3.15 Clean Pixel Data Option, code 113101).

Header de-identification cannot see PHI that a modality or workstation drew into the image itself (names on
ultrasound screens, dose-report screen captures, scanned request forms). This module

1. triages an instance (:func:`is_at_risk`) so that only risk classes are OCR'd — OCR costs a few hundred ms per
   frame, which is fine for an ultrasound clip or a screen capture but not for every CT slice;
2. locates text with offline Debian ``tesseract`` (:func:`find_text_boxes`) and turns word boxes into padded line
   boxes;
3. blanks those boxes in every frame, clears overlay bits hidden above *Bits Stored*, and either cleans, quarantines
   or ignores according to the project policy (:func:`clean_burned_in_text`).

Anything that cannot be decoded, OCR'd or written back raises :class:`BurnedInTextError`, so the caller quarantines the
instance instead of forwarding pixels nobody looked at. Recognised text is PHI: it never leaves this module and is never
logged; logs carry counts only.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian

from pacslabel.deid.errors import DeidentificationError

logger = logging.getLogger(__name__)

BurnedInTextPolicy = Literal["clean", "quarantine", "off"]

# Module-level so deployments (and tests proving that no OCR ran) can point it elsewhere.
tesseract_binary: str = "tesseract"
# One tesseract call on a 2x-upscaled 512² frame takes ~0.3 s; a hung process must not stall ingest forever.
TESSERACT_TIMEOUT_SECONDS = 120.0

_SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
_ULTRASOUND_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # US Image
        "1.2.840.10008.5.1.4.1.1.3.1",  # US Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.6",  # US Image (retired)
        "1.2.840.10008.5.1.4.1.1.3",  # US Multi-frame Image (retired)
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    }
)
_ANGIO_FLUORO_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.12.1",  # XA
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA
        "1.2.840.10008.5.1.4.1.1.12.2",  # XRF
        "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF
        "1.2.840.10008.5.1.4.1.1.12.3",  # XA Bi-plane (retired)
        "1.2.840.10008.5.1.4.1.1.13.1.1",  # X-Ray 3D Angiographic
    }
)
_VISIBLE_LIGHT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic
        "1.2.840.10008.5.1.4.1.1.77.1.2",  # VL Microscopic
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic
        "1.2.840.10008.5.1.4.1.1.77.1.3",  # VL Slide-Coordinates Microscopic
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit
    }
)
# These SOP classes routinely carry burned-in text (PS3.15 E.3.1, notes §10), so a header claiming
# BurnedInAnnotation NO is not trusted for them.
_ALWAYS_AT_RISK_SOP_CLASSES = (
    _SECONDARY_CAPTURE_SOP_CLASSES | _ULTRASOUND_SOP_CLASSES | _ANGIO_FLUORO_SOP_CLASSES | _VISIBLE_LIGHT_SOP_CLASSES
)
_ALWAYS_AT_RISK_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "SM", "OP"})
# Projection radiography sometimes has digitiser/technologist labels; trust an explicit NO, OCR otherwise.
_AT_RISK_UNLESS_FLAGGED_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "OT"})
_SCREEN_CAPTURE_IMAGE_TYPES = frozenset({"SECONDARY", "SCREEN SAVE", "SCREENSAVE", "SCREEN_SAVE"})
_SECONDARY_CAPTURE_DEVICE_KEYWORDS = (
    "ConversionType",
    "SecondaryCaptureDeviceManufacturer",
    "SecondaryCaptureDeviceManufacturerModelName",
    "DateOfSecondaryCapture",
)
_UNCOMPRESSED_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian (deflated dataset, native pixels)
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    }
)

# OCR preprocessing. Tesseract binarises with a global Otsu threshold, which fails on speckle/noise; our own
# thresholds on the 8-bit rendering keep bright overlay text and drop most of the background. Two thresholds plus the
# plain rendering are unioned because a single threshold misses either anti-aliased or mid-grey text ([meas] notes §10
# and this module's tests: 170 alone found all five test lines, 204 alone missed some, the plain image catches grey
# labels on a clean background).
_OCR_UPSCALE = 2
_OCR_BINARY_THRESHOLDS = (170, 204)
# On noisy anatomy tesseract sometimes reports one "word" spanning a whole organ or the frame; blanking it would wipe
# the image. Overlay text lines are far smaller than 1/6 of the frame (and than 48 px on small frames).
_MAX_WORD_HEIGHT_FRACTION = 6
_MIN_MAX_WORD_HEIGHT = 48
# "Words" under 5 px are speckle read as letters (nobody can read text that small either); dropping them cut the
# blanked area on text-free noisy frames from ~6 % to ~1 % without losing any drawn line in our measurements.
_MIN_WORD_HEIGHT = 5
# Re-OCR frames after blanking, because a partly covered word or a line OCR missed beside a found one can surface.
_MAX_VERIFICATION_ROUNDS = 1


class BurnedInTextError(DeidentificationError):
    """The instance must be quarantined; the message is free of PHI (counts, transfer syntaxes, never text)."""


@dataclass(frozen=True)
class TextBox:
    """A rectangle in pixel coordinates of one frame (0-based frame index)."""

    frame: int
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


@dataclass
class PixelCleaningResult:
    """What :func:`clean_burned_in_text` did; ``cleaned`` means PixelData changed (add code 113101)."""

    at_risk: bool
    boxes: list[TextBox]
    cleaned: bool


# --------------------------------------------------------------------------------------------------- triage


def _upper_values(value: object) -> list[str]:
    if value is None:
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(item).strip().upper() for item in items]


def is_at_risk(ds: Dataset) -> bool:
    """Return whether the instance's pixels may carry burned-in text and must be OCR'd.

    CT/MR/PT and other cross-sectional modalities are at risk only when the header says so (BurnedInAnnotation YES)
    or the instance looks like a screen capture; OCR on every slice would make ingest far too slow.
    """
    if "PixelData" not in ds:
        return False
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag and flag != "NO":
        # YES, or a malformed value we cannot read as a promise of no text.
        return True
    sop_class_uid = str(ds.get("SOPClassUID", "") or "").strip()
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if sop_class_uid in _ALWAYS_AT_RISK_SOP_CLASSES or modality in _ALWAYS_AT_RISK_MODALITIES:
        return True
    image_type = _upper_values(ds.get("ImageType"))
    if any(value in _SCREEN_CAPTURE_IMAGE_TYPES for value in image_type):
        return True
    # A Secondary Capture module on any SOP class (workstation capture, scanned document, digitised film...).
    if any(keyword in ds and ds.get(keyword) not in (None, "") for keyword in _SECONDARY_CAPTURE_DEVICE_KEYWORDS):
        return True
    return not flag and modality in _AT_RISK_UNLESS_FLAGGED_MODALITIES


# --------------------------------------------------------------------------------------------------- decoding


@dataclass
class _DecodedPixels:
    frames: np.ndarray  # (frames, rows, columns) or (frames, rows, columns, 3), as decoded by pydicom (RGB for YBR)
    photometric: str  # photometric interpretation of ``frames`` (YBR decodes to RGB)
    has_frame_axis_in_header: bool


def _transfer_syntax(ds: Dataset) -> UID | None:
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return UID(str(uid)) if uid else None


def _is_native(ds: Dataset) -> bool:
    uid = _transfer_syntax(ds)
    # pydicom treats datasets without file meta as native little endian; so do we.
    return uid is None or str(uid) in _UNCOMPRESSED_TRANSFER_SYNTAXES


def _transfer_syntax_label(ds: Dataset) -> str:
    uid = _transfer_syntax(ds)
    return "none" if uid is None else f"{uid.name} ({uid})"


def _decode(ds: Dataset) -> _DecodedPixels:
    if "PixelData" not in ds:
        raise BurnedInTextError("The instance has no Pixel Data to check for burned-in text.")
    try:
        # A copy: pydicom may hand out a read-only view of PixelData or its cached array, and we blank in place.
        arr = np.array(ds.pixel_array, copy=True)
    except Exception as exc:  # any decoder failure means nobody can check these pixels
        raise BurnedInTextError(
            f"Pixel Data could not be decoded for burned-in text checking "
            f"(transfer syntax {_transfer_syntax_label(ds)}; {type(exc).__name__})."
        ) from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom converts YBR to RGB by default (as_rgb=True)
    if samples not in (1, 3) or photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"):
        raise BurnedInTextError(
            f"Unsupported pixel layout for burned-in text cleaning "
            f"(SamplesPerPixel {samples}, PhotometricInterpretation {photometric or 'absent'})."
        )
    frame_ndim = 2 if samples == 1 else 3
    if arr.ndim == frame_ndim:
        arr = arr[np.newaxis, ...]
    if arr.ndim != frame_ndim + 1:
        raise BurnedInTextError("Decoded Pixel Data has an unexpected shape.")
    return _DecodedPixels(frames=arr, photometric=photometric, has_frame_axis_in_header="NumberOfFrames" in ds)


# --------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Rendering:
    """How one frame was mapped to 8 bits. Re-used when re-reading a cleaned frame: blanking the brightest pixels
    would otherwise re-stretch the contrast and make speckle look like text."""

    low: float
    high: float
    invert: bool


def _intensity(frame: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.ndim == 3:
        # Max over channels, not luminance: pure green/cyan/yellow annotation text must count as bright.
        return frame.max(axis=-1).astype(np.float32)
    return frame.astype(np.float32)


def _render_frame(
    frame: np.ndarray, photometric: str, ds: Dataset, rendering: _Rendering | None = None
) -> tuple[np.ndarray, _Rendering]:
    """An 8-bit grey image in which text is brighter than its background.

    Min..max is stretched to 0..255 because burned-in text is normally drawn at (or near) the maximum value.
    """
    values = _intensity(frame, photometric, ds)
    if rendering is None:
        rendering = _Rendering(float(values.min()), float(values.max()), False)
    span = rendering.high - rendering.low
    if span <= 0:
        grey = np.zeros(values.shape, dtype=np.uint8)
    else:
        grey = np.round(np.clip((values - rendering.low) * (255.0 / span), 0, 255)).astype(np.uint8)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    if rendering.invert:
        grey = 255 - grey
    elif float(np.median(grey)) > 127.0 and rendering.high > rendering.low:
        # Scanned documents and white report pages: dark text on a light page becomes bright text on dark.
        rendering = _Rendering(rendering.low, rendering.high, True)
        grey = 255 - grey
    return grey, rendering


def _ocr_inputs(grey: np.ndarray) -> list[bytes]:
    """PNG images for tesseract: black text on white, upscaled 2x (small overlay fonts are ~10 px high)."""
    image = Image.fromarray(grey)
    upscaled = image.resize((grey.shape[1] * _OCR_UPSCALE, grey.shape[0] * _OCR_UPSCALE), Image.Resampling.BICUBIC)
    up = np.asarray(upscaled)
    variants = [np.where(up >= threshold, 0, 255).astype(np.uint8) for threshold in _OCR_BINARY_THRESHOLDS]
    variants.append((255 - up).astype(np.uint8))
    encoded = []
    for variant in variants:
        buffer = io.BytesIO()
        Image.fromarray(variant).save(buffer, format="PNG", compress_level=1)
        encoded.append(buffer.getvalue())
    return encoded


# --------------------------------------------------------------------------------------------------- OCR


@dataclass(frozen=True)
class _WordBox:
    left: int
    top: int
    width: int
    height: int


def _run_tesseract(png: bytes) -> list[_WordBox]:
    """Word boxes (in the upscaled image) from ``tesseract stdin stdout --psm 11 tsv``.

    psm 11 = sparse text: overlay text is scattered labels, not a page layout.
    """
    env = dict(os.environ)
    # Parallelism comes from running frames concurrently; tesseract's own OpenMP threads would oversubscribe.
    env["OMP_THREAD_LIMIT"] = "1"
    command = [
        tesseract_binary,
        "stdin",
        "stdout",
        "--psm",
        "11",
        "--dpi",
        "150",
        "-c",
        "tessedit_do_invert=0",
        "tsv",
    ]
    try:
        completed = subprocess.run(
            command,
            input=png,
            capture_output=True,
            env=env,
            timeout=TESSERACT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BurnedInTextError("The OCR engine (tesseract) is not installed.") from exc
    except subprocess.TimeoutExpired as exc:
        raise BurnedInTextError("OCR for burned-in text timed out.") from exc
    if completed.returncode != 0:
        # stderr may echo nothing but engine diagnostics; still keep it out of logs and messages.
        raise BurnedInTextError(f"OCR for burned-in text failed (tesseract exit code {completed.returncode}).")
    words: list[_WordBox] = []
    for line in completed.stdout.decode("utf-8", errors="replace").splitlines()[1:]:
        columns = line.split("\t")
        # level page_num block_num par_num line_num word_num left top width height conf text
        if len(columns) < 12 or columns[0] != "5":
            continue
        text = columns[11]
        # Any alphanumeric character: even a low-confidence fragment of a name is worth blanking.
        if not any(character.isalnum() for character in text):
            continue
        left, top, width, height = (int(value) for value in columns[6:10])
        if width > 0 and height > 0:
            words.append(_WordBox(left, top, width, height))
    return words


def _ocr_frames(greys: Sequence[tuple[int, np.ndarray]]) -> dict[int, list[_WordBox]]:
    """OCR each (frame index, grey image); identical preprocessed inputs are OCR'd once (cine loops repeat)."""
    jobs: dict[str, bytes] = {}
    frame_jobs: dict[int, list[str]] = {}
    for index, grey in greys:
        keys = []
        for png in _ocr_inputs(grey):
            key = hashlib.sha256(png).hexdigest()
            jobs.setdefault(key, png)
            keys.append(key)
        frame_jobs[index] = keys
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip(jobs, pool.map(_run_tesseract, jobs.values()), strict=True))
    logger.debug("burned-in text OCR: %d frames, %d distinct tesseract inputs", len(frame_jobs), len(jobs))
    scale = _OCR_UPSCALE
    boxes: dict[int, list[_WordBox]] = {}
    implausible = 0
    for index, grey in greys:
        max_height = max(_MIN_MAX_WORD_HEIGHT, grey.shape[0] // _MAX_WORD_HEIGHT_FRACTION)
        frame_words: list[_WordBox] = []
        for key in frame_jobs[index]:
            for word in results[key]:
                left, top = word.left // scale, word.top // scale
                right = math.ceil((word.left + word.width) / scale)
                bottom = math.ceil((word.top + word.height) / scale)
                if not _MIN_WORD_HEIGHT <= bottom - top <= max_height:
                    implausible += 1
                    continue
                frame_words.append(_WordBox(left, top, right - left, bottom - top))
        boxes[index] = frame_words
    if implausible:
        logger.debug("burned-in text OCR: ignored %d implausibly small or tall word boxes", implausible)
    return boxes


# --------------------------------------------------------------------------------------------------- boxes


def _same_line(a: _WordBox, b: _WordBox) -> bool:
    overlap = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    if overlap < 0.5 * min(a.height, b.height):
        return False
    gap = max(a.left, b.left) - min(a.left + a.width, b.left + b.width)
    # Word spacing in overlay fonts is well under 1.5 character heights; columns of labels are further apart.
    return gap <= 1.5 * max(a.height, b.height)


def _intersects(a: _WordBox, b: _WordBox) -> bool:
    return (
        a.left < b.left + b.width
        and b.left < a.left + a.width
        and a.top < b.top + b.height
        and b.top < a.top + a.height
    )


def _union(a: _WordBox, b: _WordBox) -> _WordBox:
    left, top = min(a.left, b.left), min(a.top, b.top)
    right = max(a.left + a.width, b.left + b.width)
    bottom = max(a.top + a.height, b.top + b.height)
    return _WordBox(left, top, right - left, bottom - top)


def _merge(boxes: list[_WordBox], should_merge: Callable[[_WordBox, _WordBox], bool]) -> list[_WordBox]:
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        result: list[_WordBox] = []
        for box in merged:
            for position, existing in enumerate(result):
                if should_merge(existing, box):
                    result[position] = _union(existing, box)
                    changed = True
                    break
            else:
                result.append(box)
        merged = result
    return merged


def _line_boxes(frame: int, words: list[_WordBox], rows: int, columns: int) -> list[TextBox]:
    """Join words into lines, pad them so ascenders/descenders and anti-aliasing are covered, clip to the frame."""
    lines = _merge(words, _same_line)
    padded = []
    for line in lines:
        pad = 3 + line.height // 5
        left, top = max(0, line.left - pad), max(0, line.top - pad)
        right = min(columns, line.left + line.width + pad)
        bottom = min(rows, line.top + line.height + pad)
        if right > left and bottom > top:
            padded.append(_WordBox(left, top, right - left, bottom - top))
    merged = _merge(padded, _intersects)
    return sorted(
        (TextBox(frame, box.left, box.top, box.width, box.height) for box in merged),
        key=lambda box: (box.frame, box.top, box.left),
    )


def _boxes_for_frames(
    decoded: _DecodedPixels,
    ds: Dataset,
    frame_indices: Iterable[int],
    renderings: dict[int, _Rendering] | None = None,
) -> list[TextBox]:
    """OCR the frames; ``renderings`` (frame -> 8-bit mapping) is read for known frames and filled for new ones."""
    renderings = {} if renderings is None else renderings
    greys = []
    for index in frame_indices:
        grey, renderings[index] = _render_frame(decoded.frames[index], decoded.photometric, ds, renderings.get(index))
        greys.append((index, grey))
    words_by_frame = _ocr_frames(greys)
    rows, columns = decoded.frames.shape[1], decoded.frames.shape[2]
    boxes: list[TextBox] = []
    for index in sorted(words_by_frame):
        boxes.extend(_line_boxes(index, words_by_frame[index], rows, columns))
    return boxes


def find_text_boxes(ds: Dataset) -> list[TextBox]:
    """OCR every frame and return padded line boxes around any text found (no triage, no changes to ``ds``)."""
    decoded = _decode(ds)
    boxes = _boxes_for_frames(decoded, ds, range(decoded.frames.shape[0]))
    logger.info(
        "burned-in text: %d text boxes on %d of %d frames",
        len(boxes),
        len({box.frame for box in boxes}),
        decoded.frames.shape[0],
    )
    return boxes


# --------------------------------------------------------------------------------------------------- cleaning


def _blank_value(decoded: _DecodedPixels, ds: Dataset, frame: int) -> np.ndarray | int:
    """The stored value that displays as black."""
    frames = decoded.frames
    if decoded.photometric == "RGB":
        return np.zeros(3, dtype=frames.dtype)
    if decoded.photometric == "MONOCHROME1":
        return int(frames.max())
    if decoded.photometric == "PALETTE COLOR":
        # Index of the darkest displayed pixel in this frame; the LUT may map index 0 to any colour.
        rendered = apply_color_lut(frames[frame], ds).astype(np.float64).sum(axis=-1)
        position = np.unravel_index(int(np.argmin(rendered)), rendered.shape)
        return int(frames[frame][position])
    return int(frames.min())


def _blank(decoded: _DecodedPixels, ds: Dataset, boxes: Iterable[TextBox]) -> int:
    count = 0
    for box in boxes:
        decoded.frames[box.frame, box.top : box.bottom, box.left : box.right] = _blank_value(decoded, ds, box.frame)
        count += 1
    return count


def _has_overlay_bits_in_pixel_data(ds: Dataset) -> bool:
    """True when native pixel data has bits set outside Bits Stored (embedded overlays, PS3.5 8.1.2 / C.9.2.1.1).

    The header profile deletes the (60xx) overlay attributes, possibly before we run, so instead of trusting
    OverlayBitPosition we check every unused bit: for unsigned data they must be 0, for signed data they must repeat
    the sign bit. Compressed syntaxes cannot carry embedded overlays.
    """
    if "PixelData" not in ds or not _is_native(ds):
        return False
    bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    high_bit = int(ds.get("HighBit", bits_stored - 1) if "HighBit" in ds else bits_stored - 1)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or bits_allocated not in (8, 16, 32):
        return False
    if bits_stored >= bits_allocated and high_bit == bits_allocated - 1:
        return False
    if high_bit != bits_stored - 1:
        # Pixel cells not aligned at bit 0 are retired and pydicom cannot decode them faithfully.
        raise BurnedInTextError("Pixel Data uses an unsupported bit layout (High Bit is not Bits Stored - 1).")
    byte_order = ">" if str(_transfer_syntax(ds) or "") == "1.2.840.10008.1.2.2" else "<"
    item_size = bits_allocated // 8
    count = ds.Rows * ds.Columns * int(ds.get("NumberOfFrames", 1) or 1)
    raw = bytes(ds.PixelData)
    if len(raw) < count * item_size:
        raise BurnedInTextError("Pixel Data is shorter than Rows x Columns x Number of Frames.")
    unsigned = np.frombuffer(raw, dtype=f"{byte_order}u{item_size}", count=count)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        return bool(np.any(unsigned >> bits_stored))
    signed = unsigned.view(f"{byte_order}i{item_size}")
    shift = bits_allocated - bits_stored
    # Sign-extended values survive a left-then-arithmetic-right shift unchanged.
    return bool(np.any(((signed << shift) >> shift) != signed))


def _write_back(ds: Dataset, decoded: _DecodedPixels) -> None:
    """Store the cleaned frames; compressed input is written uncompressed (Explicit VR Little Endian)."""
    frames = decoded.frames
    bits_allocated = int(ds.BitsAllocated)
    arr = frames if (decoded.has_frame_axis_in_header or frames.shape[0] > 1) else frames[0]
    if bits_allocated == 1:
        packed = pack_bits(arr.astype(np.uint8))
        ds.PixelData = packed + (b"\x00" if len(packed) % 2 else b"")
        ds["PixelData"].VR = "OB"
        if not _is_native(ds):
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        try:
            ds.set_pixel_data(arr, decoded.photometric, int(ds.BitsStored), generate_instance_uid=False)
        except (ValueError, NotImplementedError, AttributeError) as exc:
            raise BurnedInTextError(
                f"Cleaned Pixel Data could not be written back (transfer syntax {_transfer_syntax_label(ds)}, "
                f"BitsAllocated {bits_allocated}; {type(exc).__name__})."
            ) from exc
    # NumberOfFrames=1 on a multi-frame IOD is Type 1; set_pixel_data drops it for 2-D input, so keep it.
    if decoded.has_frame_axis_in_header and "NumberOfFrames" not in ds:
        ds.NumberOfFrames = frames.shape[0]


def clean_burned_in_text(ds: Dataset, policy: BurnedInTextPolicy = "clean") -> PixelCleaningResult:
    """Apply the project's burned-in text policy to ``ds`` in place.

    - ``"off"``: nothing is checked or changed (projects whose modalities are known to be clean).
    - ``"quarantine"``: at-risk instances are OCR'd; any text raises :class:`BurnedInTextError`.
    - ``"clean"``: at-risk instances are OCR'd and text boxes are blanked on every frame; BurnedInAnnotation
      becomes ``NO``.

    With ``"clean"`` and ``"quarantine"``, overlay bits embedded above Bits Stored are cleared on every instance.
    Raises :class:`BurnedInTextError` when pixels cannot be decoded/written, OCR fails, or the header declares
    burned-in annotation but OCR finds nothing (the text is there and OCR missed it, so cleaning cannot be trusted).
    """
    if policy not in ("clean", "quarantine", "off"):
        raise ValueError(f"Unknown burned-in text policy {policy!r}; expected 'clean', 'quarantine' or 'off'.")
    at_risk = is_at_risk(ds)
    if policy == "off":
        return PixelCleaningResult(at_risk=at_risk, boxes=[], cleaned=False)

    overlay_bits = _has_overlay_bits_in_pixel_data(ds)
    if not at_risk and not overlay_bits:
        return PixelCleaningResult(at_risk=False, boxes=[], cleaned=False)

    decoded = _decode(ds)
    boxes: list[TextBox] = []
    if at_risk:
        renderings: dict[int, _Rendering] = {}
        boxes = _boxes_for_frames(decoded, ds, range(decoded.frames.shape[0]), renderings)
        declared = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
        logger.info(
            "burned-in text: %d text boxes on %d of %d frames",
            len(boxes),
            len({box.frame for box in boxes}),
            decoded.frames.shape[0],
        )
        if boxes and policy == "quarantine":
            raise BurnedInTextError(
                f"Burned-in text found in {len(boxes)} regions on {len({box.frame for box in boxes})} frames; "
                "the project policy quarantines such instances."
            )
        if not boxes and declared:
            raise BurnedInTextError(
                "BurnedInAnnotation is YES but OCR found no text; the pixels cannot be shown to be clean."
            )
        if boxes:
            _blank(decoded, ds, boxes)
            # Verification: words beside a found line may only surface once the found text is gone. Only frames that
            # had text are re-read, so text-free frames cost nothing extra.
            for _ in range(_MAX_VERIFICATION_ROUNDS):
                extra = [
                    box
                    for box in _boxes_for_frames(decoded, ds, sorted({box.frame for box in boxes}), renderings)
                    if box not in boxes
                ]
                new = [box for box in extra if not _inside_any(box, boxes) and _on_a_found_row(box, boxes)]
                if not new:
                    break
                _blank(decoded, ds, new)
                boxes.extend(new)
            logger.info("burned-in text: blanked %d regions after verification", len(boxes))

    if boxes or overlay_bits:
        if overlay_bits:
            logger.info("burned-in text: clearing overlay bits embedded in Pixel Data")
        _write_back(ds, decoded)
    if boxes:
        ds.BurnedInAnnotation = "NO"
    return PixelCleaningResult(
        at_risk=at_risk, boxes=sorted(boxes, key=_box_order), cleaned=bool(boxes) or overlay_bits
    )


def _inside_any(box: TextBox, boxes: Iterable[TextBox]) -> bool:
    # A box fully inside an already-blanked region is OCR reading the black rectangle's edge; nothing new.
    return any(
        other.frame == box.frame
        and other.left <= box.left
        and other.top <= box.top
        and other.right >= box.right
        and other.bottom >= box.bottom
        for other in boxes
    )


def _on_a_found_row(box: TextBox, boxes: Iterable[TextBox]) -> bool:
    # Verification looks for the rest of a line we already found (a word OCR missed beside it). Elsewhere, re-reading
    # a frame whose bright text is gone mostly turns speckle into "words", which would blank anatomy.
    return any(
        other.frame == box.frame and min(other.bottom, box.bottom) - max(other.top, box.top) >= 0.5 * box.height
        for other in boxes
    )


def _box_order(box: TextBox) -> tuple[int, int, int]:
    return (box.frame, box.top, box.left)
