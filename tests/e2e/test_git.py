"""The agent runs git, the credential proxy handles auth: a session's repository is cloned
into its sandbox, the agent commits and pushes from its bash tool, and a repository added
while the session runs is cloned before the next tool call, all through a real credential
proxy to a real git smart-HTTP host that demands a token. The token stays in the proxy: not
in the sandbox's files (home, git config, working trees), environment, processes, tool
outputs or events.

The gateway, a harness worker and the sandbox run as in tests/gateway (the scripted model is
the only fake). The git host is named by its credential host alone, as an Agent's
`credentials.hosts` names it, so it listens on port 80 of a loopback address of its own and
the proxy resolves the name through a private hosts file: root only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from tests.gateway.stack import Stack, turn

from paddock.gateway.convert.meta import ENVIRONMENT_ID_LABEL
from paddock.sandbox.binding import COMMITTER_DOMAIN, COMMITTER_NAME
from paddock.testing.fakemodel import Reply, Script, Text, ToolUse, turns
from paddock.testing.gitserver import GitServer
from paddock.testing.ports import wait_until
from paddock.testing.proxy import ProxyProcess, Secrets, private_hosts
from paddock.testing.sandbox import RunningSandbox, launch

GIT_HOST = "git.paddock.test"
REPO_URL = f"https://{GIT_HOST}/repo.git"
TOOLSET = [{"type": "agent_toolset_20260401"}]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    """A sandbox per test (the gateway stack binds it): a sandbox serves one session only."""
    running = launch(tmp_path / "sandbox")
    yield running
    running.stop()


@pytest.fixture
def git_host(git_server: GitServer) -> GitServer:
    if git_server.standard_address is None:
        pytest.skip("the git host on port 80 of a loopback address needs root")
    return git_server


@pytest.fixture
def proxy(tmp_path: Path, module_secrets: Secrets, git_host: GitServer) -> Iterator[ProxyProcess]:
    """The credential proxy as the operator renders it for the Agent below: the git host's
    token added, the host resolved through a hosts file of its own. Requested before the
    gateway stack, so that it outlives the stack's workers."""
    assert git_host.standard_address is not None
    (tmp_path / "proxy").mkdir()
    wrapper = private_hosts(tmp_path / "proxy" / "hosts", {GIT_HOST: git_host.standard_address})
    if wrapper is None:
        pytest.skip("the proxy's private hosts file needs root and unshare")
    running = ProxyProcess(
        tmp_path / "proxy",
        module_secrets,
        environments={},
        credentials=[
            {
                "host": GIT_HOST,
                "secret_file": str(module_secrets.path("git_token")),
                "scheme": "basic",
            }
        ],
        # Tests only: the host on loopback, reached in clear text.
        address_exceptions=[f"{git_host.standard_address}:80"],
        upstream_scheme_overrides={GIT_HOST: "http"},
    )
    running.wrapper = wrapper
    running.start()
    yield running
    running.stop()


def _allow(proxy: ProxyProcess, environment: str) -> None:
    """The Environment reaches the proxy's config (as its ConfigMap does): the git host only."""
    proxy.config["environments"][environment] = {"mode": "limited", "allowed_domains": [GIT_HOST]}
    proxy.write_config()

    def applied() -> bool:
        reply = httpx.post(
            f"{proxy.admin_url}/v1/session-tokens",
            json={"session_id": "sesn_probe", "environment": environment},
        )
        return reply.status_code == 200

    wait_until(applied, timeout=10, what=f"the proxy to know environment {environment}")


