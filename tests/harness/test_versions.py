"""A worker runs each session at the Agent version the session is pinned to; what belongs
to the pod (credentials, harness) stays the pod's."""

from __future__ import annotations

from paddock.eventlog import AgentPin, SessionSettings
from paddock.harness.settings import WorkerSettings, session_worker_settings
from paddock.harness.tools import toolbox
from paddock.models import AgentSpec, Multiagent


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


def test_a_thread_of_a_coordinator_agent_gets_no_delegation_tools() -> None:
    coordinator = spec("new", "pod-key", 4).model_copy(
        update={"multiagent": Multiagent.model_validate({"agents": [{"name": "helper"}]})}
    )
    worker = WorkerSettings(agent="team/lead", spec=coordinator, worker_id="w", model_base_url="x")
    session = SessionSettings(namespace="team", name="s")
    assert session_worker_settings(worker, session).spec.multiagent is not None
    thread = SessionSettings(namespace="team", name="s", parent_session_id="sesn_parent")
    run = session_worker_settings(worker, thread)
    assert run.spec.multiagent is None
    assert "send_to_agent" not in {d["name"] for d in toolbox(run.spec).definitions}
    assert "send_to_agent" in {d["name"] for d in toolbox(coordinator).definitions}
