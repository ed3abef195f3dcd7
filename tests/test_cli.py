"""Every study's command line: ``--help`` works, every flag has help text, the module docstring (with the
list of output files) is shown, and one flag name per concept in every study."""

import argparse
import importlib
import re
from pathlib import Path

import pytest

from studies import _cli

# studies.report rewrites README.md, docs/ and results/REPORT.md of the checkout named by --repo; it has
# no output folder of its own.
NO_OUTPUT_FOLDER = {"report"}
STUDIES = sorted(p.stem for p in (Path(__file__).parents[1] / "studies").glob("*.py") if not p.stem.startswith("_"))

# concept -> (the flag names every study uses for it, names that must not appear anywhere)
CONCEPTS = {
    "output folder": ({"--out"}, {"--results", "--output", "--outdir", "--out-dir", "--output-dir"}),
    "batch size": ({"--batch-size"}, {"--batch", "--model-batch", "--bs", "--batch_size"}),
    "scale method": ({"--method", "--methods"}, {"--scale", "--scales", "--method-list"}),
    "fitting loss": ({"--loss", "--losses"}, {"--fit-loss", "--fit-losses"}),
    "device": ({"--device"}, {"--devices", "--backend-device"}),
    "CPU threads": ({"--threads"}, {"--num-threads", "--nthreads", "--thread"}),
    "seed": ({"--seed", "--seeds"}, {"--random-seed", "--rng-seed"}),
    "trials": ({"--trials"}, {"--n-trials", "--num-trials", "--ntrials"}),
}
# studies with a required input besides --out: the flag naming it
REQUIRED = {"export": "--checkpoint", "evaluate": "--model"}


def parser_of(name, monkeypatch, capsys):
    """The parser a study builds, caught when ``--help`` prints it; with the printed help."""
    module = importlib.import_module(f"studies.{name}")
    caught = []
    original = argparse.ArgumentParser.print_help

    def catch(self, file=None):
        caught.append(self)
        original(self, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", catch)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    return module, caught[-1], capsys.readouterr().out


@pytest.mark.parametrize("name", STUDIES)
def test_help_documents_every_flag_and_the_outputs(name, monkeypatch, capsys):
    module, parser, text = parser_of(name, monkeypatch, capsys)
    assert isinstance(parser, _cli.ArgumentParser)  # one-line errors, exit 2
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # internal flags are hidden from --help
            continue
        assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"
    rest = module.__doc__.strip().partition("\n\n")[2]
    assert rest and " ".join(rest.split()) in " ".join(text.split()), f"{name}: the docstring is not in --help"
    flags = {s for a in parser._actions for s in a.option_strings}
    assert ("--out" in flags) != (name in NO_OUTPUT_FOLDER), f"{name}: --out"


@pytest.mark.parametrize("name", STUDIES)
def test_one_flag_name_per_concept(name, monkeypatch, capsys):
    _, parser, _ = parser_of(name, monkeypatch, capsys)
    flags = {s for a in parser._actions for s in a.option_strings}
    for concept, (names, others) in CONCEPTS.items():
        assert not flags & others, f"{name}: {sorted(flags & others)} for the {concept}; use {sorted(names)}"
    for action in parser._actions:
        if "--device" in action.option_strings:
            assert tuple(action.choices) == _cli.DEVICE_CHOICES, f"{name}: --device {action.choices}"
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            continue
        # a list is never one comma-separated string: a default with a comma belongs to a nargs="+" flag
        assert not (isinstance(action.default, str) and "," in action.default), f"{name}: {action.option_strings}"


# flag -> (metavar, choices) shared by every study that has it
VOCABULARY = {"--out": ("DIR", None), "--threads": ("N", None), "--device": (None, _cli.DEVICE_CHOICES),
              "--loss": (None, ("l1", "l2")), "--losses": (None, ("l1", "l2")), "--padding": ("P", None)}


@pytest.mark.parametrize("name", STUDIES)
def test_one_vocabulary_and_each_flag_listed_once(name, monkeypatch, capsys):
    """The same metavar, choices and default meaning for a flag in every study; ``--help`` lists each flag once
    (a docstring does not repeat the flags' list)."""
    _, parser, text = parser_of(name, monkeypatch, capsys)
    for action in parser._actions:
        for flag in set(action.option_strings) & set(VOCABULARY):
            metavar, choices = VOCABULARY[flag]
            assert action.metavar == metavar, f"{name}: {flag} {action.metavar}"
            assert (tuple(action.choices) if action.choices else None) == choices, f"{name}: {flag}"
            if flag == "--device":
                assert "(default auto)" in action.help, f"{name}: --device {action.help}"
            if flag == "--threads":
                assert action.type in (int, _cli._positive_int), f"{name}: --threads {action.type}"
        for flag in action.option_strings if action.help != argparse.SUPPRESS else ():
            pattern = re.compile(r"  (?:-[\w-]+(?: [^\s,]+)?, )*" + re.escape(flag) + r"(?=[ ,]|$)")  # options list
            listed = [line for line in text.splitlines() if pattern.match(line)]
            assert len(listed) == 1, f"{name}: {flag} listed {len(listed)} times in --help"


def test_add_config_flags_requires_help_and_splits_lists():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Config:
        sizes: tuple = _cli.opt((1, 2), "sizes")
        name: str = _cli.opt("a", "name", choices=("a", "b"))

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        size: int = 1

    parser = _cli.add_config_flags(_cli.ArgumentParser(prog="p"), Config)
    config = _cli.config_from_args("p", Config, parser.parse_args(["--sizes", "3", "4", "5"]))
    assert config == Config(sizes=(3, 4, 5), name="a")
    with pytest.raises(ValueError, match="Undocumented.size has no help"):
        _cli.add_config_flags(_cli.ArgumentParser(prog="p"), Undocumented)


@pytest.mark.parametrize("name", sorted(set(STUDIES) - NO_OUTPUT_FOLDER))
@pytest.mark.parametrize("where", ["proc", "file"])
def test_unwritable_out_is_refused_before_any_work(name, where, tmp_path, capsys, monkeypatch):
    """``--out`` that cannot be created (under /proc, not writable even by root) or is an existing file:
    one line, exit 2, nothing written, before the study starts working."""
    module = importlib.import_module(f"studies.{name}")
    existing = tmp_path / "a_file"
    existing.write_text("keep")
    out = "/proc/xnorpp-no-such-folder/out" if where == "proc" else str(existing)
    argv = (["table1"] if name == "notebooks" else []) + ["--out", out]
    if name in REQUIRED:  # placeholders that are never read: --out is refused first
        argv += [REQUIRED[name], str(tmp_path / "never-read")]
    if name == "train":  # refused before any data is loaded
        monkeypatch.setattr("xnorpp_core.training.loop.datasets.digits_splits", lambda *a, **k: 1 / 0)
    with pytest.raises(SystemExit) as exit_:
        module.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "cannot write there" in err if where == "proc" else "exists and is not a folder" in err, err
    assert existing.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
