"""Cursor pagination for every growing list: stable under inserts, no COUNT(*), capped pages."""

from typing import Any

from django.conf import settings
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

from core.api.renderers import RenderedJSON, json_rendered


class CreatedCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return int(settings.LOYALTY_PAGE_SIZE)
        maximum = int(settings.LOYALTY_MAX_PAGE_SIZE)
        if not raw.isdigit() or not 1 <= int(raw) <= maximum:
            raise ValidationError({"page_size": [f"Must be a whole number from 1 to {maximum}."]})
        return int(raw)

    @classmethod
    def only_paging(cls, request: Request) -> bool:
        """Whether the request's query string holds nothing but paging (no filter)."""
        return {cls.cursor_query_param, cls.page_size_query_param}.issuperset(request.query_params)

    def rendered_page(self, results: list[bytes]) -> RenderedJSON:
        """The body ``get_paginated_response`` gives, for results rendered already."""
        links = json_rendered({"next": self.get_next_link(), "previous": self.get_previous_link()})
        return RenderedJSON(b'%s,"results":[%s]}' % (links[:-1], b",".join(results)))

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound as error:
            raise ValidationError({self.cursor_query_param: ["Invalid cursor."]}) from error
