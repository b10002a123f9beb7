"""Who is acting: the identity services receive, independent of how the request authenticated."""

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class ActorKind(StrEnum):
    OPERATOR = "operator"
    MEMBER = "member"
    PARTNER = "partner"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    user_id: int | None = None
    member_id: UUID | None = None
    partner_id: int | None = None
    partner_namespace: str | None = None
    name: str = ""

    @property
    def label(self) -> str:
        """A stable, human-readable reference kept in audit rows."""
        if self.kind is ActorKind.OPERATOR:
            return f"operator:{self.user_id}"
        if self.kind is ActorKind.MEMBER:
            return f"member:{self.member_id}"
        if self.kind is ActorKind.PARTNER:
            return f"partner:{self.partner_id}"
        return f"system:{self.name or 'job'}"

    @property
    def is_operator(self) -> bool:
        return self.kind is ActorKind.OPERATOR

    @property
    def is_member(self) -> bool:
        return self.kind is ActorKind.MEMBER

    @property
    def is_partner(self) -> bool:
        return self.kind is ActorKind.PARTNER


def system_actor(name: str) -> Actor:
    """The actor for jobs and commands that act on the system's own behalf."""
    return Actor(kind=ActorKind.SYSTEM, name=name)
