"""docs/resources.md, generated from the same schemas as the CRDs."""

from __future__ import annotations

import ast
import inspect
import json
from enum import StrEnum
from typing import Any

from paddock.models.conditions import CONDITIONS, ConditionType, EventReason
from paddock.models.crd import RESOURCES, Resource, structural_schema

INTRO = """# Resources

Generated from `paddock.models` by `hack/gen_crds.py`; edit the models, not this file.

Paddock has three namespaced resources in `paddock.dev/v1alpha1`. `kubectl get paddock` lists
all of them. An **Agent** says which model runs with which prompt, tools, credentials and
limits; the operator runs it as a harness Deployment with a credential-proxy sidecar. An
**Environment** is the sandbox template (image, resources, networking, warm pool). A
**Session** is one conversation: it names an Agent, optionally an Environment, and carries the
task as initial events. Its transcript lives in Redis; the Session's status is a summary.

Validation happens in the apiserver: OpenAPI constraints for types, ranges and patterns, and
CEL rules for what a schema cannot say (listed under each resource).
"""


def _type(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = schema.get("type", "object")
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "min length "),
        ("maxLength", "max length "),
        ("minItems", "min items "),
        ("maxItems", "max items "),
    ):
        if key in schema:
            parts.append(f"{label}{schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "map":
        parts.append(
            "unique by " + ", ".join(f"`{k}`" for k in schema["x-kubernetes-list-map-keys"])
        )
    return "; ".join(parts)


def _rows(schema: dict[str, Any], path: str, required: bool, rules: list[str]) -> list[str]:
    default = schema.get("default")
    shown_default = (
        "" if default is None or isinstance(default, dict | list) else f"`{json.dumps(default)}`"
    )
    description = schema.get("description", "").replace("|", "\\|")
    rows = (
        [
            f"| `{path}` | {_type(schema)} | {'yes' if required else ''} | {shown_default} | "
            f"{description} {_constraints(schema)} |"
        ]
        if path
        else []
    )
    rules.extend(
        f"`{path or '.'}`: {r['message']}" for r in schema.get("x-kubernetes-validations", [])
    )
    target = schema.get("items", schema) if schema.get("type") == "array" else schema
    suffix = "[]" if target is not schema else ""
    if target is not schema:
        rules.extend(
            f"`{path}[]`: {r['message']}" for r in target.get("x-kubernetes-validations", [])
        )
    for name, child in target.get("properties", {}).items():
        child_path = f"{path}{suffix}.{name}" if path else name
        rows += _rows(child, child_path, name in target.get("required", []), rules)
    return rows


def _section(resource: Resource) -> str:
    out = [f"## {resource.kind}", "", " ".join((resource.model.__doc__ or "").split()), ""]
    out += [
        f"Short names: {', '.join(f'`{n}`' for n in resource.short_names)}. "
        "Columns of `kubectl get`: "
        + ", ".join(c.name for c in resource.columns if not c.priority)
        + " (with `-o wide` also "
        + (", ".join(c.name for c in resource.columns if c.priority) or "nothing")
        + ").",
        "",
    ]
    for part, model in (("spec", resource.spec), ("status", resource.status)):
        rules: list[str] = []
        out += [
            f"### {resource.kind} `.{part}`",
            "",
            "| Field | Type | Required | Default | Description |",
            "|---|---|---|---|---|",
        ]
        out += _rows(structural_schema(model), "", False, rules)
        if rules:
            out += ["", "Rules checked by the apiserver:", ""] + [f"- {r}" for r in rules]
        out.append("")
    return "\n".join(out)


def member_docs(enum: type[StrEnum]) -> dict[str, str]:
    """Each member's docstring (the string literal after it), on one line. Raises if a
    member has none: every reason a user may see is explained."""
    (body,) = ast.parse(inspect.getsource(enum)).body
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.Assign)
            and isinstance(statement.targets[0], ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.targets[0].id] = " ".join(following.value.value.split())
    missing = [m.name for m in enum if m.name not in docs]
    if missing:
        raise ValueError(f"{enum.__name__}: no docstring for {', '.join(missing)}")
    return {enum[name].value: text for name, text in docs.items()}


def _enum_doc(enum: type[StrEnum]) -> str:
    return " ".join((enum.__doc__ or "").split())


def conditions_markdown() -> str:
    """The condition types and reasons of each resource, and the Events' reasons."""
    types = member_docs(ConditionType)
    out = [
        "## Conditions and Events",
        "",
        "Condition types and reasons are stable: scripts and alerts may match them. They are "
        "the enums of `paddock.models.conditions`.",
        "",
        "| Condition | Meaning |",
        "|---|---|",
        *(f"| `{kind}` | {text} |" for kind, text in types.items()),
        "",
        "| Resource | Condition | Reason | Meaning |",
        "|---|---|---|---|",
    ]
    for resource, conditions in CONDITIONS.items():
        for kind, reasons in conditions.items():
            for reason, text in member_docs(reasons).items():
                out.append(f"| {resource} | `{kind}` | `{reason}` | {text} |")
    out += [
        "",
        _enum_doc(EventReason),
        "",
        "| Event reason | Meaning |",
        "|---|---|",
        *(f"| `{reason}` | {text} |" for reason, text in member_docs(EventReason).items()),
        "",
    ]
    return "\n".join(out)


def resources_markdown() -> str:
    return INTRO + "\n" + "\n".join(_section(r) for r in RESOURCES) + "\n" + conditions_markdown()
