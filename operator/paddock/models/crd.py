"""CustomResourceDefinitions generated from the Pydantic models: one source of truth.

`structural_schema` turns a model's JSON Schema into the structural OpenAPI v3 schema the
apiserver wants: references inlined, `null` alternatives dropped (optional fields are just
left out), int-or-string marked, free-form objects preserved, titles removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from paddock.models.agent import Agent, AgentSpec, AgentStatus
from paddock.models.common import GROUP, VERSION
from paddock.models.environment import Environment, EnvironmentSpec, EnvironmentStatus
from paddock.models.session import Session, SessionSpec, SessionStatus
from paddock.models.vault import Vault, VaultSpec, VaultStatus

_DROPPED_KEYS = {"title", "$defs"}
_KEY_ORDER = {"description": 0, "type": 1, "properties": 8}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model``, as a CRD's `openAPIV3Schema` wants it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        # Keys next to the reference (a field's description, rules) win over the target's.
        node = {**_convert(target, defs), **_convert(node, defs)}
    for combinator in ("allOf", "anyOf"):
        if combinator not in node:
            continue
        options = [o for o in node.pop(combinator) if o.get("type") != "null"]
        if sorted(o.get("type", "") for o in options) == ["integer", "string"]:
            merged = {"x-kubernetes-int-or-string": True}
            for option in options:
                merged.update({k: v for k, v in option.items() if k != "type"})
        elif len(options) == 1:
            merged = _convert(options[0], defs)
        else:
            raise ValueError(f"a CRD schema cannot express this union: {options}")
        node = {**merged, **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is True or (
        node.get("type") == "object"
        and "properties" not in node
        and "additionalProperties" not in node
    ):
        node.pop("additionalProperties", None)
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # not allowed beside properties; unknown fields are pruned
    out: dict[str, Any] = {}
    for key, value in sorted(node.items(), key=lambda kv: (_KEY_ORDER.get(kv[0], 9), kv[0])):
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            value = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _convert(value, defs)
        elif key == "description":
            value = " ".join(value.split())
        elif key == "default":
            value = _without_nulls(value)
        out[key] = value
    if "enum" in out and "type" not in out:
        out = {"type": "string", **out}
    return out


def _without_nulls(value: Any) -> Any:
    """A default as the apiserver accepts it: unset optional fields are absent, not null."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""

    def to_k8s(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            column["priority"] = self.priority
        if self.description:
            column["description"] = self.description
        return column


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


def _ready(what: str) -> PrinterColumn:
    return PrinterColumn(
        "Ready",
        '.status.conditions[?(@.type=="Ready")].status',
        description=f"Whether {what} is ready",
    )


@dataclass(frozen=True)
class Resource:
    """One custom resource kind and how it is presented."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    model: type[BaseModel]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...]
    spec_required: bool = True
    categories: tuple[str, ...] = field(default=("paddock",))

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


RESOURCES: tuple[Resource, ...] = (
    Resource(
        kind="Agent",
        plural="agents",
        short_names=("agt",),
        model=Agent,
        spec=AgentSpec,
        status=AgentStatus,
        columns=(
            PrinterColumn("Model", ".spec.model"),
            _ready("the harness"),
            PrinterColumn(
                "Workers", ".status.readyReplicas", "integer", description="Ready harness pods"
            ),
            PrinterColumn(
                "Active", ".status.activeSessions", "integer", description="Active sessions"
            ),
            _AGE,
        ),
    ),
    Resource(
        kind="Environment",
        plural="environments",
        short_names=("env",),
        model=Environment,
        spec=EnvironmentSpec,
        status=EnvironmentStatus,
        spec_required=False,
        columns=(
            PrinterColumn("Image", ".spec.image"),
            PrinterColumn("Network", ".spec.networking.mode"),
            _ready("the warm pool"),
            PrinterColumn(
                "Warm", ".status.warmPool.ready", "integer", description="Ready unbound sandboxes"
            ),
            PrinterColumn(
                "Bound", ".status.warmPool.bound", "integer", description="Sandboxes in use"
            ),
            _AGE,
        ),
    ),
    Resource(
        kind="Session",
        plural="sessions",
        short_names=("sess",),
        model=Session,
        spec=SessionSpec,
        status=SessionStatus,
        columns=(
            PrinterColumn("Agent", ".spec.agentRef.name"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Stop Reason", ".status.stopReason"),
            PrinterColumn("Events", ".status.eventCount", "integer"),
            PrinterColumn("Sandbox", ".status.sandbox.podName", priority=1),
            PrinterColumn(
                "Cost", ".status.usage.listCost.amount", priority=1, description="US cents"
            ),
            PrinterColumn("Session ID", ".status.sessionId", priority=1),
            _AGE,
        ),
    ),
    Resource(
        kind="Vault",
        plural="vaults",
        short_names=("vlt",),
        model=Vault,
        spec=VaultSpec,
        status=VaultStatus,
        spec_required=False,
        columns=(
            PrinterColumn("Vault ID", ".metadata.labels.paddock\\.dev/vault-id"),
            _ready("every referenced Secret"),
            _AGE,
        ),
    ),
)


def custom_resource_definition(resource: Resource) -> dict[str, Any]:
    """The CustomResourceDefinition object of ``resource``."""
    spec_schema = structural_schema(resource.spec)
    if not resource.spec_required:
        spec_schema["default"] = {}
    root: dict[str, Any] = {
        "type": "object",
        "description": (resource.model.__doc__ or "").strip(),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": structural_schema(resource.status),
        },
    }
    if resource.spec_required:
        root["required"] = ["spec"]
    singular = resource.kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": singular,
                "shortNames": list(resource.short_names),
                "categories": list(resource.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_k8s() for c in resource.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }
