"""The API's JSON renderer: DRF's, passing through bodies already rendered from cached parts."""

from typing import Any

from rest_framework import renderers


class RenderedJSON(bytes):
    """A response body rendered as JSON in advance (a page of cached documents, each rendered
    once when it was built): the renderer sends it as it is."""


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, RenderedJSON):
            return bytes(data)
        return super().render(data, accepted_media_type, renderer_context)


def json_rendered(data: Any) -> bytes:
    """``data`` as the API renders it (compact UTF-8): a part to splice into a RenderedJSON."""
    return JSONRenderer().render(data)
