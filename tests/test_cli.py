"""Every study's command line: ``--help`` works, every flag has help text, the module docstring (with the
list of output files) is shown, and one flag name per concept in every study."""

import argparse
import importlib
import re
from pathlib import Path

import pytest

from studies import _cli
from xnorpp_core.limits import REPEATS, SEED, THREADS, ints

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
              "--loss": (None, ("l1", "l2")), "--losses": (None, ("l1", "l2")), "--padding": ("P", None),
              "--data": ("DATA", None), "--checkpoint": ("FILE", None), "--checkpoints": ("FILE", None),
              "--model": ("FILE", None), "--seed": ("N", None), "--seeds": ("N", None), "--repeats": ("N", None)}


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
                assert action.type.bounds == THREADS and action.help.startswith("torch CPU threads"), name
            if flag in ("--seed", "--seeds"):
                assert action.type.bounds == SEED, f"{name}: {flag} {action.type.bounds}"
            if flag == "--repeats":
                assert action.type.bounds == REPEATS, f"{name}: --repeats {action.type.bounds}"
            if flag in ("--checkpoint", "--seed"):  # one value; the plural flag takes several
                assert action.nargs is None, f"{name}: {flag} takes one value ({flag}s takes several)"
        for flag in action.option_strings if action.help != argparse.SUPPRESS else ():
            pattern = re.compile(r"  (?:-[\w-]+(?: [^\s,]+)?, )*" + re.escape(flag) + r"(?=[ ,]|$)")  # options list
            listed = [line for line in text.splitlines() if pattern.match(line)]
            assert len(listed) == 1, f"{name}: {flag} listed {len(listed)} times in --help"


def test_add_config_flags_requires_help_and_splits_lists():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Config:
        sizes: tuple = _cli.opt((1, 2), "sizes", bounds=ints(1, 9))
        name: str = _cli.opt("a", "name", choices=("a", "b"))

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        size: int = 1

    @dataclasses.dataclass(frozen=True)
    class Unbounded:
        size: int = _cli.opt(1, "size")

    parser = _cli.add_config_flags(_cli.ArgumentParser(prog="p"), Config)
    config = _cli.config_from_args("p", Config, parser.parse_args(["--sizes", "3", "4", "5"]))
    assert config == Config(sizes=(3, 4, 5), name="a")
    with pytest.raises(ValueError, match="Undocumented.size has no help"):
        _cli.add_config_flags(_cli.ArgumentParser(prog="p"), Undocumented)
    with pytest.raises(ValueError, match="Unbounded.size has no bounds"):
        _cli.add_config_flags(_cli.ArgumentParser(prog="p"), Unbounded)


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


def _parsers():
    """``{study: (parser, help text)}`` for every study."""
    found = {}

    class Caught(Exception):
        pass

    def catch(self, args=None, namespace=None):
        found["parser"] = self
        raise Caught

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        parsers = {}
        for name in STUDIES:
            with pytest.raises(Caught):
                importlib.import_module(f"studies.{name}").main([])
            parsers[name] = found.pop("parser")
    finally:
        argparse.ArgumentParser.parse_args = original
    return parsers


@pytest.fixture(scope="module")
def parsers():
    return _parsers()


def _numeric(parser):
    return [a for a in parser._actions if isinstance(a.type, _cli.bounded)]


def test_every_numeric_flag_is_bounded_and_one_flag_has_one_meaning(parsers):
    """No flag parses a bare ``int`` or ``float``; a numeric flag's metavar is N or X; a flag has the same metavar,
    bounds and opening words of help in every study that has it, and no help reads "(default )"."""
    seen = {}
    for name, parser in parsers.items():
        for action in parser._actions:
            flag = action.option_strings[-1] if action.option_strings else action.dest
            assert action.type not in (int, float), f"{name}: {flag} parses a number without bounds"
            assert "(default )" not in (action.help or "") and "(default: )" not in (action.help or ""), flag
            if isinstance(action.type, _cli.bounded):
                assert action.metavar == _cli.metavar_of(action.type.bounds), f"{name}: {flag} {action.metavar}"
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            meaning = (action.metavar, getattr(action.type, "bounds", None))
            first, where = seen.setdefault(flag, (meaning, name))
            assert meaning == first, f"{flag}: {meaning} in {name}, {first} in {where}"


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
TORCHRUN = {"--standalone", "--nproc_per_node"}  # torchrun's own flags, where a study runs it
OTHER_COMMAND = re.compile(r"python -m (studies\.\w+)((?: +[^\s`'\")]+)*)")


