"""Where everything lives on the bus: the one map of keys and subjects.

Every component reads and writes its records through the names here, and
front ends (CLI, dashboard, benchmarks) that need to watch a prefix take it
from here too, so a layout change is made in one place. Keys are relative to
the bus namespace (``?namespace=``), which the bus adds itself.

======================================  ==============================================
key or subject                          what
======================================  ==============================================
``tasks/<task>``                        :class:`~infrafabric.coordinator.Task`
``swarms/<swarm>``                      :class:`~infrafabric.coordinator.SwarmRecord`
``presence/<swarm>``                    :class:`~infrafabric.coordinator.Presence`: an agent connected now
``waiting/<swarm>``                     :class:`~infrafabric.coordinator.Presence`: an agent waits for work
``coordinators/<id>``                   :class:`~infrafabric.coordinator.Presence`: a board watcher runs now
subject ``swarms/<swarm>/tasks``        tasks pushed to one swarm
subject ``swarms/<swarm>/help``         help requests for one swarm (blockers)
subject ``orchestrator/blockers``       blocker reports
subject ``orchestrator/escalations``    breaker trips and other calls for a human
``gov/profiles/<swarm>``                :class:`~infrafabric.governor.SwarmProfile`
``gov/budgets/<swarm>``                 :class:`~infrafabric.governor.Budget` (with its debit journal)
``gov/breakers/<swarm>``                :class:`~infrafabric.governor.Breaker`
``gov/ledger/<µs time>-<id>``           one cost ledger entry per debit
``gov/policy``                          the :class:`~infrafabric.governor.ResourcePolicy` in force
``chassis/contracts/<swarm>``           a loaded swarm's contract and module digest
``chassis/modules/<sha256>``            a module's bytes (small modules only)
``chassis/creds/<id>``                  a scoped credential (its token's hash, never the token)
``chassis/slo/<swarm>/…``               SLO objective, status and samples
``chassis/reputation/<swarm>/…``        current reputation and its history
``witness/e/<seq>``                     a block of audit entries starting at ``seq``
``witness/head``                        a hint: the last seq and hash some writer saw
``witness/cp/<size>``                   signed checkpoints
``witness/keys/<key id>``               public verifier keys
``workspace/leases``                    :class:`~infrafabric.coordinator.PathLeaseTable`: claims' path leases
``ready/directory``                     the ready index: every lane
``ready/lanes/<lane>``                  the ready index (:mod:`infrafabric.coordinator.ready`): a lane
``ready/slots/<lane>/<band>/<n>``       the ready index: a task that became available
``ready/whole``                         the ready index: names every available task (since when)
``quarantine/<key>``                    a record ``ifctl doctor --repair`` moved aside
``agents/tokens/<sha256>``              an ``ifctl mcp --http`` agent token's record (never the token)
``agents/token-names/<name>``           which token digest a name is taken by
======================================  ==============================================
"""

from __future__ import annotations

__all__ = [
    "AGENT_TOKENS",
    "AGENT_TOKEN_NAMES",
    "BLOCKERS",
    "BREAKERS",
    "BUDGETS",
    "CHECKPOINTS",
    "CONTRACTS",
    "CREDENTIALS",
    "ENTRIES",
    "ESCALATIONS",
    "HEAD",
    "LEDGER",
    "MODULES",
    "POLICY",
    "PRESENCE",
    "PROFILES",
    "QUARANTINE",
    "READY_DIRECTORY",
    "READY_LANES",
    "READY_SLOTS",
    "READY_WHOLE",
    "REPUTATION",
    "SLO",
    "SWARMS",
    "TASKS",
    "VERIFIER_KEYS",
    "WAITING",
    "WATCHERS",
    "WORKSPACE_LEASES",
    "help_subject",
    "push_subject",
    "swarm_key",
    "task_key",
]

# -- coordinator -------------------------------------------------------------------
TASKS = "tasks/"
SWARMS = "swarms/"
PRESENCE = "presence/"
WATCHERS = "coordinators/"
WAITING = "waiting/"
BLOCKERS = "orchestrator/blockers"
ESCALATIONS = "orchestrator/escalations"

WORKSPACE_LEASES = "workspace/leases"
READY_DIRECTORY = "ready/directory"
READY_LANES = "ready/lanes/"
READY_SLOTS = "ready/slots/"
READY_WHOLE = "ready/whole"

# -- governor ------------------------------------------------------------------------
PROFILES = "gov/profiles/"
BUDGETS = "gov/budgets/"
BREAKERS = "gov/breakers/"
LEDGER = "gov/ledger/"
POLICY = "gov/policy"

# -- chassis -------------------------------------------------------------------------
CONTRACTS = "chassis/contracts/"
MODULES = "chassis/modules/"
CREDENTIALS = "chassis/creds/"
SLO = "chassis/slo/"
REPUTATION = "chassis/reputation/"

# -- witness -------------------------------------------------------------------------
ENTRIES = "witness/e/"
HEAD = "witness/head"
CHECKPOINTS = "witness/cp/"
VERIFIER_KEYS = "witness/keys/"

# -- doctor --------------------------------------------------------------------------
QUARANTINE = "quarantine/"


def task_key(task_id: str) -> str:
    return f"{TASKS}{task_id}"


def swarm_key(swarm_id: str) -> str:
    return f"{SWARMS}{swarm_id}"


def push_subject(swarm_id: str) -> str:
    """The subject a swarm's pushed tasks arrive on."""
    return f"{SWARMS}{swarm_id}/tasks"


def help_subject(swarm_id: str) -> str:
    """The subject a swarm's help requests (for someone else's blocker) arrive on."""
    return f"{SWARMS}{swarm_id}/help"

# -- agents (ifctl mcp --http) ---------------------------------------------------------
AGENT_TOKENS = "agents/tokens/"
AGENT_TOKEN_NAMES = "agents/token-names/"
