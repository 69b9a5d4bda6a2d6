"""A real MCP server (the `mcp` package's `MCPServer`, streamable HTTP) as its own process,
protected by a static bearer token, or by the access tokens of an OAuth authorization server
(`paddock.testing.oauth`), checked by RFC 7662 introspection on every request: for the
harness's, the proxy's and the end-to-end MCP tests.

    python -m paddock.testing.mcpserver --port 8000 --token-file token --calls-file calls
    python -m paddock.testing.mcpserver --port 8000 --introspection-url URL --calls-file calls

Tools: `echo(text)`, `add(a, b)`, `note(text, delay=0)` (a side effect: appends a line to the
calls file, so tests can count how often a call really ran) and `slow(seconds)`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from paddock.testing.ports import die_with_parent, free_port, wait_until

TOOLS = ("echo", "add", "note", "slow")


def serve(
    port: int,
    token_file: Path | None,
    calls_file: Path,
    host: str = "127.0.0.1",
    introspection_url: str | None = None,
) -> None:
    """Run the server until killed (the process's main)."""
    import uvicorn
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from pydantic import AnyHttpUrl

    def expected_token() -> str:
        assert token_file is not None
        return token_file.read_text().strip()

    class StaticToken:
        """A `TokenVerifier` that accepts exactly the token in ``token_file`` (read on each
        request, so a test can rotate it)."""

        async def verify_token(self, token: str) -> AccessToken | None:
            expected = expected_token()  # a tiny local file: no need for a thread
            if not secrets.compare_digest(token, expected):
                return None
            return AccessToken(token=token, client_id="paddock-test", scopes=[])

    class Introspected:
        """A `TokenVerifier` that asks the authorization server about each token: the server
        holds no token list of its own, so expiry and revocation there apply at once."""

        async def verify_token(self, token: str) -> AccessToken | None:
            assert introspection_url is not None
            async with httpx.AsyncClient(timeout=5) as http:
                reply = await http.post(introspection_url, data={"token": token})
            answer = reply.json() if reply.status_code == 200 else {}
            if answer.get("active") is not True:
                return None
            return AccessToken(
                token=token,
                client_id=str(answer.get("client_id", "")),
                scopes=[],
                expires_at=answer.get("exp"),
            )

    base = f"http://{host}:{port}"
    server: MCPServer = MCPServer(
        "paddock-test",
        token_verifier=Introspected() if introspection_url else StaticToken(),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(base), resource_server_url=AnyHttpUrl(f"{base}/mcp")
        ),
    )

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return f"echo: {text}"

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> str:
        return str(a + b)

    def write_note(text: str) -> None:
        with calls_file.open("a") as out:
            out.write(text + "\n")

    @server.tool(description="Write a note (a side effect), after `delay` seconds.")
    async def note(text: str, delay: float = 0) -> str:
        await asyncio.sleep(delay)
        write_note(text)
        return f"noted: {text}"

    @server.tool(description="Wait, then answer.")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "finally"

    app = server.streamable_http_app(host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@dataclass
class McpServerProcess:
    """The server process, its token (unless ``introspection_url`` names an authorization
    server's introspection endpoint, which then decides) and the file its `note` tool appends
    to. ``host``: the address it listens on (a pod network's bridge, in end-to-end tests)."""

    base: Path
    token: str = field(default_factory=lambda: "mcp-bearer-" + secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    introspection_url: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"http://{self.host}:{self.port}/mcp"

    @property
    def token_file(self) -> Path:
        return self.base / "token"

    @property
    def calls_file(self) -> Path:
        return self.base / "calls"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def notes(self) -> list[str]:
        """What the `note` tool wrote, one entry per call that really ran."""
        if not self.calls_file.exists():
            return []
        return self.calls_file.read_text().splitlines()

    def start(self) -> McpServerProcess:
        self.base.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "paddock.testing.mcpserver",
            "--port",
            str(self.port),
            "--host",
            self.host,
            "--calls-file",
            str(self.calls_file),
        ]
        if self.introspection_url:
            command += ["--introspection-url", self.introspection_url]
        else:
            self.token_file.write_text(self.token + "\n")
            command += ["--token-file", str(self.token_file)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
            )
        try:
            wait_until(self._answers, timeout=20, what="MCP server")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"MCP server exited: {self.log.read_text()}")
        # Without a token it answers 401: it is up.
        return httpx.post(self.url, json={}, timeout=1).status_code == 401

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token-file", type=Path)
    auth.add_argument("--introspection-url")
    parser.add_argument("--calls-file", type=Path, required=True)
    args = parser.parse_args()
    serve(args.port, args.token_file, args.calls_file, args.host, args.introspection_url)


if __name__ == "__main__":
    main()
