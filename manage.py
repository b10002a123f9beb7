#!/usr/bin/env python
import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings.base")
    configured = "SECRET_KEY" in os.environ or "DEBUG" in os.environ
    env_file = Path(os.environ.get("ENV_FILE", Path(__file__).with_name(".env")))
    if not configured and not env_file.exists():
        # No configuration at all is the zero-configuration demo (as with no DATABASE_URL);
        # a configured deployment sets SECRET_KEY and keeps DEBUG off.
        os.environ["DEBUG"] = "true"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
