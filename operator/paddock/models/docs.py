"""docs/resources.md, generated from the same schemas as the CRDs."""

from __future__ import annotations

import json
from typing import Any

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


def resources_markdown() -> str:
    return INTRO + "\n" + "\n".join(_section(r) for r in RESOURCES)
