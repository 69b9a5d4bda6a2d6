"""The CRDs as YAML files: what `crds/` holds and the Helm chart installs."""

from __future__ import annotations

from typing import Any

import yaml

from paddock.models.crd import RESOURCES, custom_resource_definition

HEADER = "# Generated from paddock.models by hack/gen_crds.py; do not edit.\n"


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: Any) -> str:
    """YAML for humans: key order kept, no anchors, long lines unwrapped."""
    return yaml.dump(
        obj, Dumper=_NoAliasDumper, sort_keys=False, width=1_000_000, allow_unicode=True
    )


def crd_files() -> dict[str, str]:
    """File name → content, one CRD per file."""
    return {f"{r.name}.yaml": HEADER + to_yaml(custom_resource_definition(r)) for r in RESOURCES}
