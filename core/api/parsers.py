"""Request body parsing: DRF's JSON parser, bounded so that hostile bodies are 4xx, never 500."""

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """JSON nested deeper than Python's decoder can follow is a 400 parse error (DRF's own
    parser lets the RecursionError through as a 500). Oversized bodies never get here: Django
    refuses them first (DATA_UPLOAD_MAX_MEMORY_SIZE, rendered as 413 by the exception handler)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        if _contains_nul(data):
            # PostgreSQL text and jsonb cannot hold U+0000: refuse it here, not as a 500 on write.
            raise ParseError("JSON parse error - strings must not contain U+0000 (NUL).")
        return data


def _contains_nul(data: Any) -> bool:
    """Whether any key or string in the document holds a NUL character (iterative: any depth)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False
