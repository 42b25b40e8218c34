"""Agent tokens: what a remote agent presents to ``ifctl mcp --http``.

Each token is bound to one swarm: the HTTP server acts as that swarm for
every request carrying it, and no tool takes a swarm id, so an agent can act
only as itself. Tokens are issued and revoked with ``ifctl mcp token``; the
bus holds only their SHA-256 (``agents/tokens/<sha256>``, and ``agents/token-names/<name>``
naming it), never the token,
and both operations are witnessed. A revoked token is refused from the next
request on (each request reads its record).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infrafabric.bus.bounds import Line
from infrafabric.bus.layout import AGENT_TOKEN_NAMES, AGENT_TOKENS
from infrafabric.bus.records import Records
from infrafabric.coordinator.models import TaskId
from infrafabric.errors import NotFoundError, TaskExistsError
from infrafabric.fleet import Fleet

__all__ = ["TOKENS", "AgentToken", "AgentTokens", "token_digest"]

TOKENS = AGENT_TOKENS
TOKEN_NAMES = AGENT_TOKEN_NAMES
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


class TokenName(BaseModel):
    """A token's name, taken once: which digest it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class AgentTokens:
    """Issue, list, revoke and check agent tokens on the fleet's bus."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.records = Records(fleet.bus, TOKENS, AgentToken)
        self.names = Records(fleet.bus, TOKEN_NAMES, TokenName)

    async def issue(self, swarm_id: str, *, name: str | None = None, by: str) -> tuple[str, AgentToken]:
        """A new token for ``swarm_id`` (returned once: only its digest is kept).
        Its name is taken with a create-if-absent, so two issues racing for one
        name cannot both win."""
        name = name or f"{swarm_id}-{secrets.token_hex(3)}"
        if await self.fleet.coordinator.get_swarm(swarm_id) is None:
            raise NotFoundError(f"swarm {swarm_id!r} is not registered on this board",
                                hint=f"ifctl swarm register {swarm_id} --cap DOMAIN:SKILL")
        token = PREFIX + secrets.token_urlsafe(32)
        digest = token_digest(token)
        if await self.names.create(name, TokenName(digest=digest)) is None:
            raise TaskExistsError(f"an agent token named {name!r} exists already",
                                  hint=f"ifctl mcp token revoke {name}, or pick another --name")
        record = AgentToken(name=name, swarm_id=swarm_id, created_at=self.fleet.clock(), created_by=by)
        await self.records.put(digest, record)
        await self.fleet.witness.append("IF.agent", "agent_token_issued",
                                        {"name": name, "swarm_id": swarm_id}, actor=by, severity="notice")
        return token, record

    async def list(self) -> list[AgentToken]:
        return sorted((v.value for v in await self.records.list()), key=lambda t: t.created_at)

    async def revoke(self, name: str, *, by: str) -> tuple[AgentToken, bool]:
        """Revoke the token named ``name``: refused from the next request on.
        Returns it and whether this call revoked it (False: it already was)."""
        named = await self.names.read(name)
        record = await self.records.read(named.digest) if named is not None else None
        if named is None or record is None:
            raise NotFoundError(f"no agent token named {name!r}", hint="ifctl mcp token list")
        now = self.fleet.clock()
        changed = False

        def change(t: AgentToken | None) -> AgentToken | None:
            nonlocal changed
            changed = t is not None and t.revoked_at is None
            if t is None or not changed:
                return None
            return t.model_copy(update={"revoked_at": now, "revoked_by": by})

        got = await self.records.mutate(named.digest, change)
        token = got.value if got is not None else record
        if changed:
            await self.fleet.witness.append("IF.agent", "agent_token_revoked",
                                            {"name": name, "swarm_id": token.swarm_id}, actor=by,
                                            severity="notice")
        return token, changed

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

