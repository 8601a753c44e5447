"""The benchmark runners work end to end on the CPU: a broken runner would waste a lent GPU's minutes."""

import json

import pytest

from benchmarks import data, harness, model, ops, report


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path)
    return tmp_path


def test_op_benchmark_writes_rows_profile_and_report(results_dir, capsys):
    ops.main(["--device", "cpu", "--quick", "--ops", "bias_act", "--profile"])
    (path,) = results_dir.glob("ops_*.json")
    assert path.name.startswith("ops_bias_act_quick_cpu_")  # not the file of a run of every op
    rows = json.loads(path.read_text())["rows"]
    assert [row["pass"] for row in rows] == ["fwd", "fwd+bwd"]
    for row in rows:
        assert row["extension_ms"] > 0 and row["reference_ms"] > 0 and row["compiled_ms"] > 0
        assert row["fraction_of_copy"] > 0 and row["fraction_of_same_size_copy"] > 0
        assert any("stylegan_cuda" in kernel["name"] for kernel in row["extension_kernels"])
    assert "of same-size copy" in capsys.readouterr().out
    assert "| bias_act | 8x128x64x64 | float32 | fwd |" in report.table(path)


def test_model_benchmark_writes_rows(results_dir):
    model.main(["--device", "cpu", "--quick", "--max-channels", "16", "--batch", "2", "--repeat", "1"])
    (path,) = results_dir.glob("model_*.json")
    assert path.name.startswith("model_b2_c16_quick_cpu_")  # not the file of a run at the defaults
    rows = json.loads(path.read_text())["rows"]
    assert {row["variant"] for row in rows} == {"extension fp32", "reference fp32", "seed fp32", "extension bf16",
                                                "reference bf16"}
    assert all(row["train_ms"] > 0 and row["forward_ms"] > 0 for row in rows)
    by_variant = {row["variant"]: row for row in rows}
    seed = by_variant["seed fp32"]
    for precision in ("fp32", "bf16"):  # each extension against the reference in its own precision, and the seed's
        extension, reference = by_variant[f"extension {precision}"], by_variant[f"reference {precision}"]
        assert reference["train_speedup"] == 1.0
        assert extension["train_speedup"] == reference["train_ms"] / extension["train_ms"]
        assert extension["train_seed_speedup"] == seed["train_ms"] / extension["train_ms"]


def test_op_benchmark_rejects_an_unknown_op(capsys):
    with pytest.raises(SystemExit):
        ops.main(["--device", "cpu", "--ops", "bias_act,nope"])
    assert "unknown op(s) nope" in capsys.readouterr().err


def test_op_benchmark_rejects_bad_arguments(results_dir, capsys, monkeypatch):
    for argv, message in ((["--ops", ","], "name at least one op"), (["--dtypes", "float33"], "unknown dtype"),
                          (["--dtypes", ","], "unknown dtype")):
        with pytest.raises(SystemExit):
            ops.main(["--device", "cpu", *argv])
        assert message in capsys.readouterr().err
    monkeypatch.setattr(ops.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):  # it ran nothing and said nothing before
        ops.main(["--device", "cuda"])
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not list(results_dir.iterdir())


def test_model_benchmark_rejects_bad_arguments(results_dir, capsys, monkeypatch):
    for argv, message in ((["--batch", "0"], "--batch must be >= 1"), (["--max-channels", "0"], "--max-channels"),
                          (["--repeat", "-1"], "--repeat"), (["--resolutions", "7"], "--resolutions"),
                          (["--resolutions", "4"], "--resolutions"), (["--resolutions", "x"], "--resolutions")):
        with pytest.raises(SystemExit):
            model.main(["--device", "cpu", *argv])
        assert message in capsys.readouterr().err
    monkeypatch.setattr(model.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        model.main(["--device", "cuda"])
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not list(results_dir.iterdir())


def test_report_names_a_missing_or_foreign_file(tmp_path, monkeypatch, capsys):
    foreign = tmp_path / "ops_other.json"
    foreign.write_text(json.dumps({"rows": []}))
    broken = tmp_path / "ops_broken.json"
    broken.write_text("{")
    for path, message in ((tmp_path / "missing.json", "cannot read it"), (foreign, "not an op benchmark results file"),
                          (broken, "not an op benchmark results file")):
        with pytest.raises(SystemExit, match=f"{path.name}: {message}"):
            report.main([str(path)])
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "empty")
    with pytest.raises(SystemExit, match="no op benchmark results"):
        report.main([])
    assert not capsys.readouterr().out


def test_data_benchmark_checks_its_options_and_keeps_the_default_file(results_dir, capsys):
    for argv, message in ((["--copies", "0"], "--copies must be >= 1"), (["--repeats", "-1"], "--repeats must be"),
                          (["--seconds", "nan"], "--seconds must be a finite number > 0"),
                          (["--seconds", "0"], "--seconds must be a finite number > 0")):
        with pytest.raises(SystemExit):
            data.main(argv)
        assert message in capsys.readouterr().err
    data.main(["--copies", "1", "--repeats", "1", "--seconds", "0.05"])
    (path,) = results_dir.iterdir()
    assert path.name.startswith("data_c1_r1_s0.05_cpu_")
    assert [row["n_worker"] for row in json.loads(path.read_text())["prepare"]["rows"]] == [1, 2]
