"""`paddock`: run agents and watch their sessions through a Paddock gateway.

    paddock run AGENT "task" [--environment ENV]
    paddock logs SESSION [-f]
    paddock send SESSION "message"
    paddock approve SESSION [EVENT]
    paddock deny SESSION [EVENT] [--message TEXT]
    paddock sessions [--limit N]
    paddock agents

The gateway is `PADDOCK_URL` (or `--url`), the key `PADDOCK_API_KEY` (or `--api-key`).
AGENT and SESSION are API ids or Kubernetes names. Exit codes are in docs/cli.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import anthropic

from paddock.cli import commands
from paddock.cli.terminal import Terminal

DEFAULT_URL = "http://127.0.0.1:8080"


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("PADDOCK_URL", DEFAULT_URL), help="gateway base URL"
    )
    common.add_argument(
        "--api-key", default=os.environ.get("PADDOCK_API_KEY"), help="gateway API key"
    )
    main = argparse.ArgumentParser(
        prog="paddock", description="Run Claude agents on Paddock and watch their sessions."
    )
    sub = main.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="start a session and follow it")
    run.add_argument("agent", help="agent id or Kubernetes name")
    run.add_argument("task", help="what the agent should do")
    run.add_argument("--environment", help="environment id or name (default: the agent's)")
    logs = sub.add_parser("logs", parents=[common], help="print a session's events")
    logs.add_argument("session")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    logs.add_argument(
        "--until-idle",
        action="store_true",
        help="with -f: stop when the session waits for the user (exit code by stop reason)",
    )
    send = sub.add_parser("send", parents=[common], help="send a message to a session")
    send.add_argument("session")
    send.add_argument("text")
    for name, verb in (("approve", "allow"), ("deny", "deny")):
        confirm = sub.add_parser(name, parents=[common], help=f"{verb} a pending tool call")
        confirm.add_argument("session")
        confirm.add_argument(
            "event", nargs="?", help="the tool call's event (default: all pending)"
        )
        if name == "deny":
            confirm.add_argument("--message", help="why, for the model")
    sessions = sub.add_parser("sessions", parents=[common], help="list sessions, newest first")
    sessions.add_argument("--limit", type=int, default=20)
    sub.add_parser("agents", parents=[common], help="list agents")
    return main


def dispatch(args: argparse.Namespace, client: anthropic.Anthropic, term: Terminal) -> int:
    match args.command:
        case "run":
            return commands.run(client, term, args.agent, args.task, args.environment)
        case "logs":
            return commands.logs(client, term, args.session, args.follow, args.until_idle)
        case "send":
            return commands.send(client, term, args.session, args.text)
        case "approve" | "deny":
            allow = args.command == "approve"
            return commands.confirm(
                client, term, args.session, args.event, allow, getattr(args, "message", None)
            )
        case "sessions":
            return commands.sessions(client, term, args.limit)
        case _:
            return commands.agents(client, term)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not args.api_key:
        print("paddock: set PADDOCK_API_KEY or pass --api-key", file=sys.stderr)
        sys.exit(commands.EXIT_USAGE)
    term = Terminal()
    client = anthropic.Anthropic(base_url=args.url, api_key=args.api_key)
    try:
        code = dispatch(args, client, term)
    except anthropic.APIStatusError as exc:
        term.close()
        error = (exc.body or {}).get("error", {}) if isinstance(exc.body, dict) else {}
        print(f"paddock: {exc.status_code} {error.get('message') or exc.message}", file=sys.stderr)
        code = commands.EXIT_ERROR
    except anthropic.APIConnectionError:
        term.close()
        print(f"paddock: cannot reach the gateway at {args.url}", file=sys.stderr)
        code = commands.EXIT_ERROR
    except KeyboardInterrupt:
        code = commands.EXIT_INTERRUPTED
    finally:
        term.close()
        client.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
