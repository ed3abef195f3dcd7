"""Every generated markdown file parses, with a real GitHub-flavoured markdown parser (markdown-it-py),
into tables whose rows have as many cells as their header; and the escaping helper behind them."""

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from xnorpp_core.provenance import markdown_cell, markdown_table

ROOT = Path(__file__).parents[1]
MD = MarkdownIt("commonmark").enable("table")  # GitHub-flavoured tables
_PIPE = re.compile(r"(?<!\\)\|")


def _generated_markdown():
    """Tracked .md files under results/ and tests/golden/ (everything there is generated)."""
    listed = subprocess.run(["git", "ls-files", "results", "tests/golden"], cwd=ROOT, capture_output=True,
                            text=True).stdout.split()
    return sorted(p for p in listed if p.endswith(".md"))


def tables(text):
    """``[(header cell count, [cell count of each body row])]`` of every table markdown-it finds in ``text``."""
    found = []
    for token in MD.parse(text):
        if token.type == "table_open":
            found.append([])
        elif token.type == "tr_open":
            found[-1].append(0)
        elif token.type in ("th_open", "td_open"):
            found[-1][-1] += 1
    return [(rows[0], rows[1:]) for rows in found]


def _rows_in_source(text):
    """Source lines that look like table rows (start and end with an unescaped pipe), not in code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("|") and line.rstrip().endswith("|"):
            lines.append(line)
    return lines


@pytest.mark.parametrize("path", _generated_markdown())
def test_generated_markdown_tables_parse(path):
    text = (ROOT / path).read_text()
    source_rows = _rows_in_source(text)
    found = tables(text)
    # every pipe row of the source belongs to a parsed table (header + delimiter + body rows)
    assert sum(2 + len(body) for _, body in found) == len(source_rows), f"{path}: rows outside any table"
    for header, body in found:
        assert all(cells == header for cells in body), f"{path}: a row with another number of cells"
    # and no row carries more unescaped pipes than its header (the parser would drop the extra cells)
    widths = {len(_PIPE.findall(line)) for line in source_rows}
    assert len(widths) <= len(found), f"{path}: rows with different numbers of cells"


def test_markdown_table_escapes_pipes_in_headers_and_cells():
    frame = pd.DataFrame({"L1 / mean|Y|": ["a|b", "c"], "n": [1.5, 2.0]})
    text = markdown_table(frame, floatfmt=".1f")
    [(header, body)] = tables(text)
    assert (header, body) == (2, [2, 2])
    html = MD.render(text)
    assert re.search(r"<th[^>]*>L1 / mean\|Y\|</th>", html) and re.search(r"<td[^>]*>a\|b</td>", html)
    assert markdown_cell("x|y\nz") == "x\\|y z"
