"""Agent tokens: what a remote agent presents to ``ifctl mcp --http``.

Each token is bound to one swarm: the HTTP server acts as that swarm for
every request carrying it, and no tool takes a swarm id, so an agent can act
only as itself. Tokens are issued and revoked with ``ifctl mcp token``; the
bus holds only their SHA-256 (``agents/tokens/<sha256>``), never the token,
and both operations are witnessed. A revoked token is refused from the next
request on (each request reads its record).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infrafabric.bus.bounds import Line
from infrafabric.bus.records import Records
from infrafabric.coordinator.models import TaskId
from infrafabric.errors import NotFoundError, TaskExistsError
from infrafabric.fleet import Fleet

__all__ = ["TOKENS", "AgentToken", "AgentTokens", "token_digest"]

TOKENS = "agents/tokens/"
#: tokens start with this, so a leaked one is recognisable (secret scanners, logs)
PREFIX = "ift_"


def token_digest(token: str) -> str:
    """The SHA-256 the bus keeps of a token (a token is 256 random bits: no salt or stretching needed)."""
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


class AgentToken(BaseModel):
    """A token's record: whom it acts as, never the token itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TaskId
    swarm_id: TaskId
    created_at: float = Field(allow_inf_nan=False)
    created_by: Line
    revoked_at: float | None = Field(default=None, allow_inf_nan=False)
    revoked_by: Line | None = None


class AgentTokens:
    """Issue, list, revoke and check agent tokens on the fleet's bus."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.records = Records(fleet.bus, TOKENS, AgentToken)

    async def issue(self, swarm_id: str, *, name: str | None = None, by: str) -> tuple[str, AgentToken]:
        """A new token for ``swarm_id`` (returned once: only its digest is kept)."""
        name = name or f"{swarm_id}-{secrets.token_hex(3)}"
        if any(t.name == name for t in await self.list()):
            raise TaskExistsError(f"an agent token named {name!r} exists already",
                                  hint=f"ifctl mcp token revoke {name}, or pick another --name")
        if await self.fleet.coordinator.get_swarm(swarm_id) is None:
            raise NotFoundError(f"swarm {swarm_id!r} is not registered on this board",
                                hint=f"ifctl swarm register {swarm_id} --cap DOMAIN:SKILL")
        token = PREFIX + secrets.token_urlsafe(32)
        record = AgentToken(name=name, swarm_id=swarm_id, created_at=self.fleet.clock(), created_by=by)
        if await self.records.create(token_digest(token), record) is None:  # pragma: no cover - 2**-256
            raise TaskExistsError("token collision; issue again")
        await self.fleet.witness.append("IF.agent", "agent_token_issued",
                                        {"name": name, "swarm_id": swarm_id}, actor=by, severity="notice")
        return token, record

    async def list(self) -> list[AgentToken]:
        return sorted((v.value for v in await self.records.list()), key=lambda t: t.created_at)

    async def revoke(self, name: str, *, by: str) -> AgentToken:
        """Revoke the token named ``name``: refused from the next request on."""
        found = next((v for v in await self.records.list() if v.value.name == name), None)
        if found is None:
            raise NotFoundError(f"no agent token named {name!r}", hint="ifctl mcp token list")
        now = self.fleet.clock()

        def change(t: AgentToken | None) -> AgentToken | None:
            if t is None or t.revoked_at is not None:
                return None
            return t.model_copy(update={"revoked_at": now, "revoked_by": by})

        got = await self.records.mutate(self.records.id_of(found.key), change)
        token = got.value if got is not None else found.value
        await self.fleet.witness.append("IF.agent", "agent_token_revoked",
                                        {"name": name, "swarm_id": token.swarm_id}, actor=by,
                                        severity="notice")
        return token

    async def check(self, token: str) -> AgentToken | None:
        """The live token's record, or None (unknown, revoked or malformed)."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        # looked up by its digest: the bus never sees the token, and no comparison leaks its bytes
        record = await self.records.read(token_digest(token))
        return None if record is None or record.revoked_at is not None else record


def describe(t: AgentToken) -> dict[str, Any]:
    return {"name": t.name, "swarm_id": t.swarm_id, "created_at": t.created_at, "created_by": t.created_by,
            "revoked": t.revoked_at is not None}

