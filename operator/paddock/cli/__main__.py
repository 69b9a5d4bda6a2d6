"""`paddock`: run agents and watch their sessions through a Paddock gateway.

    paddock run AGENT "task" [--environment ENV]
    paddock logs SESSION [-f] [--type TYPE]...
    paddock send SESSION "message"
    paddock approve SESSION [EVENT]
    paddock deny SESSION [EVENT] [--message TEXT]
    paddock interrupt SESSION
    paddock result SESSION EVENT "text" [--error]
    paddock agents [list|get|create|update|archive|versions]
    paddock environments [list|get|create|archive|delete]
    paddock sessions [list|get|archive|delete]

Nouns for resources (`paddock agents get AGENT`; the noun alone lists), verbs for what is
said to a session. `-o json|yaml` prints the API's objects for scripts. The gateway is
`PADDOCK_URL` (or `--url`), the key `PADDOCK_API_KEY` (or `--api-key`). AGENT, ENV and
SESSION are API ids or Kubernetes names. Exit codes are in docs/cli.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anthropic

from paddock.cli import commands
from paddock.cli.render import OUTPUTS
from paddock.cli.terminal import Terminal

DEFAULT_URL = "http://127.0.0.1:8080"
_NOUNS = {"agents": "agent", "environments": "environment", "sessions": "session"}
_ALIASES = {"envs": "environments", "env": "environments"}


def _options(leaf: bool) -> argparse.ArgumentParser:
    """The options of every command. On a noun's actions (`agents get`) they default to
    nothing, so that they do not undo the same options given before the action
    (`agents -o json get X`)."""
    options = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if leaf else value

    options.add_argument(
        "--url", default=default(os.environ.get("PADDOCK_URL", DEFAULT_URL)), help="gateway URL"
    )
    options.add_argument(
        "--api-key", default=default(os.environ.get("PADDOCK_API_KEY")), help="gateway API key"
    )
    options.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=default("table"),
        help="table for people (default), json or yaml for scripts",
    )
    return options


def _agent_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-f", "--filename", help="the API's agent body, JSON or YAML (- for stdin)"
    )
    command.add_argument("--name")
    command.add_argument("--model", help="for example claude-sonnet-4-6")
    command.add_argument("--system", help="the system prompt")
    command.add_argument("--description")


def parser() -> argparse.ArgumentParser:
    common, leaf = _options(leaf=False), _options(leaf=True)
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
    logs.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="TYPE",
        help="only events of this type, e.g. agent.message (repeatable)",
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
    stop = sub.add_parser("interrupt", parents=[common], help="stop a session's turn")
    stop.add_argument("session")
    answer = sub.add_parser(
        "result", parents=[common], help="send the result of a pending custom tool call"
    )
    answer.add_argument("session")
    answer.add_argument("event", help="the agent.custom_tool_use event")
    answer.add_argument("text", help="the result (- reads it from stdin)")
    answer.add_argument("--error", action="store_true", help="the tool call failed")

    agents = _noun(sub, "agents", common)
    actions = agents.add_subparsers(dest="action")
    _list(actions, leaf)
    _get(actions, leaf, "agent")
    _agent_flags(actions.add_parser("create", parents=[leaf], help="create an agent"))
    update = actions.add_parser(
        "update", parents=[leaf], help="change an agent's fields (a new version)"
    )
    update.add_argument("ref", metavar="agent")
    _agent_flags(update)
    update.add_argument(
        "--version", type=int, help="only if the agent is still at this version (else 409)"
    )
    _one(actions, leaf, "archive", "agent")
    _one(actions, leaf, "versions", "agent", "list the agent's versions")

    environments = _noun(sub, "environments", common, aliases=["envs", "env"])
    actions = environments.add_subparsers(dest="action")
    _list(actions, leaf)
    _get(actions, leaf, "environment")
    create = actions.add_parser("create", parents=[leaf], help="create an environment")
    create.add_argument(
        "-f", "--filename", help="the API's environment body, JSON or YAML (- for stdin)"
    )
    create.add_argument("--name")
    create.add_argument("--description")
    _one(actions, leaf, "archive", "environment")
    _one(actions, leaf, "delete", "environment")

    sessions = _noun(sub, "sessions", common)
    actions = sessions.add_subparsers(dest="action")
    _list(actions, leaf, default=20)
    _get(actions, leaf, "session")
    _one(actions, leaf, "archive", "session")
    _one(actions, leaf, "delete", "session")
    return main


def _noun(
    sub: Any, name: str, common: argparse.ArgumentParser, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    """A resource's command; without an action it lists, as `list` does."""
    noun: argparse.ArgumentParser = sub.add_parser(
        name, parents=[common], aliases=aliases or [], help=f"list and manage {name}"
    )
    _list_options(noun, default=20 if name == "sessions" else None)
    return noun


