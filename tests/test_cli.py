"""The command line: one-line errors, config files with flag overrides, train + info."""


from helpers import run_cli


run = run_cli


def _one_line_error(code, err):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_unknown_model_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "train", "--model", "nosuchnet", "--train-subset", "8", "--out", tmp_path)
    assert "cnn" in _one_line_error(code, err)


def test_unknown_dataset_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "train", "--dataset", "imagenet-1k", "--out", tmp_path)
    assert "fashion-mnist" in _one_line_error(code, err)


def test_missing_data_is_one_line_with_the_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ROBUSTSNN_DATA", str(tmp_path / "empty"))
    code, _, err = run(monkeypatch, capsys, "train", "--dataset", "cifar10", "--data-dir", tmp_path, "--out", tmp_path / "o")
    line = _one_line_error(code, err)
    assert "cifar" in line.lower() and ("--data-dir" in line or "ROBUSTSNN_DATA" in line)


def test_epsilon_above_one_is_a_unit_mistake(monkeypatch, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("objective: natural\nobjective_params: {eps: 8}\n")
    code, _, err = run(monkeypatch, capsys, "train", "--config", cfg, "--out", tmp_path / "o")
    assert "255" in _one_line_error(code, err)


def test_unreadable_checkpoint_is_one_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "x").mkdir()
    code, _, err = run(monkeypatch, capsys, "info", tmp_path / "x")
    assert "not a robustsnn checkpoint" in _one_line_error(code, err)


def test_unknown_config_key_is_refused(monkeypatch, capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('modle = "cnn"\n')
    code, _, err = run(monkeypatch, capsys, "train", "--config", cfg)
    assert "modle" in _one_line_error(code, err)


def test_config_file_with_flag_override_then_info(monkeypatch, capsys, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("time_steps: 2\nwidth: 0.25\ntrain_subset: 64\ntest_subset: 32\nbatch_size: 32\nseed: 1\nneuron: dlif\n")
    code, out, err = run(monkeypatch, capsys, "train", "--config", cfg, "--seed", "7", "--out", tmp_path / "r", "--no-progress",
                         "--grad-clip", "1e-4")
    assert code == 0, err
    assert "test accuracy" in out
    # without the live bar each epoch still gets its line, with the gradient norms when clipping
    assert "epoch 1: loss" in out and "2 of 2 steps clipped" in out
    from robustsnn import checkpoint

    meta = checkpoint.read_meta(tmp_path / "r" / "model")
    assert meta["recipe"]["seed"] == 7 and meta["model"]["time_steps"] == 2 and meta["recipe"]["grad_clip"] == 1e-4
    assert meta["model"]["neuron"]["kind"] == "dlif"
    code, out, err = run(monkeypatch, capsys, "info", tmp_path / "r" / "model")
    assert code == 0, err
    assert "dlif" in out and "DLIF gain" in out and "T=2" in out


def test_every_shipped_config_is_valid():
    """Each training config under configs/ parses, names only known options and builds its objective
    (the pipeline configs: tests/test_configs.py)."""
    from pathlib import Path

    from robustsnn.cli.config_file import merge_options, read_config
    from robustsnn.cli.train import TRAIN_DEFAULTS, objective_params
    from robustsnn.data import dataset_info
    from robustsnn.models import available
    from robustsnn.train import make_objective

    root = Path(__file__).parents[1] / "configs"
    files = sorted(f for f in root.rglob("*.yaml") if "pipeline" not in f.relative_to(root).parts)
    assert len(files) >= 14 + 16
    for f in files:
        o = merge_options(TRAIN_DEFAULTS, read_config(f), {})
        assert o["model"] in available(), f
        dataset_info(o["dataset"])
        make_objective(o["objective"], **objective_params(o))
