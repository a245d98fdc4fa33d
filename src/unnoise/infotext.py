"""Generation parameters inside image files, as AUTOMATIC1111 keeps them, so tools that import A1111's
metadata read ours.

The text (A1111's "infotext"):

    a red heart
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 3.0, Seed: 7, Size: 32x32, Model: emoji, …

the prompt, a `Negative prompt:` line only when there is one, then one settings line of `Key: value`
pairs; a value holding `,`, `:` or a line break is written as a JSON string (A1111's `quote`).  Everything
else goes in that settings line as well: a reader takes every line after `Negative prompt:` up to the
settings line as negative prompt.

Where it lives: PNG, a `parameters` text chunk (beside unnoise's exact JSON in an `unnoise` chunk);
JPEG and WebP, the EXIF UserComment, b"UNICODE\\0" + UTF-16-BE text (piexif's "unicode" encoding, which
A1111 writes and reads).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

from PIL import Image, PngImagePlugin

from .atomic import atomic_write
from .errors import UnnoiseError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # what save() writes
PNG_JSON_KEY = "unnoise"  # PNG text chunk: unnoise's own parameters as JSON (exact)
PNG_TEXT_KEY = "parameters"  # PNG text chunk: the A1111 text
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286  # EXIF's sub-IFD pointer and its UserComment tag
JPEG_EXIF_MAX = 65_533  # bytes: a JPEG keeps EXIF in one APP1 segment, whose length field counts itself
_UNICODE, _ASCII = b"UNICODE\0", b"ASCII\0\0\0"  # EXIF character-code prefixes (8 bytes)
# A1111's settings-line pattern (modules/infotext_utils.py, re_param_code)
PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


class InfotextError(UnnoiseError, ValueError):
    """An image file whose parameters cannot be written or read."""


def quote(value: object) -> str:
    """A1111's quote: as it is, or as a JSON string if it holds `,`, `:` or a line break (or starts with
    a `"`, which a reader would otherwise unquote)."""
    text = str(value)
    if not any(c in text for c in ",:\n") and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def format_text(prompt: str, negative_prompt: str, settings: dict[str, object]) -> str:
    """The A1111 text; settings whose value is None are left out."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in settings.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"


def parse_text(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, settings) by A1111's rules (parse_generation_parameters)."""
    *lines, last = text.strip().split("\n")
    if len(PARAM.findall(last)) < 3:  # no settings line
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    settings = {k: unquote(v) for k, v in PARAM.findall(last)}
    return "\n".join(prompt), "\n".join(negative), settings


def save(image: Image.Image, path: str | os.PathLike, *, text: str | None = None,
         json_text: str | None = None) -> Path:
    """Write the image in the format its suffix names (FORMATS), with the A1111 text (and, in a PNG, the
    JSON too), atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InfotextError(f"{path.name}: the image must end in {', '.join(FORMATS)}")
    options: dict = {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in ((PNG_JSON_KEY, json_text), (PNG_TEXT_KEY, text)):
            if value is not None:
                info.add_text(key, value)
        options["pnginfo"] = info
    else:
        if text is not None:
            options["exif"] = _exif(text)
            if fmt == "JPEG" and len(options["exif"]) > JPEG_EXIF_MAX:  # one APP1 segment
                raise InfotextError(f"{path.name}: the parameters ({len(text):,} characters) are too long for a "
                                    "JPEG's EXIF; save it as .png or .webp")
        # pixel art: a near-lossless JPEG; WebP can be lossless outright
        options.update({"quality": 95} if fmt == "JPEG" else {"lossless": True})
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    return atomic_write(path, lambda tmp: image.save(tmp, fmt, **options))


def _exif(text: str) -> bytes:
    """A minimal big-endian EXIF block, IFD0 → Exif IFD → UserComment typed UNDEFINED (7) as the EXIF
    standard has it (Pillow would type bytes as BYTE, which piexif, and so A1111, reads as numbers)."""
    comment = _UNICODE + text.encode("utf-16-be")
    # offsets from the TIFF header (8 bytes): IFD0 at 8 (2 + 12 + 4 bytes), the Exif IFD at 26, the text at 44
    ifd0 = struct.pack(">HHHII I", 1, EXIF_IFD, 4, 1, 26, 0)  # one LONG entry: where the Exif IFD is
    sub = struct.pack(">HHHII I", 1, USER_COMMENT, 7, len(comment), 44, 0)
    return b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd0 + sub + comment


def read(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(unnoise JSON or None, A1111 text or None) stored in an image file."""
    with Image.open(path) as im:
        chunks = getattr(im, "text", None) or {}
        if PNG_JSON_KEY in chunks or PNG_TEXT_KEY in chunks:
            return chunks.get(PNG_JSON_KEY), chunks.get(PNG_TEXT_KEY)
        raw = im.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    return None, _decode_user_comment(raw) if isinstance(raw, bytes) else None


def _decode_user_comment(raw: bytes) -> str | None:
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE:
        return body.decode("utf-16-be", errors="replace")
    if prefix == _ASCII:
        return body.decode("ascii", errors="replace")
    return raw.decode("utf-8", errors="ignore") or None  # as A1111 falls back