def _list_options(command: argparse.ArgumentParser, default: int | None) -> None:
    command.add_argument(
        "--limit",
        type=int,
        default=default,
        help="the newest N" + (f" (default {default})" if default else " (default: all)"),
    )
    command.add_argument("--archived", action="store_true", help="archived ones too")


def _list(actions: Any, leaf: argparse.ArgumentParser, default: int | None = None) -> None:
    _list_options(actions.add_parser("list", parents=[leaf], help="newest first"), default)


def _get(actions: Any, leaf: argparse.ArgumentParser, kind: str) -> None:
    _one(actions, leaf, "get", kind)


def _one(
    actions: Any, leaf: argparse.ArgumentParser, action: str, kind: str, text: str = ""
) -> None:
    command = actions.add_parser(action, parents=[leaf], help=text or f"{action} the {kind}")
    command.add_argument("ref", metavar=kind, help=f"{kind} id or Kubernetes name")


def dispatch(args: argparse.Namespace, client: anthropic.Anthropic, term: Terminal) -> int:
    output = args.output
    match args.command:
        case "run":
            return commands.run(client, term, args.agent, args.task, args.environment)
        case "logs":
            return commands.logs(
                client, term, args.session, args.follow, args.until_idle, args.types, output
            )
        case "send":
            return commands.send(client, term, args.session, args.text, output)
        case "approve" | "deny":
            allow = args.command == "approve"
            message = getattr(args, "message", None)
            return commands.confirm(client, term, args.session, args.event, allow, message, output)
        case "interrupt":
            return commands.interrupt(client, term, args.session, output)
        case "result":
            text = sys.stdin.read() if args.text == "-" else args.text
            return commands.result(client, term, args.session, args.event, text, args.error, output)
    kind = _NOUNS[_ALIASES.get(args.command, args.command)]
    match args.action:
        case None | "list":
            return commands.list_objects(client, term, kind, output, args.limit, args.archived)
        case "get":
            return commands.get(client, term, kind, args.ref, output)
        case "archive":
            return commands.archive(client, term, kind, args.ref, output)
        case "delete":
            return commands.delete(client, term, kind, args.ref, output)
        case "versions":
            return commands.agent_versions(client, term, args.ref, output)
    flags = {"name": args.name, "description": args.description}
    if kind == "agent":
        flags |= {"model": args.model, "system": args.system}
    if args.action == "create":
        return commands.create(client, term, kind, args.filename, flags, output)
    return commands.update_agent(
        client, term, args.ref, args.filename, {**flags, "version": args.version}, output
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not args.api_key:
        print("paddock: set PADDOCK_API_KEY or pass --api-key", file=sys.stderr)
        sys.exit(commands.EXIT_USAGE)
    term = Terminal()
    client = anthropic.Anthropic(base_url=args.url, api_key=args.api_key)
    try:
        code = dispatch(args, client, term)
    except commands.UsageError as exc:
        term.close()
        print(f"paddock: {exc}", file=sys.stderr)
        code = commands.EXIT_USAGE
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
