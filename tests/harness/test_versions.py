"""A worker runs each session at the Agent version the session is pinned to; what belongs
to the pod (credentials, harness) stays the pod's."""

from __future__ import annotations

from paddock.eventlog import AgentPin, SessionSettings
from paddock.harness.settings import WorkerSettings, session_worker_settings
from paddock.models import AgentSpec


def spec(system: str, secret: str, concurrency: int) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "model": "claude-sonnet-4-6",
            "system": system,
            "credentials": {"anthropicApiKey": {"name": secret, "key": "api-key"}},
            "harness": {"concurrency": concurrency},
            "limits": {"maxTurns": 7 if system == "old" else 9},
        }
    )


def test_a_pinned_session_runs_its_version_with_the_pods_credentials() -> None:
    worker = WorkerSettings(
        agent="team/coder", spec=spec("new", "pod-key", 4), worker_id="w", model_base_url="x"
    )
    pinned = SessionSettings(
        namespace="team", name="s", agent=AgentPin(version=1, spec=spec("old", "old-key", 99))
    )
    run = session_worker_settings(worker, pinned)
    assert (run.spec.system, run.spec.limits.max_turns) == ("old", 7)
    assert run.spec.credentials.anthropic_api_key.name == "pod-key"
    assert run.spec.harness.concurrency == 4
    # Sessions opened before versions were pinned run their pod's spec.
    unpinned = SessionSettings(namespace="team", name="s")
    assert session_worker_settings(worker, unpinned) is worker
    assert session_worker_settings(worker, None) is worker
