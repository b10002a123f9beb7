from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Platform"

    def ready(self) -> None:
        from core import read_cache
        from core.api import schema  # noqa: F401 - registers the OpenAPI auth extensions

        read_cache.connect_receivers()