async def _agent_and_environment(stack: Stack) -> tuple[str, str, str]:
    """An Agent whose `credentials.hosts` names the git host (set with kubectl: the API has
    no field for it), and an Environment; (agent id, environment id, environment name)."""
    client = stack.client()
    environment = await client.beta.environments.create(name="git", config={"type": "cloud"})
    agent = await client.beta.agents.create(
        name="Pusher",
        model="claude-sonnet-4-6",
        tools=TOOLSET,  # type: ignore[arg-type]
    )
    resource = stack.agent_resource(agent.id)
    credentials = resource["spec"]["credentials"]
    credentials["hosts"] = [
        {"host": GIT_HOST, "secretRef": {"name": "git", "key": "token"}, "scheme": "basic"}
    ]
    with stack.kube() as kube:
        reply = kube.patch(
            f"/apis/paddock.dev/v1alpha1/namespaces/{stack.a.namespace}/agents/{resource['metadata']['name']}",
            content=json.dumps({"spec": {"credentials": credentials}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert reply.status_code == 200, reply.text
    (env_resource,) = [
        e
        for e in stack.resources("environments", stack.a.namespace)
        if e["metadata"].get("labels", {}).get(ENVIRONMENT_ID_LABEL) == environment.id
    ]
    return agent.id, environment.id, env_resource["metadata"]["name"]


def _start(stack: Stack, agent_id: str, proxy: ProxyProcess, script: Script) -> None:
    """A harness worker as deployed: its sandboxes bound to egress through the proxy."""
    stack.start_worker(
        agent_id,
        script,
        proxy_admin_url=proxy.admin_url,
        proxy_egress_url=f"http://127.0.0.1:{proxy.egress_port}",
    )


def _results(events: list[Any]) -> list[str]:
    """The text of each tool result, asserting none is an error."""
    results = [e for e in events if e.type == "agent.tool_result"]
    assert results
    texts = ["".join(block.text for block in r.content) for r in results]
    assert [r.is_error for r in results] == [False] * len(results), texts
    return texts


def _assert_the_token_stayed_in_the_proxy(
    secrets: Secrets, sandbox: RunningSandbox, events: list[dict[str, Any]]
) -> None:
    """Nothing of the sandbox holds the git token, raw or in the Basic form it travels in:
    no file under its home, workdir (working trees and .git included) or outputs, not its
    server's environment or command line, no event (tool outputs included)."""
    values = secrets.values()
    tokens = {name: values[name].encode() for name in ("git_token", "git_token_basic")}

    def check(what: str, data: bytes) -> None:
        for name, token in tokens.items():
            if token in data:  # pytest.fail: no assertion rewrite that would print the value
                pytest.fail(f"the {name} reached the sandbox: {what}")

    for top in (sandbox.home, sandbox.workdir, sandbox.outputs):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                check(str(path), path.read_bytes())
    check("the sandbox's log", sandbox.log.read_bytes())
    for part in ("environ", "cmdline"):
        check(f"/proc/<server>/{part}", Path(f"/proc/{sandbox.process.pid}/{part}").read_bytes())
    check("the session's events", json.dumps(events).encode())


async def _events(client: anthropic.AsyncAnthropic, session_id: str) -> list[dict[str, Any]]:
    page = await client.beta.sessions.events.list(session_id, limit=1000)
    return [e.to_dict(mode="json") for e in page.data]


async def test_the_agent_clones_commits_and_pushes_and_the_proxy_adds_the_token(
    proxy: ProxyProcess,
    stack: Stack,
    sandbox: RunningSandbox,
    git_host: GitServer,
    module_secrets: Secrets,
) -> None:
    mount = sandbox.workdir / "app"
    push = (
        f"cd {mount} && git config remote.origin.url && "
        "echo 'Pushed by the agent.' > CHANGES.md && "
        # Over git's 1 MiB post buffer: the push goes up in a chunked request body.
        "head -c 3000000 /dev/urandom > blob.bin && "
        "git add CHANGES.md blob.bin && git commit -q -m 'Add CHANGES.md' && "
        "git push -q origin HEAD:main 2>&1 && git log -1 --format='%H %an <%ae>'"
    )
    # What the sandbox can see of the credential: its git config, its environment, and the
    # headers git sends and receives (GIT_TRACE_CURL prints them).
    inspect = (
        "cat ~/.gitconfig; env; tr '\\0' '\\n' < /proc/self/environ; "
        f"GIT_TRACE_CURL=1 git -C {mount} ls-remote origin 2>&1"
    )
    script = turns(
        Reply([ToolUse("bash", {"command": f"cat {mount}/README"})]),
        Reply([ToolUse("bash", {"command": push})]),
        Reply([ToolUse("bash", {"command": inspect})]),
        Reply([Text("Pushed.")]),
    )
    client = stack.client()
    agent_id, environment_id, environment = await _agent_and_environment(stack)
    _allow(proxy, environment)
    _start(stack, agent_id, proxy, script)
    session = await client.beta.sessions.create(
        agent=agent_id,
        environment_id=environment_id,
        resources=[
            {
                "type": "github_repository",
                "url": REPO_URL,
                "mount_path": str(mount),
                "checkout": {"type": "branch", "name": "main"},
            }
        ],  # type: ignore[list-item]
    )
    before = len(git_host.requests)
    readme, pushed, inspected = _results(await turn(client, session.id, "Push a change."))
    audit = proxy.audit()

    # Cloned at bind through the proxy; the remote is the repository's own URL.
    assert readme.startswith("hello from the git host")
    assert pushed.splitlines()[0] == REPO_URL
    # The host saw the token on the push (receive-pack), and nothing went without it.
    requests = git_host.requests[before:]
    assert all(r.authorized for r in requests), requests
    pushes = [(r.method, r.path, r.query) for r in requests if "receive-pack" in r.path + r.query]
    assert ("GET", "/repo.git/info/refs", "service=git-receive-pack") in pushes
    assert ("POST", "/repo.git/git-receive-pack", "") in pushes
    # The commit is in the host's repository, by Paddock's default committer.
    sha, author = pushed.splitlines()[1].split(" ", 1)
    assert author == f"{COMMITTER_NAME} <{session.id}@{COMMITTER_DOMAIN}>"
    assert git_host.git("repo", "rev-parse", "main").strip() == sha
    assert git_host.git("repo", "show", "main:CHANGES.md") == "Pushed by the agent.\n"
    assert git_host.git("repo", "log", "-1", "--format=%cn <%ce>", "main").strip() == author
    # Every git request of the session got the token in the proxy.
    git_entries = [e for e in audit if e["listener"] == "egress" and e["host"] == GIT_HOST]
    assert git_entries
    assert {e["injected"] for e in git_entries} == {GIT_HOST}
    # The sandbox's git config sends credential-host remotes to the proxy's git route, with
    # the session's egress token: no upstream credential, no credential helper.
    assert f"/git/{GIT_HOST}/" in inspected
    assert "helper" not in inspected
    assert "Authorization: Basic" not in inspected.replace("Proxy-Authorization: Basic", "")
    _assert_the_token_stayed_in_the_proxy(
        module_secrets, sandbox, await _events(client, session.id)
    )


async def test_a_repository_added_to_a_running_session_is_cloned_through_the_proxy(
    proxy: ProxyProcess,
    stack: Stack,
    sandbox: RunningSandbox,
    git_host: GitServer,
    module_secrets: Secrets,
) -> None:
    mount = sandbox.workdir / "tools"
    script = turns(
        Reply([ToolUse("bash", {"command": f"ls {sandbox.workdir}"})]),
        Reply([Text("First done.")]),
        Reply([ToolUse("bash", {"command": f"cat {mount}/README; git -C {mount} status -sb"})]),
        Reply([Text("Second done.")]),
    )
    client = stack.client()
    agent_id, environment_id, environment = await _agent_and_environment(stack)
    _allow(proxy, environment)
    _start(stack, agent_id, proxy, script)
    session = await client.beta.sessions.create(agent=agent_id, environment_id=environment_id)
    (listing,) = _results(await turn(client, session.id, "First"))
    assert "tools" not in listing  # the sandbox is bound, without the repository

    async with stack.http() as http:
        added = await http.post(
            f"/v1/sessions/{session.id}/resources",
            json={
                "type": "github_repository",
                "url": REPO_URL,
                "mount_path": str(mount),
                "checkout": {"type": "branch", "name": "main"},
            },
        )
    assert added.status_code == 200, added.text
    assert added.json()["mount_path"] == str(mount)
    before = len(git_host.requests)
    (cloned,) = _results(await turn(client, session.id, "Second"))
    audit = proxy.audit()

    # Cloned before the next tool call, through the proxy, which added the token.
    assert cloned.startswith("hello from the git host"), cloned
    assert "## main...origin/main" in cloned
    requests = git_host.requests[before:]
    assert ("GET", "/repo.git/info/refs", "service=git-upload-pack") in [
        (r.method, r.path, r.query) for r in requests
    ]
    assert all(r.authorized for r in requests), requests
    git_entries = [e for e in audit if e["listener"] == "egress" and e["host"] == GIT_HOST]
    assert git_entries
    assert {e["injected"] for e in git_entries} == {GIT_HOST}
    _assert_the_token_stayed_in_the_proxy(
        module_secrets, sandbox, await _events(client, session.id)
    )
