"""The harness: workers that run an Agent's sessions from its work queue (the turn loop in
`worker`), calling the model through the credential proxy and tools in sandboxes."""

from paddock.harness.retries import RetryPolicy
from paddock.harness.settings import WorkerSettings
from paddock.harness.tools import ToolPolicy, toolbox
from paddock.harness.transcript import (
    COMPACTION_PREFIX,
    AwaitUser,
    CallModel,
    EndInterrupted,
    Evaluate,
    Idle,
    RunTools,
    rebuild,
)
from paddock.harness.worker import Worker

__all__ = [
    "COMPACTION_PREFIX",
    "AwaitUser",
    "CallModel",
    "EndInterrupted",
    "Evaluate",
    "Idle",
    "RetryPolicy",
    "RunTools",
    "ToolPolicy",
    "Worker",
    "WorkerSettings",
    "rebuild",
    "toolbox",
]