@pytest.mark.parametrize("name", STUDIES)
def test_help_and_messages_name_only_flags_that_exist(name, parsers):
    """Every ``--flag`` in a study's source (its help, docstring and messages) is one of its own flags, unless it
    follows ``python -m studies.OTHER`` on the same line and is one of that study's."""
    flags = {s for a in parsers[name]._actions for s in a.option_strings}
    flags |= {"--no-" + s[2:] for s in flags}  # BooleanOptionalAction's negative form
    source = (Path(__file__).parents[1] / "studies" / f"{name}.py").read_text()
    for number, line in enumerate(source.splitlines(), 1):
        others = set()
        for command in OTHER_COMMAND.finditer(line):
            other = command.group(1).split(".")[1]
            if other in parsers:
                others |= {f for f in FLAG.findall(command.group(2))
                           if f in {s for a in parsers[other]._actions for s in a.option_strings}}
        unknown = [f for f in FLAG.findall(line) if f not in flags | others | TORCHRUN]
        assert not unknown, f"studies/{name}.py:{number} names {unknown}, which {name} does not have: {line.strip()}"


def _bad_values(bounds, rng):
    """Values outside ``bounds`` (``xnorpp_core.limits.Bounds``), as command-line text: the non-numbers and
    non-finite ones, the neighbours of each end, and random ones far outside."""
    low, high = bounds.low, bounds.top
    values = ["nan", "inf", "-inf", "NaN", "abc", "", "1e400", "1,5"]
    if bounds.integer:
        values += [str(low - 1), str(high + 1), "1.5", "0x10", "1e3", str(rng.randrange(high + 1, 2 ** 130)),
                   str(-rng.randrange(1, 2 ** 70) + min(low, 0) - 1), str(2 ** 64)]
    else:
        values += [repr(low - 10 ** rng.uniform(-3, 6)), repr(high + 10 ** rng.uniform(-3, 300)), "-1e308", "1e308"]
        values += [repr(low)] * bounds.open_low + [repr(high)] * bounds.open_high
    return [v for v in values if v in ("1e308", "-1e308") and not bounds.contains(float(v)) or v not in ("1e308",
                                                                                                      "-1e308")]


# arguments a study needs before it parses a bad number: placeholders that are never read
PREFIX = {"notebooks": ["table1"], "export": ["--checkpoint", "never-read"], "evaluate": ["--model", "never-read"]}


@pytest.mark.parametrize("name", STUDIES)
def test_random_bad_numbers_exit_2_with_one_line_and_write_nothing(name, parsers, tmp_path, capsys, monkeypatch):
    """Every numeric flag of every study, fed values outside its bounds (not numbers, not finite, just outside
    either end, far outside): exit code 2, one line naming the flag, nothing written, before any work."""
    import random

    monkeypatch.chdir(tmp_path)  # a study that wrote into the working directory would show here too
    out = tmp_path / "out"
    rng = random.Random(name)
    checked = 0
    for action in _numeric(parsers[name]):
        flag = action.option_strings[-1]
        for value in _bad_values(action.type.bounds, rng):
            argv = PREFIX.get(name, []) + [f"{flag}={value}"] + (["--out", str(out)] if name != "report" else [])
            with pytest.raises(SystemExit) as exit_:
                importlib.import_module(f"studies.{name}").main(argv)
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and err.count("\n") == 1, (argv, err)
            assert f"{flag} must be" in err or flag in err, (argv, err)
            checked += 1
    assert not list(tmp_path.iterdir()), sorted(tmp_path.rglob("*"))
    assert checked or not _numeric(parsers[name]), name


def _configs():
    from studies import bench_reconstruction, bench_train, kernel_bench, model_size, speedup
    from xnorpp_core.deploy.tradeoff import DeployTradeoffConfig
    from xnorpp_core.deploy.whole_network import BenchInferenceConfig
    from xnorpp_core.reconstruction.fit import FitConfig
    from xnorpp_core.reconstruction.protocol import SweepConfig
    from xnorpp_core.reconstruction.table2 import ReconstructionConfig
    from xnorpp_core.reconstruction.trained import TrainedLayersConfig
    from xnorpp_core.training import TrainConfig

    return [TrainConfig, FitConfig, ReconstructionConfig, SweepConfig, TrainedLayersConfig, BenchInferenceConfig,
            DeployTradeoffConfig, kernel_bench.KernelBenchConfig, bench_train.BenchConfig,
            bench_reconstruction.BenchConfig, speedup.SpeedupConfig, model_size.ModelSizeConfig]


@pytest.mark.parametrize("config", _configs(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_configs_refuse_random_bad_numbers_in_python(config):
    """The same bounds hold for a config built in Python (a notebook, a script): each numeric field, given a
    value outside its bounds, is a ValueError naming the field."""
    import dataclasses
    import random

    rng = random.Random(config.__name__)
    fields = [f for f in dataclasses.fields(config) if "bounds" in f.metadata]
    assert fields, config
    for f in fields:
        bounds = f.metadata["bounds"]
        for text in _bad_values(bounds, rng):
            try:
                value = int(text) if bounds.integer else float(text)
            except ValueError:
                value = text  # not a number at all
            several = isinstance(_cli._default(f), tuple)
            with pytest.raises(ValueError, match=f"^{f.name} must be"):
                config(**{f.name: (value,) if several else value})
