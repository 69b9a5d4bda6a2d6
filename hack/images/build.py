"""Builds the paddock and sandbox images without Docker (run through hack/build-images.sh).

Each image has three layers, each cached by a hash of what it is made from:
1. the Debian base (hack/images/base.py): mmdebstrap from the Debian archive, plus the
   Dockerfile's apt packages, users, directories and removed files;
2. the dependencies from PyPI (pyproject.toml's list), the way the Dockerfile installs them:
   into a venv at /opt/paddock (paddock image), into the system Python under /usr/local
   (sandbox image);
3. the Paddock wheel alone (`pip install --no-deps`), so a source change rebuilds only this.
pip runs in a chroot of the sandbox base (the only base with pip) on an overlay, so the
cached base stays untouched; the results land in bind-mounted directories.
The config (ENV, USER, WORKDIR, EXPOSE, ENTRYPOINT, CMD) comes from the Dockerfile too
(hack/images/dockerfile.py). Output: <cache>/images/<hash of the inputs>/{paddock,sandbox}.tar,
printed on stdout; a second run with the same inputs prints the same directory at once.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import base
import oci
from dockerfile import ImageSpec, parse

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("paddock", "sandbox")
# A fixed time for every file, layer and config, so that equal contents give equal digests.
SOURCE_DATE_EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1735689600"))  # 2025-01-01
# Environment the python:X.Y-slim base sets that the Dockerfiles inherit.
INHERITED_ENV = {"LANG": "C.UTF-8"}
KEEP_BUILDS = 3  # finished image directories kept in the cache (the newest)
KEEP_BASES = 2
# Kept out of the base layer: filled by the container runtime, or left over from the build.
BASE_EXCLUDES = ("dev/*", "proc/*", "sys/*", "run/*", "tmp/*", "etc/resolv.conf")


def log(message: str) -> None:
    print(f"build-images: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("PADDOCK_CACHE", Path.home() / ".cache/paddock")) / "images"


def references() -> dict[str, tuple[str, str]]:
    """name -> (repository, tag) that the chart uses by default (values.yaml, appVersion)."""
    values = (ROOT / "charts/paddock/values.yaml").read_text()
    chart = (ROOT / "charts/paddock/Chart.yaml").read_text()
    tag = re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.M)
    refs: dict[str, tuple[str, str]] = {}
    for name, key in (("paddock", "image"), ("sandbox", "sandboxImage")):
        repo = re.search(rf"^{key}:\n(?:\s+#.*\n)*\s+repository:\s*(\S+)", values, re.M)
        if not repo or not tag:
            raise SystemExit(f"cannot read {key}.repository / appVersion from charts/paddock")
        refs[name] = (repo[1], tag[1])
    return refs


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def source_files() -> list[Path]:
    """Every file the images are made from besides the Debian archive and PyPI."""
    files = [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "hack/build-images.sh"]
    files += sorted((ROOT / "hack/images").glob("*.py"))
    files += [ROOT / "images" / name / "Dockerfile" for name in NAMES]
    for path in sorted((ROOT / "operator").rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and "__pycache__" not in rel and ".egg-info" not in rel:
            files.append(path)
    return files


def keys(specs: dict[str, ImageSpec], refs: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(base key, image key): hashes of what the bases and the whole images are made from."""
    recipes = {name: base.recipe(name, specs[name]) for name in NAMES}
    base_key = _digest(
        json.dumps(recipes, sort_keys=True).encode(), str(SOURCE_DATE_EPOCH).encode()
    )
    parts = [
        path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes()
        for path in source_files()
    ]
    image_key = _digest(base_key.encode(), json.dumps(refs).encode(), *parts)
    return base_key, image_key


def ensure_bases(specs: dict[str, ImageSpec], base_dir: Path) -> dict[str, float]:
    """Build the two bases into base_dir unless there; return the seconds spent."""
    spent: dict[str, float] = {}
    for name in NAMES:
        done = base_dir / name / "layer.json"
        if done.exists():
            continue
        start = time.monotonic()
        work = base_dir / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rootfs = work / "rootfs"
        log(f"{name}: mmdebstrap {specs[name].debian_suite} (a cold build takes minutes)")
        base.build(name, specs[name], rootfs, SOURCE_DATE_EPOCH)
        base.write_facts(work / "facts.json", base.facts(rootfs))
        cmd = oci.tar_directory(rootfs, SOURCE_DATE_EPOCH, BASE_EXCLUDES)
        layer = oci.write_layer(cmd, base_dir / "blobs")
        if name != "sandbox":  # only the sandbox base is needed again (as the builder)
            shutil.rmtree(rootfs)
        done.write_text(layer.to_json())
        spent[name] = time.monotonic() - start
        log(
            f"{name}: base layer {layer.digest[:19]} ({layer.size >> 20} MiB) in {spent[name]:.0f}s"
        )
    facts = {name: base.read_facts(base_dir / name / "facts.json") for name in NAMES}
    if facts["paddock"].python_version != facts["sandbox"].python_version:
        raise SystemExit(
            f"the two bases got different python3 versions: {facts}; "
            f"remove {base_dir} and build again"
        )
    return spent


