"""Pure functions from a Pod to what the runner does with it: each container's process
(argv, environment, identity, mounts), each volume's files and owner, probes, and status."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

# A ConfigMap's values (text) or a Secret's (bytes).
_Value = TypeVar("_Value", str, bytes)

UNPRIVILEGED = 65534
"""The uid of a container that names none (an image's USER is unknown here)."""

PYTHONS = {"python", "python3"}
"""Commands that mean the image's Python: locally, the Python the runner runs on."""

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class VolumeFiles:
    """A volume as files: relative path -> (content, mode), plus the directory's owner and
    mode. ``files`` is empty for an emptyDir."""

    name: str
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    dir_mode: int = 0o755
    source: tuple[str, str] | None = None
    """The (kind, name) of the ConfigMap or Secret the files come from: such a volume is
    refreshed while the pod runs, as a kubelet does."""


class MissingSource(Exception):
    """A volume or variable names a ConfigMap or Secret (or a key) that does not exist."""


def container_uid(pod: dict[str, Any], container: dict[str, Any]) -> tuple[int, int]:
    pod_context = pod["spec"].get("securityContext") or {}
    context = container.get("securityContext") or {}
    uid = context.get("runAsUser", pod_context.get("runAsUser", UNPRIVILEGED))
    gid = context.get("runAsGroup", pod_context.get("runAsGroup", uid))
    return uid, gid


def supplementary_groups(pod: dict[str, Any]) -> list[int]:
    context = pod["spec"].get("securityContext") or {}
    groups = list(context.get("supplementalGroups") or [])
    if "fsGroup" in context:
        groups.insert(0, context["fsGroup"])
    return groups


def field_value(pod: dict[str, Any], field_path: str, pod_ip: str) -> str:
    """The downward API: the fields a kubelet resolves for env and downwardAPI volumes."""
    meta = pod["metadata"]
    simple: dict[str, str] = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.hostIP": pod_ip,
    }
    if field_path in simple:
        return simple[field_path]
    matched = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if matched:
        return str((meta.get(matched[1]) or {}).get(matched[2], ""))
    raise MissingSource(f"unsupported fieldRef {field_path!r}")


def _key(source: dict[str, str] | None, name: str, key: str, what: str) -> str:
    if source is None or key not in source:
        raise MissingSource(
            f"{what} {name!r} has no key {key!r}" if source else f"{what} {name!r} not found"
        )
    return source[key]


def container_env(
    pod: dict[str, Any],
    container: dict[str, Any],
    *,
    pod_ip: str,
    configmaps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
) -> dict[str, str]:
    """The environment a container starts with: a minimal base, then its `env` in order
    (`$(NAME)` refers to variables defined before it, as in Kubernetes)."""
    env = {"PATH": CONTAINER_PATH, "HOSTNAME": pod["metadata"]["name"]}
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[var["name"]] = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = _key(
                configmaps.get(ref["name"]), ref["name"], ref["key"], "ConfigMap"
            )
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = _key(secrets.get(ref["name"]), ref["name"], ref["key"], "Secret")
        else:
            raise MissingSource(f"unsupported valueFrom in {var['name']!r}")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """`$(NAME)` becomes the variable's value when it is defined; `$$` escapes."""

    def one(matched: re.Match[str]) -> str:
        if matched[0] == "$$":
            return "$"
        return env.get(matched[1], matched[0])

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def container_argv(container: dict[str, Any], env: dict[str, str], python: str) -> list[str]:
    """command + args with `$(NAME)` expanded; a Python command runs the runner's Python,
    which has Paddock installed as the image does."""
    argv = [
        expand(part, env) for part in [*container.get("command", []), *container.get("args", [])]
    ]
    if not argv:
        raise MissingSource(f"container {container['name']!r} has no command (images are not run)")
    if argv[0] in PYTHONS:
        argv[0] = python
    return argv


