"""User-facing text speaks of the toolkit only: no issue numbers, targets met, commit hashes or words about
how the work was organised, in anything tracked outside tests/ (code, help, docstrings, docs, results,
scripts, notebooks and their text outputs)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PROCESS_WORDS = re.compile(r"issue\s*#?\d|this issue|\btarget\b[^\n]*\bmet\b|parent commit|<!-- section|"
                           r"shared 2-core|the shared machine|\bcommit [0-9a-f]{7,}\b", re.IGNORECASE)
BINARY = {".png", ".pdf", ".pt", ".npz", ".npy", ".gz", ".zip"}


def _tracked():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted(p for p in listed.split() if not p.startswith("tests/") and Path(p).suffix not in BINARY)


def _text(path):
    """The text a reader sees: a notebook's cell sources and text outputs (not its embedded images)."""
    raw = (ROOT / path).read_text(errors="replace")
    if not path.endswith(".ipynb"):
        return raw
    parts = []
    for cell in json.loads(raw)["cells"]:
        parts.append("".join(cell["source"]))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html"):
                parts.append("".join(output.get("data", {}).get(kind, "")))
    return "\n".join(parts)


def test_the_pattern_catches_process_words():
    for text in ("The protocol study (issue 5)", "target 5x: met", "(parent commit 5a59e92)",
                 "<!-- section: notebooks -->", "on the shared 2-core machine", "This issue made it faster"):
        assert PROCESS_WORDS.search(text), text
    assert not PROCESS_WORDS.search("the target of the fit; metrics; an equivalent commitment")


@pytest.mark.parametrize("path", _tracked())
def test_no_process_words(path):
    found = [m.group(0) for m in PROCESS_WORDS.finditer(_text(path))]
    assert not found, f"{path}: {found}"
