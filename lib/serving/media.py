"""Media types: which request bodies the server reads, which answers it writes.

Types are compared on their ``type/subtype`` only, ignoring case and parameters,
so ``Text/CSV; charset=utf-8`` is ``text/csv``. ``Accept`` is negotiated with
quality values and wildcards (RFC 9110, section 12.5.1); JSON wins a tie.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

CSV = "text/csv"
JSON = "application/json"
REQUEST_TYPES = (CSV, JSON)
# In order of preference when the client accepts several equally.
RESPONSE_TYPES = (JSON, CSV)
DEFAULT_CHARSET = "utf-8"


@dataclass(frozen=True)
class MediaType:
    """A parsed ``Content-Type`` or ``Accept`` item: ``type/subtype``, parameters."""

    essence: str
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def main_type(self) -> str:
        return self.essence.partition("/")[0]


def parse_media_type(text: str | None) -> MediaType | None:
    """Parse ``type/subtype; name=value``; None when it is not a media type."""
    if not text:
        return None
    essence, _, parameter_text = text.partition(";")
    essence = essence.strip().lower()
    main_type, slash, subtype = essence.partition("/")
    if not slash or not main_type or not subtype or "/" in subtype:
        return None
    if any(character.isspace() for character in essence):
        return None
    parameters = {}
    for item in parameter_text.split(";"):
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if name and equals:
            parameters[name] = value.strip().strip('"')
    return MediaType(essence, parameters)


def request_media_type(content_type: str | None) -> MediaType | None:
    """The supported request type named by ``Content-Type``, or None."""
    media_type = parse_media_type(content_type)
    if media_type is None or media_type.essence not in REQUEST_TYPES:
        return None
    return media_type


def request_charset(media_type: MediaType) -> str | None:
    """The codec to decode the body with; None unless it is a text encoding."""
    name = media_type.parameters.get("charset", DEFAULT_CHARSET)
    try:
        codec_name = codecs.lookup(name).name
        # A text codec turns bytes into str; this refuses the others (base64,
        # zlib, rot-13...) and "undefined", whatever each of them raises.
        sample = codecs.getincrementaldecoder(codec_name)().decode(b"a", final=False)
    except Exception:  # noqa: BLE001 - a codec's own code may raise anything
        return None
    return codec_name if isinstance(sample, str) else None


def choose_response_type(accept: str | None) -> str | None:
    """The type to answer in for this ``Accept`` header; None if none is acceptable.

    No header (or an empty one) accepts anything, and gets JSON.
    """
    if accept is None or not accept.strip():
        return RESPONSE_TYPES[0]
    ranges = _accepted_ranges(accept)
    best_type, best_quality = None, 0.0
    for offered in RESPONSE_TYPES:
        quality = _quality_of(offered, ranges)
        if quality > best_quality:
            best_type, best_quality = offered, quality
    return best_type


def _accepted_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for item in accept.split(","):
        media_range = parse_media_type(item.strip())
        if media_range is None:
            continue  # not a media range: it cannot accept anything we offer
        quality = _parse_quality(media_range.parameters.get("q", "1"))
        if quality is not None:
            ranges.append((media_range.essence, quality))
    return ranges


def _parse_quality(text: str) -> float | None:
    try:
        quality = float(text)
    except ValueError:
        return None
    if not 0.0 <= quality <= 1.0:
        return None
    return quality


def _quality_of(offered: str, ranges: list[tuple[str, float]]) -> float:
    """The quality of the most specific range that matches ``offered``."""
    main_type = offered.partition("/")[0]
    best_specificity, quality = -1, 0.0
    for essence, range_quality in ranges:
        if essence == offered:
            specificity = 2
        elif essence == f"{main_type}/*":
            specificity = 1
        elif essence == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, quality = specificity, range_quality
    return quality