def build_wheel(work: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (as the Dockerfile's build stage)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "operator",
        src / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    dist = work / "dist"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            str(src),
        ],
        check=True,
        env=env,
        stdout=sys.stderr,
    )
    (wheel,) = dist.glob("paddock-*.whl")
    return wheel


def in_builder(builder: Path, work: Path, binds: dict[str, Path], command: str) -> None:
    """Run command (sh) as root in a chroot of builder on an overlay, with binds mounted.

    A private mount namespace holds every mount, so they go away with the command; the upper
    directory of the overlay is thrown away, the results are in the bind-mounted directories.
    """
    upper, overlay_work, merged = work / "upper", work / "overlay-work", work / "merged"
    for d in (upper, overlay_work, merged):
        d.mkdir(parents=True)
    q = shlex.quote
    lines = [
        "set -eu",
        f"mount -t overlay overlay -o lowerdir={q(str(builder))},upperdir={q(str(upper))},"
        f"workdir={q(str(overlay_work))} {q(str(merged))}",
        f"mount -t proc proc {q(str(merged / 'proc'))}",
        f"mount --rbind /dev {q(str(merged / 'dev'))}",
        f"cp -L /etc/resolv.conf {q(str(merged / 'etc/resolv.conf'))}",
    ]
    for target, source in binds.items():
        lines.append(f"mkdir -p {q(str(merged) + target)}")
        lines.append(f"mount --bind {q(str(source))} {q(str(merged) + target)}")
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
        "PIP_DEFAULT_TIMEOUT": os.environ.get("PIP_DEFAULT_TIMEOUT", "180"),
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):  # a configured index, if any
        if key in os.environ:
            env[key] = os.environ[key]
    ca = host_ca_bundle()
    if ca:  # the host's trust (e.g. a TLS-inspecting proxy's CA), for this build step only
        lines.append(f"cp -L {q(str(ca))} {q(str(merged / 'run/build-ca.crt'))}")
        env["PIP_CERT"] = "/run/build-ca.crt"
    assignments = " ".join(f"{k}={q(v)}" for k, v in env.items())
    lines.append(f"exec chroot {q(str(merged))} env -i {assignments} sh -euc {q(command)}")
    subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "sh",
            "-euc",
            "\n".join(lines),
        ],
        check=True,
        stdout=sys.stderr,
    )


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts, if it is told one (PIP_CERT or pip.conf)."""
    for key in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(key):
            return Path(os.environ[key])
    for conf in (Path("/etc/pip.conf"), Path.home() / ".config/pip/pip.conf"):
        if conf.exists():
            match = re.search(r"^cert\s*=\s*(\S+)", conf.read_text(), re.M)
            if match:
                return Path(match[1])
    return None


def distributions(site: Path) -> list[str]:
    """name==version of every distribution installed in the site-packages directory site."""
    found = []
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        if name and version:
            found.append(f"{name[1].strip()}=={version[1].strip()}")
    return found


def requirements() -> list[str]:
    """The project's dependencies, as pyproject.toml lists them."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


# How the two upper layers are made (in the builder, as root). The dependencies go into a layer
# of their own, cached by the dependency list, so a source change reinstalls only the wheel.
VENV_DEPS = (
    "python3 -m venv --without-pip /opt/paddock && "
    "python3 -m pip --python /opt/paddock/bin/python install -r /reqs/requirements.txt"
)
VENV_APP = (
    "python3 -m pip --python /opt/paddock/bin/python install --no-deps --root /stage /dist/{wheel}"
)
SYSTEM_DEPS = "python3 -m pip install --root /stage -r /reqs/requirements.txt"
SYSTEM_APP = "python3 -m pip install --no-deps --root /stage /dist/{wheel}"
PIP_FLAGS = " --no-warn-script-location"


def _check_specs(specs: dict[str, ImageSpec]) -> None:
    if not specs["paddock"].copies_venv:
        raise SystemExit("images/paddock/Dockerfile no longer copies /opt/paddock")
    if specs["sandbox"].pip_installs != 1:
        raise SystemExit("images/sandbox/Dockerfile no longer pip-installs the wheel once")


