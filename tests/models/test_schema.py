"""The CRDs are generated from the models, current, and say what users rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from paddock.models import Agent, Environment, Session
from paddock.models.crd import RESOURCES, custom_resource_definition
from paddock.models.docs import resources_markdown
from paddock.models.render import crd_files

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"Agent": Agent, "Environment": Environment, "Session": Session}


def test_committed_crds_match_the_models() -> None:
    for name, text in crd_files().items():
        committed = ROOT / "crds" / name
        assert committed.exists(), f"crds/{name} is missing: run `make crds`"
        assert committed.read_text() == text, f"crds/{name} is stale: run `make crds`"
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(crd_files())


def test_committed_resource_docs_match_the_models() -> None:
    assert (ROOT / "docs" / "resources.md").read_text() == resources_markdown()


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_crds_have_status_subresource_and_printer_columns(resource) -> None:
    version = custom_resource_definition(resource)["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    expected = {
        "Agent": ["Model", "Ready", "Workers", "Active", "Age"],
        "Environment": ["Image", "Network", "Ready", "Warm", "Bound", "Age"],
        "Session": ["Agent", "Phase", "Stop Reason", "Events", "Age"],
        "Vault": ["Vault ID", "Ready", "Age"],
    }[resource.kind]
    assert columns == expected


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_schemas_are_structural(resource) -> None:
    """What the apiserver would refuse or silently prune, caught without an apiserver."""
    schema = custom_resource_definition(resource)["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "allOf"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        assert "title" not in node, path
        if path.count(".") == 1 and path not in (".apiVersion", ".kind", ".metadata"):
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        KINDS[document["kind"]].model_validate(document)


def test_models_apply_the_same_defaults_as_the_crds() -> None:
    agent = Agent.model_validate(
        {
            "metadata": {"name": "a"},
            "spec": {
                "model": "claude-sonnet-4-6",
                "credentials": {"anthropicApiKey": {"name": "s", "key": "k"}},
            },
        }
    )
    assert agent.spec.tools.builtin.permission_policy == "always_allow"
    assert agent.spec.harness.replicas == 1
    assert agent.spec.limits.model_timeout == "10m"
    assert Environment().spec.networking.mode == "none"


def test_models_refuse_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="modle"):
        Agent.model_validate({"spec": {"modle": "x", "credentials": {}}})
    with pytest.raises(ValidationError, match="ttl"):
        Session.model_validate({"spec": {"agentRef": {"name": "a"}, "ttl": "tomorrow"}})
