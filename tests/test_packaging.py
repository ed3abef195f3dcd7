"""The wheel: what ``pip install .`` puts into site-packages (built from a copy of the tracked sources)."""

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel without network or build isolation from the tracked files (about 15 s)."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the tracked files")
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if not name.startswith(("results/", "tests/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", str(src), "-w", str(dist)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [path] = dist.glob("xnorpp-*.whl")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        metadata = Parser().parsestr(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    return names, metadata


def test_wheel_holds_the_library_and_its_cpp_only(wheel):
    names, _ = wheel
    tracked = subprocess.run(["git", "ls-files", "xnorpp_core"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    library = {n for n in tracked if n.endswith((".py", ".cpp"))}
    assert library <= set(names), sorted(library - set(names))
    assert "xnorpp_core/packed/csrc/packed_conv.cpp" in names
    assert "xnorpp_core/packed/csrc/amx_emulation.h" in names
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"xnorpp_core"}, top  # no generic top-level package such as studies or tests


def test_wheel_declares_what_the_library_imports(wheel):
    _, metadata = wheel
    requires = metadata.get_all("Requires-Dist")
    def normal(requirement):  # ("torch", {"<3", ">=2.4"}) for "torch<3,>=2.4" and "torch>=2.4,<3" alike
        text = requirement.split(";")[0].replace(" ", "")
        name = text[:next(i for i, c in enumerate(text) if c in "<>=!~")]
        return name, frozenset(text[len(name):].split(","))

    core = {normal(r) for r in requires if "extra ==" not in r}
    for needed in ("torch>=2.4,<3", "pandas>=2.1,<4", "pillow>=9.1", "ninja>=1.11,<2"):
        assert normal(needed) in core, (needed, core)
    extras = {normal(r)[0]: r.split("extra ==")[1].strip(" '\"") for r in requires if "extra ==" in r}
    for name in ("papermill", "ipykernel", "jupyterlab", "nbformat"):  # notebooks only
        assert extras.get(name) == "notebooks" and not any(c[0] == name for c in core), name


def test_installed_code_does_not_locate_the_repository():
    offenders = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in (ROOT / "xnorpp_core").rglob("*.py")
                 for line in p.read_text().splitlines()
                 if "__file__" in line and ("parents[" in line or ".parent.parent" in line)]
    assert offenders == []