def _site(name: str, spec: ImageSpec) -> str:
    if name == "paddock":  # the Dockerfile's build stage: a venv without pip, copied whole
        return f"opt/paddock/lib/python{spec.python_minor}/site-packages"
    return f"usr/local/lib/python{spec.python_minor}/dist-packages"  # `pip install` as root


def ensure_deps(
    specs: dict[str, ImageSpec], base_dir: Path, deps_dir: Path, pip_cache: Path
) -> dict[str, float]:
    """The dependency layer of each image, from PyPI, into deps_dir unless there."""
    _check_specs(specs)
    builder = base_dir / "sandbox" / "rootfs"
    spent: dict[str, float] = {}
    for name in NAMES:
        done = deps_dir / name / "layer.json"
        if done.exists():
            continue
        start = time.monotonic()
        work = deps_dir / name
        shutil.rmtree(work, ignore_errors=True)
        stage, reqs = work / "stage", work / "reqs"
        reqs.mkdir(parents=True)
        (reqs / "requirements.txt").write_text("\n".join(requirements()) + "\n")
        binds = {"/reqs": reqs, "/root/.cache/pip": pip_cache}
        if name == "paddock":
            (stage / "opt/paddock").mkdir(parents=True)
            binds["/opt/paddock"] = stage / "opt/paddock"
            command = VENV_DEPS
        else:
            stage.mkdir()
            binds["/stage"] = stage
            command = SYSTEM_DEPS + PIP_FLAGS
        log(f"{name}: dependencies from PyPI")
        with tempfile.TemporaryDirectory(dir=deps_dir, prefix=".work-") as tmp:
            in_builder(builder, Path(tmp), binds, command)
        site = stage / _site(name, specs[name])
        if not site.is_dir():
            raise SystemExit(f"pip did not install into {site.relative_to(stage)}")
        layer = oci.write_layer(oci.tar_directory(stage, SOURCE_DATE_EPOCH), deps_dir / "blobs")
        (work / "distributions.json").write_text(json.dumps(distributions(site)))
        if name == "sandbox":
            shutil.rmtree(stage)  # the paddock venv stays: the wheel is installed against it
        done.write_text(layer.to_json())
        spent[name] = time.monotonic() - start
    return spent


def build_app_layers(
    specs: dict[str, ImageSpec], base_dir: Path, deps_dir: Path, work: Path, wheel: Path
) -> dict[str, tuple[oci.Layer, list[str], str]]:
    """The top layer of each image, the wheel alone: (layer, distributions, what made it)."""
    builder = base_dir / "sandbox" / "rootfs"
    out: dict[str, tuple[oci.Layer, list[str], str]] = {}
    for name in NAMES:
        stage = work / f"{name}-layer"
        stage.mkdir()
        binds = {"/dist": wheel.parent, "/stage": stage}
        if name == "paddock":
            binds["/opt/paddock"] = deps_dir / "paddock/stage/opt/paddock"
            command = VENV_APP.format(wheel=wheel.name)
        else:
            command = SYSTEM_APP.format(wheel=wheel.name)
        in_builder(builder, work / f"{name}-build", binds, command + PIP_FLAGS)
        site = stage / _site(name, specs[name])
        if not (site / "paddock").is_dir():
            raise SystemExit(f"pip did not install paddock into {site.relative_to(stage)}")
        layer = oci.write_layer(oci.tar_directory(stage, SOURCE_DATE_EPOCH), work / "blobs")
        deps = json.loads((deps_dir / name / "distributions.json").read_text())
        out[name] = (layer, sorted([*deps, *distributions(site)]), command)
    return out


def image_config(spec: ImageSpec) -> dict[str, object]:
    env = {**INHERITED_ENV, **spec.env}
    config: dict[str, object] = {
        "Env": [f"{k}={v}" for k, v in env.items()],
        "User": spec.user,
        "WorkingDir": spec.workdir,
        "Entrypoint": spec.entrypoint,
    }
    if spec.cmd:
        config["Cmd"] = spec.cmd
    if spec.exposed_ports:
        config["ExposedPorts"] = {(p if "/" in p else f"{p}/tcp"): {} for p in spec.exposed_ports}
    return config


def prune(parent: Path, keep: int, current: str) -> None:
    dirs = [d for d in parent.iterdir() if d.is_dir() and re.fullmatch(r"[0-9a-f]{12}", d.name)]
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in [d for d in dirs if d.name != current][max(keep - 1, 0) :]:
        log(f"pruning {old}")
        shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-key", action="store_true", help="print the output dir and stop")
    args = parser.parse_args()
    specs = {name: parse(ROOT / "images" / name / "Dockerfile") for name in NAMES}
    refs = references()
    base_key, image_key = keys(specs, refs)
    images = cache_dir()
    out = images / image_key
    if args.print_key or all((out / f"{name}.tar").exists() for name in NAMES):
        print(out)
        return
    images.mkdir(parents=True, exist_ok=True)
    with (images / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time on this machine
        if all((out / f"{name}.tar").exists() for name in NAMES):
            print(out)
            return
        start = time.monotonic()
        base_dir = images / "base" / base_key
        base_seconds = ensure_bases(specs, base_dir)
        deps_key = _digest(
            base_key.encode(),
            json.dumps(requirements()).encode(),
            (VENV_DEPS + SYSTEM_DEPS + PIP_FLAGS).encode(),
        )
        deps_dir = images / "deps" / deps_key
        pip_cache = images / "pip-cache"
        pip_cache.mkdir(parents=True, exist_ok=True)
        deps_seconds = ensure_deps(specs, base_dir, deps_dir, pip_cache)
        with tempfile.TemporaryDirectory(dir=images, prefix=".work-") as tmp:
            work = Path(tmp)
            app_start = time.monotonic()
            wheel = build_wheel(work)
            layers = build_app_layers(specs, base_dir, deps_dir, work, wheel)
            app_seconds = time.monotonic() - app_start
            out.mkdir(exist_ok=True)
            created = datetime.fromtimestamp(SOURCE_DATE_EPOCH, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            images_record: dict[str, object] = {}
            record: dict[str, object] = {
                "key": image_key,
                "base_key": base_key,
                "images": images_record,
            }
            for name in NAMES:
                spec = specs[name]
                facts = base.read_facts(base_dir / name / "facts.json")
                base_layer = oci.Layer.from_json((base_dir / name / "layer.json").read_text())
                deps_layer = oci.Layer.from_json((deps_dir / name / "layer.json").read_text())
                app_layer, dists, made_by = layers[name]
                repository, tag = refs[name]
                packages = ",".join(base.packages(name, spec))
                history = [
                    {
                        "created": created,
                        "created_by": f"mmdebstrap --variant=minbase {spec.debian_suite} "
                        f"--include={packages}; users, dirs and removals of "
                        f"images/{name}/Dockerfile",
                    },
                    {
                        "created": created,
                        "created_by": (VENV_DEPS if name == "paddock" else SYSTEM_DEPS)
                        + " (requirements.txt: the dependencies in pyproject.toml)",
                    },
                    {"created": created, "created_by": made_by},
                ]
                labels = {
                    "org.opencontainers.image.title": name,
                    "org.opencontainers.image.version": tag,
                    "org.opencontainers.image.base.name": f"debian:{facts.codename}",
                    "org.opencontainers.image.description": f"images/{name}/Dockerfile built without Docker (hack/build-images.sh)",
                    "dev.paddock.debian-version": facts.debian_version,
                    "dev.paddock.python-version": facts.python_version,
                    "dev.paddock.inputs": image_key,
                }
                digest = oci.write_archive(
                    out / f"{name}.tar",
                    repository=repository,
                    tag=tag,
                    layers=[base_layer, deps_layer, app_layer],
                    config=image_config(spec),
                    history=history,
                    created=created,
                    labels=labels,
                    source_date_epoch=SOURCE_DATE_EPOCH,
                )
                images_record[name] = {
                    "ref": f"{repository}:{tag}",
                    "manifest": digest,
                    "layers": [base_layer.digest, deps_layer.digest, app_layer.digest],
                    "debian": facts.debian_version,
                    "python3": facts.python_version,
                    "distributions": dists,
                }
                log(f"{name}: {repository}:{tag} {digest[:19]} -> {out / (name + '.tar')}")
            record["seconds"] = {
                "bases": {k: round(v, 1) for k, v in base_seconds.items()},
                "dependencies": {k: round(v, 1) for k, v in deps_seconds.items()},
                "top_layers": round(app_seconds, 1),
                "archives": round(time.monotonic() - app_start - app_seconds, 1),
                "total": round(time.monotonic() - start, 1),
            }
            (out / "build.json").write_text(json.dumps(record, indent=2) + "\n")
        prune(images, KEEP_BUILDS, image_key)
        prune(images / "base", KEEP_BASES, base_key)
        prune(images / "deps", KEEP_BASES, deps_key)
        log(f"built in {time.monotonic() - start:.0f}s")
    print(out)


if __name__ == "__main__":
    main()
