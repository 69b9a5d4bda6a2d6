"""Environment: the sandbox template that model-written code runs in."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from paddock.models.agent import Hostname
from paddock.models.common import (
    Condition,
    Duration,
    ImageReference,
    Model,
    ObjectMeta,
    ObjectName,
    ResourceRequirements,
    cel_rule,
    map_list,
)

NetworkingMode = Literal["none", "limited", "open"]
PackageSpec = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s;&|`$]+$")]


class Networking(Model):
    """What the sandbox may reach. All egress goes through the credential proxy; the
    cluster's metadata address and private ranges are refused in every mode."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.mode == 'limited' || !has(self.allowedDomains) || size(self.allowedDomains) == 0",
                    "allowedDomains may only be set when mode is 'limited'",
                ),
                cel_rule(
                    "self.mode == 'limited' || !self.allowPackageManagers",
                    "allowPackageManagers may only be set when mode is 'limited'",
                ),
            ]
        }
    }

    mode: NetworkingMode = "none"
    """`none`: no egress at all; `limited`: only `allowedDomains` (and package registries if
    allowed); `open`: any public host."""
    allowed_domains: Annotated[
        list[Hostname], Field(max_length=256, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = Field(default_factory=list)
    """Hosts reachable in `limited` mode; `*.example.com` matches every subdomain."""
    allow_package_managers: bool = False
    """In `limited` mode, also allow the public package registries (PyPI, npm, Debian, ...)."""


class Packages(Model):
    """Packages installed into the sandbox before the session's first tool call."""

    apt: Annotated[list[PackageSpec], Field(max_length=100)] = Field(default_factory=list)
    """Debian packages, in apt's syntax (`ripgrep`, `jq=1.6-2`): downloaded with their
    dependencies and unpacked without root, so their maintainer scripts do not run (packages
    that need their postinst, a service or setuid do not work; most tools and libraries do)."""
    pip: Annotated[list[PackageSpec], Field(max_length=100)] = Field(default_factory=list)
    """Python packages, in pip's version syntax (`pandas==2.2.2`)."""
    npm: Annotated[list[PackageSpec], Field(max_length=100)] = Field(default_factory=list)
    """Node packages."""


class WarmPool(Model):
    """Sandbox pods started ahead of demand so that binding a session never waits for a start."""

    size: Annotated[int, Field(ge=0, le=100)] = 1
    """Unbound sandbox pods kept ready. 0 starts every sandbox on demand."""


class EnvironmentSpec(Model):
    """Desired state of an Environment."""

    image: ImageReference = "paddock/sandbox:0.1.0"
    """Sandbox image; it must run the Paddock sandbox server (`python -m paddock.sandbox`)."""
    resources: ResourceRequirements = ResourceRequirements(
        requests={"cpu": "250m", "memory": "256Mi"}, limits={"cpu": "1", "memory": "1Gi"}
    )
    """Resources of each sandbox pod."""
    working_dir: Annotated[str, Field(max_length=1024, pattern=r"^/")] = "/workspace"
    """Directory that tools run in; repositories are cloned below it."""
    networking: Networking = Networking()
    """Egress rules for the sandbox."""
    packages: Packages | None = None
    """Packages to install in each sandbox."""
    warm_pool: WarmPool = WarmPool()
    """Pre-started sandboxes."""
    idle_timeout: Duration = "15m"
    """A bound sandbox whose session has been idle this long is deleted; the next tool call
    gets a fresh one."""
    runtime_class_name: ObjectName | None = None
    """RuntimeClass for stronger isolation, for example `gvisor` or `kata`."""


class WarmPoolStatus(Model):
    """Observed state of the warm pool."""

    desired: int | None = None
    """Unbound sandboxes the pool aims for."""
    ready: int | None = None
    """Unbound sandboxes that are ready to be claimed."""
    bound: int | None = None
    """Sandboxes bound to sessions."""


class EnvironmentStatus(Model):
    """Observed state of an Environment."""

    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=map_list("type"))] = Field(
        default_factory=list
    )
    """`Ready`: the warm pool is filled and the sandbox NetworkPolicy exists."""
    warm_pool: WarmPoolStatus | None = None
    """Counts of pooled and bound sandboxes."""
    template_hash: str | None = None
    """Hash of the sandbox pod template; pooled pods with another hash are replaced."""


class Environment(Model):
    """A sandbox template: image, resources, networking and warm pool."""

    api_version: Literal["paddock.dev/v1alpha1"] = "paddock.dev/v1alpha1"
    kind: Literal["Environment"] = "Environment"
    metadata: ObjectMeta = ObjectMeta()
    spec: EnvironmentSpec = EnvironmentSpec()
    status: EnvironmentStatus | None = None
