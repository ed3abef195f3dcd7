"""studies.model_size: the bytes of the model file, by kind, against the float32 real network."""

import pandas as pd
import pytest

from studies import model_size as study

SMALL = {"num_classes": 10, "input_size": 12, "pad_mode": "zero", "small_input": True}


def test_the_table_counts_the_bytes_of_each_file(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "KWARGS", SMALL)  # the same table for a small network
    table = study.size_table(0, tmp_path).set_index("method")
    files = {p.stem: p.stat().st_size for p in tmp_path.iterdir()}
    assert files == table.file_bytes.to_dict() and list(table.index) == list(study.SUPPORTED_METHODS)
    parts = table[["packed_weights", "scales", "real_layers", "int8_real_layers", "container"]].sum(axis=1)
    assert (parts == table.file_bytes).all() and (table.container > 0).all()
    assert (table.compression_vs_real == table.real_float32_bytes / table.file_bytes).all()
    # every binary layer of ResNet-18 has a multiple of 64 input channels: 32 float32 bits per packed bit
    assert (table.compression_binary_weights == 32.0).all()
    assert table.scales["direct"] == 0 and table.scales["case2"] > table.scales["case4"] > table.scales["case1"] > 0
    assert table.int8_real_layers.nunique() == 1 and table.real_layers.nunique() == 1


def test_a_run_writes_its_files(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "KWARGS", SMALL)
    study.main(["--out", str(tmp_path / "out"), "--seed", "1"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_size.csv", "model_size.md", "run.json"]
    assert list(pd.read_csv(tmp_path / "out" / "model_size.csv").columns) == study.COLUMNS


def test_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        study.main(["--seed", "x", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
