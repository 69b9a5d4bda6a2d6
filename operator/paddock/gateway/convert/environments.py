"""Environments: an API `config` applied to an Environment spec, and an Environment
resource as the API's `environment` view. Only `cloud` configs exist here: Paddock runs
the sandboxes."""

from __future__ import annotations

from typing import Any

from paddock.gateway import views
from paddock.gateway.convert.meta import (
    DESCRIPTION_ANNOTATION,
    ENVIRONMENT_ID_LABEL,
    annotations_of,
    api_metadata,
    archived_at,
    created_at,
    display_name,
    labels,
    updated_at,
)
from paddock.gateway.errors import invalid, unsupported
from paddock.gateway.params import (
    CloudConfigParam,
    ConfigParam,
    LimitedNetworkParam,
    UnrestrictedNetworkParam,
)
from paddock.models import EnvironmentSpec


def _networking_fields(
    networking: UnrestrictedNetworkParam | LimitedNetworkParam,
) -> dict[str, Any]:
    if isinstance(networking, UnrestrictedNetworkParam):
        return {"mode": "open"}
    if networking.allow_mcp_servers:
        raise unsupported(
            "networking.allow_mcp_servers",
            "the harness reaches MCP servers, not the sandbox; list hosts in allowed_hosts",
        )
    return {
        "mode": "limited",
        # Host names are case-insensitive; the Environment wants them in lowercase.
        "allowedDomains": [host.lower() for host in networking.allowed_hosts or []],
        "allowPackageManagers": bool(networking.allow_package_managers),
    }


def environment_spec(config: ConfigParam | None, current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (an Environment spec, camelCase) with an API `config` applied: given
    `networking` and `packages` replace the stored ones, omitted ones are kept."""
    if config is None:
        return dict(current)
    if not isinstance(config, CloudConfigParam):
        raise unsupported(
            "config type self_hosted",
            "Paddock runs the sandboxes itself; use a cloud config",
        )
    spec = dict(current)
    if config.networking is not None:
        spec["networking"] = _networking_fields(config.networking)
    if config.packages is not None:
        packages = config.packages
        for manager in ("cargo", "gem", "go"):
            if getattr(packages, manager):
                raise unsupported(f"config.packages.{manager}", "only apt, pip and npm")
        spec["packages"] = {
            manager: list(getattr(packages, manager))
            for manager in ("apt", "pip", "npm")
            if getattr(packages, manager)
        }
    networking = spec.get("networking", {})
    if any(spec.get("packages", {}).values()) and not (
        networking.get("mode") == "open" or networking.get("allowPackageManagers")
    ):
        raise invalid(
            "config.packages needs networking unrestricted, or limited with "
            "allow_package_managers: true"
        )
    return spec


def _config_view(spec: EnvironmentSpec) -> views.CloudConfig:
    networking: views.UnrestrictedNetwork | views.LimitedNetwork
    if spec.networking.mode == "open":
        networking = views.UnrestrictedNetwork()
    else:
        # `none` is `limited` with nothing allowed: the API has no separate mode for it.
        networking = views.LimitedNetwork(
            allowed_hosts=list(spec.networking.allowed_domains),
            allow_mcp_servers=False,
            allow_package_managers=spec.networking.allow_package_managers,
        )
    packages = spec.packages
    return views.CloudConfig(
        networking=networking,
        packages=views.Packages(
            apt=list(packages.apt) if packages else [],
            cargo=[],
            gem=[],
            go=[],
            npm=list(packages.npm) if packages else [],
            pip=list(packages.pip) if packages else [],
        ),
    )


def environment_view(obj: dict[str, Any]) -> views.Environment:
    """An Environment resource (with its id label) as a Managed Agents `environment`."""
    spec = EnvironmentSpec.model_validate(obj.get("spec") or {})
    return views.Environment(
        id=labels(obj)[ENVIRONMENT_ID_LABEL],
        name=display_name(obj),
        description=annotations_of(obj).get(DESCRIPTION_ANNOTATION),
        metadata=api_metadata(obj),
        config=_config_view(spec),
        created_at=created_at(obj),
        updated_at=updated_at(obj),
        archived_at=archived_at(obj),
    )
