"""Build the sdist and wheel, then check them as PyPI will see them (.ci/run and ``nox -s build``).

    python .ci/check_dist.py            # needs build and twine (the dev dependency group)

- ``python -m build`` makes both from a clean copy of the tree, into a temporary directory;
- ``twine check --strict`` renders the README as PyPI will and refuses any warning;
- the wheel ships ``billingos/py.typed`` and the LICENSE, its metadata says ``License-Expression: MIT``
  and names the project's URLs, and the sdist carries the LICENSE too.

Exit status 0 when all of it holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URLS = ("Homepage", "Documentation", "Repository", "Issues", "Changelog")


def problems_of(wheel: Path, sdist: Path) -> list[str]:
    """What is wrong with the two distributions (an empty list: nothing)."""
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(metadata_name).decode())
    if "billingos/py.typed" not in names:
        problems.append(f"{wheel.name}: no billingos/py.typed")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append(f"{wheel.name}: no LICENSE in .dist-info/licenses/")
    if metadata["License-Expression"] != "MIT":
        problems.append(f"{wheel.name}: License-Expression is {metadata['License-Expression']!r}, not 'MIT'")
    labels = {url.split(",")[0].strip() for url in metadata.get_all("Project-URL") or []}
    if missing := [label for label in URLS if label not in labels]:
        problems.append(f"{wheel.name}: no Project-URL for {', '.join(missing)}")
    with tarfile.open(sdist) as tf:
        if not any(name.endswith("/LICENSE") for name in tf.getnames()):
            problems.append(f"{sdist.name}: no LICENSE")
    return problems


def main() -> int:
    """Build, twine check, inspect; 0 when every check passed."""
    with tempfile.TemporaryDirectory() as out:
        build = [sys.executable, "-m", "build", "--outdir", out, str(ROOT)]
        subprocess.run(build, check=True)  # noqa: S603 (our own interpreter and tree)
        dists = sorted(Path(out).iterdir())
        twine = [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)]
        subprocess.run(twine, check=True)  # noqa: S603 (our own interpreter and files)
        wheel = next(p for p in dists if p.suffix == ".whl")
        sdist = next(p for p in dists if p.name.endswith(".tar.gz"))
        problems = problems_of(wheel, sdist)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{wheel.name} and {sdist.name}: built, twine check --strict passed, LICENSE and URLs in place")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
