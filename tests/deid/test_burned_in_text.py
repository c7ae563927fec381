"""Burned-in text: triage, OCR with the real Debian tesseract, blanking, policies, overlays in pixel data."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from pacslabel.deid import burned_in_text
from pacslabel.deid.burned_in_text import (
    BurnedInTextError,
    TextBox,
    clean_burned_in_text,
    find_text_boxes,
    is_at_risk,
)

FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SIZE = 512


@dataclass(frozen=True)
class Line:
    text: str
    x: int
    y: int
    size: int


PHI_LINES = (
    Line("DOE^JOHN  MRN 12345678", 10, 10, 16),
    Line("DOB 1961-03-04", 10, 34, 14),
    Line("ST. ELSEWHERE HOSPITAL", 240, 482, 14),
)
PHI_WORDS = ("DOE", "JOHN", "MRN", "12345678", "1961-03-04", "ELSEWHERE", "HOSPITAL")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT_PATH.exists():
        return ImageFont.truetype(str(FONT_PATH), size)
    return ImageFont.load_default(size=size)


def _noisy_background(seed: int) -> np.ndarray:
    """Dark noise with a brighter disc: a stand-in for anatomy that defeats tesseract's own Otsu thresholding."""
    rng = np.random.default_rng(seed)
    background = rng.normal(40, 20, (SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2 < 150**2
    background[disc] += rng.normal(80, 30, int(disc.sum()))
    return background.clip(0, 255).astype(np.uint8)


def _draw_lines(image: Image.Image, lines: tuple[Line, ...], fill: int | tuple[int, int, int]) -> list[TextBox]:
    """Draw the lines and return their ink bounding boxes (frame 0)."""
    draw = ImageDraw.Draw(image)
    drawn = []
    for line in lines:
        font = _font(line.size)
        draw.text((line.x, line.y), line.text, fill=fill, font=font)
        left, top, right, bottom = draw.textbbox((line.x, line.y), line.text, font=font)
        drawn.append(TextBox(0, int(left), int(top), int(right - left), int(bottom - top)))
    return drawn


def _grey_frame_with_text(seed: int = 0, lines: tuple[Line, ...] = PHI_LINES) -> tuple[np.ndarray, list[TextBox]]:
    image = Image.fromarray(_noisy_background(seed))
    drawn = _draw_lines(image, lines, fill=230)
    return np.asarray(image).copy(), drawn


def _base_dataset(sop_class_uid: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    return ds


def _secondary_capture(pixels: np.ndarray, photometric: str = "MONOCHROME2") -> Dataset:
    """Single-frame SC (rows, cols) or (rows, cols, 3), or a multi-frame grey SC when given (frames, rows, cols)."""
    multi_frame = pixels.ndim == 3 and photometric != "RGB"
    sop_class = MultiFrameGrayscaleByteSecondaryCaptureImageStorage if multi_frame else SecondaryCaptureImageStorage
    ds = _base_dataset(sop_class, "OT")
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8, generate_instance_uid=False)
    if multi_frame:
        ds.NumberOfFrames = pixels.shape[0]
    return ds


def _ct_slice(burned_in_annotation: str | None = "NO") -> Dataset:
    ds = _base_dataset(CTImageStorage, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if burned_in_annotation is not None:
        ds.BurnedInAnnotation = burned_in_annotation
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16)
    ds.set_pixel_data(pixels, "MONOCHROME2", 12, generate_instance_uid=False)
    return ds


def _smooth_image_without_text() -> np.ndarray:
    """A gradient with a soft disc: an image without text and without the speckle OCR misreads as letters."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    disc = np.exp(-((yy - 300) ** 2 + (xx - 220) ** 2) / (2 * 90.0**2))
    return (30 + 60 * xx / SIZE + 150 * disc).clip(0, 255).astype(np.uint8)


def _box_mask(boxes: list[TextBox], frame: int, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        if box.frame == frame:
            mask[box.top : box.bottom, box.left : box.right] = True
    return mask


def _grown(box: TextBox, margin: int) -> TextBox:
    left, top = max(0, box.left - margin), max(0, box.top - margin)
    return TextBox(box.frame, left, top, box.right + margin - left, box.bottom + margin - top)


def _recognised_words(grey: np.ndarray) -> set[str]:
    """Everything tesseract reads in a frame, trying the raw image and several bright-text thresholds.

    Tests may look at the text (it is synthetic); the module under test never exposes it.
    """
    normalised = grey.astype(np.float32)
    span = float(normalised.max() - normalised.min()) or 1.0
    normalised = ((normalised - normalised.min()) * (255.0 / span)).astype(np.uint8)
    upscaled = np.asarray(Image.fromarray(normalised).resize((SIZE * 2, SIZE * 2), Image.Resampling.BICUBIC))
    variants = [255 - upscaled] + [np.where(upscaled >= t, 0, 255).astype(np.uint8) for t in (120, 150, 180, 210)]
    words: set[str] = set()
    for variant in variants:
        buffer = io.BytesIO()
        Image.fromarray(variant).save(buffer, format="PNG")
        output = subprocess.run(
            ["tesseract", "stdin", "stdout", "--psm", "11"], input=buffer.getvalue(), capture_output=True, check=True
        ).stdout.decode()
        words.update(output.upper().split())
    return words


def _found_phi(words: set[str]) -> set[str]:
    return {phi for phi in PHI_WORDS if any(phi in word for word in words)}


def _assert_covered(drawn: list[TextBox], boxes: list[TextBox], frame: int = 0) -> None:
    mask = _box_mask(boxes, frame, (SIZE, SIZE))
    for line in drawn:
        assert mask[line.top : line.bottom, line.left : line.right].all(), f"line at {line} not fully blanked"


# --------------------------------------------------------------------------------------------------- triage


@pytest.mark.parametrize(
    ("sop_class_uid", "modality", "extra", "expected"),
    [
        (SecondaryCaptureImageStorage, "OT", {}, True),
        (MultiFrameGrayscaleByteSecondaryCaptureImageStorage, "OT", {"BurnedInAnnotation": "NO"}, True),
        ("1.2.840.10008.5.1.4.1.1.6.1", "US", {"BurnedInAnnotation": "NO"}, True),
        ("1.2.840.10008.5.1.4.1.1.3.1", "US", {}, True),
        ("1.2.840.10008.5.1.4.1.1.12.1", "XA", {}, True),
        ("1.2.840.10008.5.1.4.1.1.77.1.1", "ES", {}, True),
        (CTImageStorage, "CT", {"ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, True),
        (CTImageStorage, "CT", {"ImageType": ["DERIVED", "PRIMARY"], "ConversionType": "WSD"}, True),
        (CTImageStorage, "CT", {"BurnedInAnnotation": "YES"}, True),
        ("1.2.840.10008.5.1.4.1.1.1", "CR", {}, True),
        ("1.2.840.10008.5.1.4.1.1.1", "CR", {"BurnedInAnnotation": "NO"}, False),
        (CTImageStorage, "CT", {"BurnedInAnnotation": "NO", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}, False),
        (CTImageStorage, "CT", {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}, False),
        ("1.2.840.10008.5.1.4.1.1.4", "MR", {}, False),
    ],
)
def test_triage_flags_risk_classes_and_spares_plain_ct_mr(
    sop_class_uid: str, modality: str, extra: dict[str, object], expected: bool
) -> None:
    ds = _base_dataset(sop_class_uid, modality)
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.set_pixel_data(np.zeros((8, 8), dtype=np.uint8), "MONOCHROME2", 8, generate_instance_uid=False)

    assert is_at_risk(ds) is expected


def test_instance_without_pixel_data_is_not_at_risk() -> None:
    assert is_at_risk(_base_dataset(SecondaryCaptureImageStorage, "OT")) is False


# --------------------------------------------------------------------------------------------------- cleaning


def test_grey_secondary_capture_text_is_blanked_and_unreadable_afterwards() -> None:
    pixels, drawn = _grey_frame_with_text()
    assert _found_phi(_recognised_words(pixels)), "the fixture must contain text tesseract can read"
    ds = _secondary_capture(pixels)

    result = clean_burned_in_text(ds, "clean")

    assert result.at_risk and result.cleaned
    _assert_covered(drawn, result.boxes)
    cleaned = ds.pixel_array
    outside = ~_box_mask(result.boxes, 0, (SIZE, SIZE))
    assert cleaned[outside].tobytes() == pixels[outside].tobytes()
    assert (cleaned[~outside] == pixels.min()).all()
    # Blanking stays near the text: on this noisy background speckle beside a line may widen its box a little.
    assert (~outside).mean() < 0.15
    near_text = _box_mask([_grown(line, 24) for line in drawn], 0, (SIZE, SIZE))
    assert all(near_text[box.top : box.bottom, box.left : box.right].any() for box in result.boxes)
    assert _found_phi(_recognised_words(cleaned)) == set()
    assert ds.BurnedInAnnotation == "NO"


def test_rgb_secondary_capture_coloured_text_is_blanked_to_black() -> None:
    grey = _noisy_background(seed=3)
    image = Image.fromarray(np.stack([grey, grey, grey], axis=-1))
    drawn = _draw_lines(image, PHI_LINES[:1], fill=(255, 255, 0))  # yellow, as on ultrasound screens
    drawn += _draw_lines(image, PHI_LINES[1:], fill=(0, 255, 0))  # green: dim in luminance, bright in max channel
    pixels = np.asarray(image).copy()
    ds = _secondary_capture(pixels, "RGB")

    result = clean_burned_in_text(ds)

    assert result.cleaned
    _assert_covered(drawn, result.boxes)
    cleaned = ds.pixel_array
    inside = _box_mask(result.boxes, 0, (SIZE, SIZE))
    assert cleaned[~inside].tobytes() == pixels[~inside].tobytes()
    assert (cleaned[inside] == 0).all()
    assert _found_phi(_recognised_words(cleaned.max(axis=-1))) == set()
    assert ds.BurnedInAnnotation == "NO"


def test_every_frame_of_a_multi_frame_capture_is_cleaned() -> None:
    first, drawn_first = _grey_frame_with_text(seed=1)
    moved = tuple(Line(line.text, line.x + 20, line.y + 100, line.size) for line in PHI_LINES)
    second, drawn_second = _grey_frame_with_text(seed=2, lines=moved)
    pixels = np.stack([first, second, first])  # frame 2 repeats frame 0, as in a cine loop
    ds = _secondary_capture(pixels)

    result = clean_burned_in_text(ds)

    assert {box.frame for box in result.boxes} == {0, 1, 2}
    _assert_covered(drawn_first, result.boxes, frame=0)
    _assert_covered([TextBox(1, b.left, b.top, b.width, b.height) for b in drawn_second], result.boxes, frame=1)
    _assert_covered(drawn_first, result.boxes, frame=2)
    cleaned = ds.pixel_array
    assert cleaned.shape == pixels.shape and ds.NumberOfFrames == 3
    for frame in range(3):
        outside = ~_box_mask(result.boxes, frame, (SIZE, SIZE))
        assert cleaned[frame][outside].tobytes() == pixels[frame][outside].tobytes()
        assert _found_phi(_recognised_words(cleaned[frame])) == set()


def test_rle_compressed_capture_is_decoded_cleaned_and_stored_uncompressed() -> None:
    pixels, drawn = _grey_frame_with_text(seed=4)
    ds = _secondary_capture(pixels)
    ds.compress(RLELossless, generate_instance_uid=False)
    sop_instance_uid = ds.SOPInstanceUID

    result = clean_burned_in_text(ds)

    assert result.cleaned
    _assert_covered(drawn, result.boxes)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == sop_instance_uid  # UIDs are the header engine's business
    assert _found_phi(_recognised_words(ds.pixel_array)) == set()


def test_capture_without_text_is_left_unchanged() -> None:
    ds = _secondary_capture(_smooth_image_without_text())
    before = bytes(ds.PixelData)

    result = clean_burned_in_text(ds)

    assert result.at_risk and not result.cleaned
    assert bytes(ds.PixelData) == before
    assert "BurnedInAnnotation" not in ds  # nothing was cleaned, so we make no promise


def test_header_declaring_burned_in_text_that_ocr_cannot_find_is_quarantined() -> None:
    ds = _secondary_capture(_smooth_image_without_text())
    ds.BurnedInAnnotation = "YES"

    with pytest.raises(BurnedInTextError, match="OCR found no text"):
        clean_burned_in_text(ds)


# --------------------------------------------------------------------------------------------------- policies


def test_ct_slice_flagged_without_burned_in_text_is_not_ocrd_or_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any OCR attempt would fail loudly with this binary, proving the slice was never sent to tesseract.
    monkeypatch.setattr(burned_in_text, "tesseract_binary", "/nonexistent/tesseract")
    ds = _ct_slice("NO")
    before = ds.to_json_dict()

    result = clean_burned_in_text(ds, "clean")

    assert result == burned_in_text.PixelCleaningResult(at_risk=False, boxes=[], cleaned=False)
    assert ds.to_json_dict() == before


def test_quarantine_policy_rejects_capture_with_text() -> None:
    pixels, _ = _grey_frame_with_text()
    ds = _secondary_capture(pixels)
    before = bytes(ds.PixelData)

    with pytest.raises(BurnedInTextError, match="quarantines") as raised:
        clean_burned_in_text(ds, "quarantine")

    assert not any(word in str(raised.value).upper() for word in PHI_WORDS)
    assert bytes(ds.PixelData) == before


def test_off_policy_does_nothing_even_to_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(burned_in_text, "tesseract_binary", "/nonexistent/tesseract")
    pixels, _ = _grey_frame_with_text()
    ds = _secondary_capture(pixels)
    before = bytes(ds.PixelData)

    result = clean_burned_in_text(ds, "off")

    assert result.at_risk and not result.cleaned and result.boxes == []
    assert bytes(ds.PixelData) == before


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        clean_burned_in_text(_ct_slice(), "scrub")  # type: ignore[arg-type]


def test_missing_ocr_engine_quarantines_at_risk_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(burned_in_text, "tesseract_binary", "/nonexistent/tesseract")
    pixels, _ = _grey_frame_with_text()

    with pytest.raises(BurnedInTextError, match="not installed"):
        clean_burned_in_text(_secondary_capture(pixels))


# --------------------------------------------------------------------------------------------------- undecodable


def test_compressed_pixel_data_without_a_decoder_is_quarantined() -> None:
    ds = _secondary_capture(_noisy_background(seed=6))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # no JPEG-LS decoder is installed here
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True

    with pytest.raises(BurnedInTextError, match="could not be decoded"):
        clean_burned_in_text(ds)


def test_truncated_pixel_data_is_quarantined() -> None:
    ds = _secondary_capture(_noisy_background(seed=6))
    ds.PixelData = bytes(ds.PixelData)[: SIZE * 10]

    with pytest.raises(BurnedInTextError, match="could not be decoded"):
        find_text_boxes(ds)


# --------------------------------------------------------------------------------------------------- overlays


def test_overlay_bits_in_pixel_data_are_cleared_without_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(burned_in_text, "tesseract_binary", "/nonexistent/tesseract")
    ds = _ct_slice(None)
    values = ds.pixel_array.copy()
    raw = values.copy()
    raw[20:40, 30:200] |= 1 << 12  # an embedded overlay plane at bit 12, above Bits Stored = 12
    ds.PixelData = raw.tobytes()
    ds.add_new(0x60000010, "US", SIZE)  # OverlayRows
    ds.add_new(0x60000011, "US", SIZE)  # OverlayColumns
    ds.add_new(0x60000100, "US", 16)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 12)  # OverlayBitPosition

    result = clean_burned_in_text(ds)

    assert result.cleaned and not result.at_risk and result.boxes == []
    stored = np.frombuffer(bytes(ds.PixelData), dtype="<u2").reshape(SIZE, SIZE)
    assert not (stored >> 12).any()
    assert stored.tobytes() == values.tobytes()


def test_signed_pixel_data_keeps_negative_values_when_overlay_bits_are_cleared() -> None:
    ds = _base_dataset(CTImageStorage, "CT")
    values = np.array([[-1000, -1], [0, 2047]], dtype=np.int16)
    ds.set_pixel_data(values, "MONOCHROME2", 12, generate_instance_uid=False)
    raw = values.view(np.uint16).copy()
    raw[1, 0] |= 1 << 13  # overlay bit on a non-negative value
    ds.PixelData = raw.tobytes()

    result = clean_burned_in_text(ds)

    assert result.cleaned
    assert np.frombuffer(bytes(ds.PixelData), dtype="<i2").reshape(2, 2).tolist() == values.tolist()


# --------------------------------------------------------------------------------------------------- logging, timing


def test_recognised_text_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    pixels, _ = _grey_frame_with_text()
    with caplog.at_level(logging.DEBUG, logger="pacslabel.deid.burned_in_text"):
        clean_burned_in_text(_secondary_capture(pixels))

    assert caplog.records, "counts are logged"
    assert not any(word in caplog.text.upper() for word in PHI_WORDS)


def test_ocr_of_one_512_frame_takes_under_five_seconds() -> None:
    pixels, _ = _grey_frame_with_text(seed=8)
    ds = _secondary_capture(pixels)

    started = time.perf_counter()
    boxes = find_text_boxes(ds)
    elapsed = time.perf_counter() - started

    print(f"OCR of one 512x512 frame: {elapsed * 1000:.0f} ms, {len(boxes)} boxes")
    assert boxes
    assert elapsed < 5.0


# --------------------------------------------------------------------------------------------------- demo data


def test_demo_screen_capture_text_from_manifest_is_gone_after_cleaning(tmp_path: Path) -> None:
    from pacslabel.demo.plan import STUDIES
    from pacslabel.demo.synthetic import MANIFEST_NAME, write_studies

    studies = [study for study in STUDIES if study.secondary_capture]
    write_studies(tmp_path, studies[:1], seed=7, scale="small")
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))
    texts = manifest["burned_in_text"]
    assert texts, "the demo set plants burned-in text"
    ds = dcmread(tmp_path / texts[0]["path"])
    original = ds.pixel_array.copy()
    assert is_at_risk(ds)

    result = clean_burned_in_text(ds)

    assert result.cleaned and ds.BurnedInAnnotation == "NO"
    cleaned = ds.pixel_array
    mask = _box_mask(result.boxes, 0, cleaned.shape[:2])
    for text in texts:
        left, top, right, bottom = text["box"]
        assert mask[top:bottom, left:right].all(), f"{text['kind']} not fully blanked"
    assert cleaned[~mask].tobytes() == original[~mask].tobytes()
    remaining = _recognised_words(cleaned)
    for text in texts:
        for token in text["text"].upper().split():
            if len(token) >= 3:
                assert not any(token in word for word in remaining), f"{text['kind']} still readable"
