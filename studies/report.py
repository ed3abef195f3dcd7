"""Write every measured number a reader sees from the committed result files.

    python -m studies.report            # rewrite results/REPORT.md and the generated blocks
    python -m studies.report --check    # exit 1, naming each stale block, when any differs

Outputs: ``results/REPORT.md`` (the reproduction, artifact by artifact: the
paper's value, ours, the verdict, the machine, the file and command behind it,
and the rule behind each verdict) and the blocks between ``<!-- generated:NAME -->``
and ``<!-- /generated:NAME -->`` in README.md, results/README.md (the run records)
and docs/*.md (``xnorpp_core.report.generated.BLOCKS`` names them).
``scripts/main.sh`` ends with it, so the text follows the results it regenerated.
"""

import sys
from pathlib import Path

from studies._cli import fail, make_parser
from xnorpp_core.provenance import atomic_write
from xnorpp_core.report.findings import ReportError
from xnorpp_core.report.generated import render, stale

PROG = "python -m studies.report"
REPO = Path(__file__).resolve().parents[1]


def build_parser():
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming every generated block that differs from the result files")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="repository root holding README.md, docs/ and results/ (default: this checkout)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    repo = args.repo.resolve()
    if not (repo / "results").is_dir():
        fail(PROG, f"--repo {args.repo}: no results/ folder")
    try:
        if args.check:
            names = stale(repo)
            for name in names:
                print(f"stale: {name} (run {PROG})", file=sys.stderr)
            if names:
                raise SystemExit(1)
            print("every generated block matches the result files")
            return []
        written = render(repo, write=atomic_write)
    except ReportError as e:
        fail(PROG, str(e))
    for path in written:
        print(f"wrote {path.relative_to(repo)}")
    return written


if __name__ == "__main__":
    main()