def volumes(
    pod: dict[str, Any],
    *,
    pod_ip: str,
    configmaps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, bytes]],
) -> list[VolumeFiles]:
    """Each volume of the pod as files. Secret files belong to the one uid that mounts them
    and are readable by it alone: local processes share a filesystem, so file modes are what
    keeps a Secret out of every container but the one that mounts it."""
    mounters: dict[str, set[int]] = {}
    for container in pod["spec"]["containers"]:
        for mount in container.get("volumeMounts") or []:
            mounters.setdefault(mount["name"], set()).add(container_uid(pod, container)[0])
    result = []
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume:
            result.append(VolumeFiles(name, dir_mode=0o1777))
        elif "configMap" in volume:
            source = volume["configMap"]
            texts = configmaps.get(source["name"])
            if texts is None:
                raise MissingSource(f"ConfigMap {source['name']!r} not found")
            chosen = _items(texts, source.get("items"), source.get("defaultMode", 0o644))
            result.append(
                VolumeFiles(
                    name,
                    {k: (v.encode(), m) for k, (v, m) in chosen.items()},
                    source=("ConfigMap", source["name"]),
                )
            )
        elif "secret" in volume:
            source = volume["secret"]
            data = secrets.get(source["secretName"])
            if data is None:
                raise MissingSource(f"Secret {source['secretName']!r} not found")
            files = _items(data, source.get("items"), 0o400)
            result.append(_secret_files(name, files, [source["secretName"]], mounters))
        elif "projected" in volume:
            # The operator's vault volume: keys of several Secrets in one directory tree,
            # owned and readable as a secret volume is.
            files, names = {}, []
            for projection in volume["projected"].get("sources") or []:
                if set(projection) != {"secret"}:
                    raise MissingSource(f"volume {name!r}: only secret sources can be projected")
                ref = projection["secret"]
                data = secrets.get(ref["name"])
                if data is None:
                    raise MissingSource(f"Secret {ref['name']!r} not found")
                files.update(_items(data, ref.get("items"), 0o400))
                names.append(ref["name"])
            result.append(_secret_files(name, files, names, mounters))
        elif "downwardAPI" in volume:
            files = {
                item["path"]: (
                    field_value(pod, item["fieldRef"]["fieldPath"], pod_ip).encode(),
                    item.get("mode", volume["downwardAPI"].get("defaultMode", 0o644)),
                )
                for item in volume["downwardAPI"]["items"]
            }
            result.append(VolumeFiles(name, files))
        else:
            raise MissingSource(
                f"volume {name!r}: only emptyDir, configMap, secret, projected and downwardAPI"
            )
    return result


def _secret_files(
    name: str, files: dict[str, Any], secrets: list[str], mounters: dict[str, set[int]]
) -> VolumeFiles:
    """A volume of Secret keys: owned by the one container user that mounts it (root if
    several do), readable by that user alone."""
    owners = mounters.get(name, set())
    uid = owners.pop() if len(owners) == 1 else 0
    return VolumeFiles(
        name, files, uid=uid, gid=uid, dir_mode=0o500, source=("Secret", ",".join(secrets))
    )


def _items(
    data: dict[str, _Value], items: list[dict[str, Any]] | None, mode: int
) -> dict[str, tuple[_Value, int]]:
    if items is None:
        return {key: (value, mode) for key, value in data.items()}
    chosen: dict[str, tuple[_Value, int]] = {}
    for item in items:
        if item["key"] not in data:
            raise MissingSource(f"no key {item['key']!r}")
        chosen[item["path"]] = (data[item["key"]], item.get("mode", mode))
    return chosen


def probe_of(container: dict[str, Any]) -> tuple[str, int, str] | None:
    """The readiness probe as (kind, port, path); named ports are resolved."""
    probe = container.get("readinessProbe")
    if not probe:
        return None
    ports = {p["name"]: p["containerPort"] for p in container.get("ports") or [] if "name" in p}
    for kind in ("tcpSocket", "httpGet"):
        if kind in probe:
            port = probe[kind]["port"]
            return kind, int(ports.get(port, port)), probe[kind].get("path", "/")
    return None


def pod_status(
    pod: dict[str, Any],
    *,
    pod_ip: str,
    started: datetime,
    containers: dict[str, dict[str, Any]],
    phase: str,
    message: str = "",
) -> dict[str, Any]:
    """The status the runner reports: phase, address, conditions and container states.
    ``containers`` maps a name to {"ready", "restarts", "state", "since", "exit_code"}."""

    statuses = []
    for container in pod["spec"]["containers"]:
        seen = containers.get(
            container["name"], {"state": "waiting", "ready": False, "restarts": 0}
        )
        state: dict[str, Any]
        if seen["state"] == "running":
            state = {"running": {"startedAt": _moment(seen["since"])}}
        elif seen["state"] == "terminated":
            state = {
                "terminated": _terminated(seen["exit_code"], seen["since"], seen.get("message"))
            }
        else:
            waiting = {"reason": seen.get("reason") or "ContainerCreating"}
            if seen.get("message"):
                waiting["message"] = seen["message"]
            state = {"waiting": waiting}
        reported: dict[str, Any] = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": seen["ready"],
            "started": seen["state"] == "running",
            "restartCount": seen["restarts"],
            "state": state,
        }
        last = seen.get("last")
        if last:
            ended = _terminated(last["exit_code"], last["finished"], last.get("message"))
            ended["startedAt"] = _moment(last["started"])
            reported["lastState"] = {"terminated": ended}
        statuses.append(reported)
    all_ready = phase == "Running" and all(s["ready"] for s in statuses)
    now = _moment(datetime.now(UTC))
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": _moment(started),
        "containerStatuses": statuses,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": str(all_ready), "lastTransitionTime": now},
            {"type": "Ready", "status": str(all_ready), "lastTransitionTime": now},
        ],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if message:
        status["message"] = message
    return status


def _terminated(code: int, finished: datetime, message: str | None) -> dict[str, Any]:
    ended: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "finishedAt": _moment(finished),
    }
    if message:
        ended["message"] = message
    return ended


def _moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
