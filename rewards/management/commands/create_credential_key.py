"""Generate an Ed25519 key for signing verifiable credentials and print it (it is not stored)."""

from typing import Any

from django.core.management.base import BaseCommand

from rewards.credentials import key_generate


class Command(BaseCommand):
    help = (
        "Generate a credential signing key. Prints the LOYALTY_CREDENTIAL_SIGNING_KEY line for "
        "the environment (shown once, kept nowhere else) and the public key (publicKeyMultibase)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        secret, public = key_generate()
        self.stdout.write(f"LOYALTY_CREDENTIAL_SIGNING_KEY={secret}")
        self.stdout.write(f"# publicKeyMultibase: {public}")
        self.stderr.write(
            "Put the line above in the environment of every web process; it is shown once. "
            "When it replaces a key, add the old public key to "
            "LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS so credentials it signed still verify."
        )
