"""Building blocks shared by the three resources: base model, references, conditions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

GROUP = "paddock.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Go-style durations as Kubernetes users write them: "90s", "15m", "1h30m".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `1h30m` or `250ms`."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text)
    )


# A DNS-1123 subdomain: what Kubernetes accepts as an object name.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)]
# Resource quantities as in core/v1 ("500m", "2Gi", 1), not negative: the apiserver refuses
# a pod that requests less than nothing, and that must be said when the resource is applied.
QUANTITY_PATTERN = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
Quantity = (
    Annotated[int, Field(ge=0)] | Annotated[str, Field(max_length=64, pattern=QUANTITY_PATTERN)]
)
# An image reference as the kubelet pulls it; whitespace would only fail at pull time.
ImageReference = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]


def map_list(*keys: str) -> dict[str, Any]:
    """Schema markers for a list whose items are unique by ``keys`` (the apiserver rejects
    duplicates and merges by key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def cel_rule(rule: str, message: str) -> dict[str, JsonValue]:
    """A CEL validation rule with the message the user reads when it fails."""
    return {"rule": rule, "message": message}


class Model(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The object as the Kubernetes API stores it: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(Model):
    """A reference to an object of a given kind in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""
    namespace: Annotated[
        None,
        Field(
            json_schema_extra={
                "type": "string",
                "x-kubernetes-validations": [
                    cel_rule("false", "references name objects of the same namespace: remove it")
                ],
            }
        ),
    ] = None
    """Not supported: a reference names an object of the same namespace. (Declared so that
    a manifest that sets it is refused, not silently run against a same-named object.)"""


class SecretKeyReference(Model):
    """A key of a Secret in the same namespace. Only the credential proxy ever mounts it."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside the Secret whose value is the credential."""


ResourceList = Annotated[dict[str, Quantity], Field(max_length=8)]


def _known_resource_names(field: str) -> dict[str, JsonValue]:
    """The apiserver's rule for a container's resource names: standard ones, hugepages of some
    size, or an extended resource qualified by a domain (`example.com/gpu`)."""
    return cel_rule(
        f"!has(self.{field}) || self.{field}.all(k, k in ['cpu', 'memory', 'ephemeral-storage']"
        " || k.startsWith('hugepages-') || k.contains('/'))",
        f"{field}: a resource is cpu, memory, ephemeral-storage, hugepages-<size> or a "
        "domain-qualified extended resource (example.com/gpu)",
    )


class ResourceRequirements(Model):
    """Compute resources, as in a core/v1 container. What the apiserver would refuse in a pod
    (an unknown resource name, a request above its limit) is refused when the resource is
    applied, rather than by every pod create after it."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _known_resource_names("requests"),
                _known_resource_names("limits"),
                cel_rule(
                    "!has(self.requests) || !has(self.limits) || self.requests.all(k, "
                    "!(k in self.limits) || quantity(string(self.requests[k]))"
                    ".compareTo(quantity(string(self.limits[k]))) <= 0)",
                    "a request must not exceed the limit of the same resource",
                ),
            ]
        }
    }

    requests: ResourceList | None = None
    """Minimum resources the scheduler reserves, for example `cpu: 250m`, `memory: 256Mi`."""
    limits: ResourceList | None = None
    """Maximum resources the container may use."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """One aspect of the object's state, following the Kubernetes API conventions."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Which aspect this is, for example `Ready`."""
    status: ConditionStatus
    """Whether the aspect holds: True, False or Unknown."""
    reason: Annotated[
        str, Field(max_length=1024, pattern=r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$")
    ] = ""
    """Machine-readable CamelCase reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable explanation of the last transition."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `metadata.generation` this condition was computed from."""
    last_transition_time: datetime | None = None
    """When `status` last changed."""


class ObjectMeta(Model):
    """The subset of metadata Paddock reads. Everything else passes through untouched."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    resource_version: str | None = None
    finalizers: list[str] | None = None
    deletion_timestamp: datetime | None = None


class ObjectStub(Model):
    """A resource's identity without its spec: what an Event about it, or a write of its
    status, needs (the operator keeps stubs of ten thousand Sessions, not whole ones)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta
