"""Writes crds/*.yaml, their copy in the Helm chart and docs/resources.md from the models.

python hack/gen_crds.py           # regenerate
python hack/gen_crds.py --check   # exit 1 if the committed files are stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paddock.models.docs import resources_markdown
from paddock.models.render import crd_files

ROOT = Path(__file__).resolve().parent.parent


def expected_files() -> dict[Path, str]:
    files = {}
    for name, text in crd_files().items():
        files[ROOT / "crds" / name] = text
        files[ROOT / "charts" / "paddock" / "crds" / name] = text
    files[ROOT / "docs" / "resources.md"] = resources_markdown()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args()
    stale = []
    for path, text in expected_files().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        names = ", ".join(map(str, stale))
        print(f"stale generated files: {names}; run `make crds` and commit them", file=sys.stderr)
        return 1
    if not args.check:
        print("wrote " + (", ".join(map(str, stale)) or "nothing (all current)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
