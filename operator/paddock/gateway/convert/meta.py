"""Labels, annotations, names and timestamps of the objects behind API resources: the
part of every conversion that is not about one resource's spec."""

from __future__ import annotations

import copy
import json
import re
import secrets
import string
from datetime import UTC, datetime
from typing import Any

from paddock.gateway.errors import invalid

AGENT_ID_LABEL = "paddock.dev/agent-id"
ENVIRONMENT_ID_LABEL = "paddock.dev/environment-id"
SESSION_ID_LABEL = "paddock.dev/session-id"
VAULT_ID_LABEL = "paddock.dev/vault-id"
CREDENTIAL_ID_LABEL = "paddock.dev/credential-id"
NAME_ANNOTATION = "paddock.dev/name"
DESCRIPTION_ANNOTATION = "paddock.dev/description"
METADATA_ANNOTATION = "paddock.dev/metadata"
ARCHIVED_AT_ANNOTATION = "paddock.dev/archived-at"
UPDATED_AT_ANNOTATION = "paddock.dev/updated-at"

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_SLUG_LENGTH = 40


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-04-08T12:00:00.123Z`: RFC 3339 in UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (`Z` or an offset); ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment


def object_name(text: str, fallback: str) -> str:
    """A Kubernetes name for an object the API creates: a slug of ``text`` (or
    ``fallback`` if nothing of it is left) and five random characters, `my-agent-x7k2p`."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:_SLUG_LENGTH].strip("-")
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
    return f"{slug or fallback}-{suffix}"


def session_object_name(session_id: str) -> str:
    """The Kubernetes name of a Session the API creates: its id in lowercase with `-` for
    `_` (`sesn_0Ab…` → `sesn-0ab…`), so `kubectl` users find it by the id they were given."""
    return session_id.lower().replace("_", "-")


# Metadata, timestamps and other annotations.


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def api_metadata(obj: dict[str, Any]) -> dict[str, str]:
    """The Managed Agents `metadata` map stored on ``obj``."""
    try:
        stored = json.loads(annotations_of(obj).get(METADATA_ANNOTATION, "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}


def patched_metadata(
    current: dict[str, str], patch: dict[str, str | None], *, empty_deletes: bool = False
) -> dict[str, str]:
    """``current`` with ``patch`` applied: a value sets, None (and "" if ``empty_deletes``)
    deletes. At most 16 keys may remain."""
    result = dict(current)
    for key, value in patch.items():
        if value is None or (empty_deletes and value == ""):
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 16:
        raise invalid("metadata: at most 16 keys")
    return result


def metadata_annotation(metadata: dict[str, str]) -> str:
    return json.dumps(metadata, separators=(",", ":"), sort_keys=True)


def created_at(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("creationTimestamp", ""))


def updated_at(obj: dict[str, Any]) -> str:
    return annotations_of(obj).get(UPDATED_AT_ANNOTATION) or created_at(obj)


def archived_at(obj: dict[str, Any]) -> str | None:
    return annotations_of(obj).get(ARCHIVED_AT_ANNOTATION)


def archived_copy(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``obj`` marked archived now; None if it is archived already."""
    if archived_at(obj):
        return None
    new = copy.deepcopy(obj)
    stamp = rfc3339(now())
    new["metadata"].setdefault("annotations", {}).update(
        {ARCHIVED_AT_ANNOTATION: stamp, UPDATED_AT_ANNOTATION: stamp}
    )
    return new


def display_name(obj: dict[str, Any]) -> str:
    """The API's `name`: what the creator called it, else the Kubernetes name."""
    return annotations_of(obj).get(NAME_ANNOTATION) or obj["metadata"]["name"]
