"""``robustsnn report``: a self-contained HTML file, a Markdown file whose links resolve,
missing inputs named instead of crashing, diagnostics' warnings in both outputs."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixtures import EVAL_COMMAND, NEW_STAGES, OLD_STAGES, TRAIN_COMMAND, cached_run, copy_run, write_pipeline

import robustsnn.data
from robustsnn.data.errors import DataNotFoundError
from robustsnn.errors import UsageError
from robustsnn.report import collect, write_report
from robustsnn.report.collect import stage_accuracies

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return cached_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-out")
    paths = write_report(run, out / "r.html", out / "r.md")
    return paths, paths["html"].read_text(), paths["md"].read_text()


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


# ---------------------------------------------------------------------------- self-contained HTML
def test_html_is_self_contained(report):
    _, html, _ = report
    p = _parse(html)
    tags = [t for t, _ in p.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "object" not in tags
    css = "".join(p.styles)
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) >= 6  # accuracy, breakdown, spikes, sparsity, energy, memory, training
    for a in imgs:
        src = a["src"]
        assert src.startswith("data:image/png;base64,"), src[:80]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
        assert a.get("alt")
    for tag, attrs in p.tags:  # no attribute may point anywhere but inside the page
        for name, value in attrs.items():
            value = value or ""
            assert not re.match(r"\s*(https?:)?//", value), f"<{tag} {name}={value[:80]!r}>"
            if name == "href":
                assert value.startswith("#"), value
    # http(s):// may only appear in plain text (e.g. inside a recorded command), never in markup
    markup = re.sub(r">[^<]*<", "><", html)
    assert "http://" not in markup and "https://" not in markup


def test_summary_at_top_has_the_numbers(report, run):
    _, html, md = report
    res = json.loads((run / "eval-quick.json").read_text())
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert f"{res['clean_acc']:.1%}" in summary
    for r in res["results"]:
        assert f"eps = {r['eps']:g}" in summary and f"{r['robust_acc']:.1%}" in summary
    for label in ("Sparsity", "Energy saving vs dense SNN", "Energy saving vs ANN", "Memory saving vs dense", "Spike rate"):
        assert label in summary and label in md
    # sections after the summary, commands and configuration recorded
    for section in ("Robustness", "Spike activity", "Sparsity", "Energy and memory", "Training", "Commands and configuration"):
        assert f">{section}</h2>" in html and f"## {section}" in md
    assert EVAL_COMMAND in html and TRAIN_COMMAND in html
    assert EVAL_COMMAND in md and TRAIN_COMMAND in md
    assert '"recipe"' in html  # the checkpoint's config.json recipe


def test_markdown_links_point_to_files_that_exist(report):
    paths, _, md = report
    links = re.findall(r"\]\(([^)]+)\)", md)
    files = [l for l in links if not l.startswith("#")]
    assert files, "no figure linked"
    for link in files:
        assert not re.match(r"[a-z]+:", link), f"absolute link {link}"
        target = paths["md"].parent / link
        assert target.is_file() and target.read_bytes().startswith(PNG), link
    assert {Path(f).name for f in files} == {p.name for p in paths["images"]}
    assert all(p.parent == paths["md"].parent / "r_files" for p in paths["images"])


def test_default_paths_are_in_the_run_directory(run, tmp_path):
    r = copy_run(run, tmp_path / "run")
    paths = write_report(r)
    assert paths["html"] == r / "report.html" and paths["md"] == r / "report.md"
    md = paths["md"].read_text()
    assert "](report_files/" in md
    assert all(p.parent == r / "report_files" for p in paths["images"])
    # a second report finds no evaluation in its own outputs and leaves no stale figures
    (r / "report_files" / "stale.png").write_bytes(PNG)
    again = write_report(r)
    assert not (r / "report_files" / "stale.png").exists()
    assert [p.name for p in again["images"]] == [p.name for p in paths["images"]]


# ---------------------------------------------------------------------------- warnings
def test_warnings_appear_in_both_outputs_and_are_escaped(run, tmp_path):
    r = copy_run(run, tmp_path / "run")
    path = r / "eval-quick.json"
    res = json.loads(path.read_text())
    message = "TEST: accuracy rose with more PGD steps <b>not bold</b> (gradient masking)"
    res["warnings"] = res["warnings"] + [message]
    res["diagnostics"]["tripped"] = True
    res["diagnostics"]["checks"].append({"name": "more_steps", "tripped": True, "message": message, "value": 0.5,
                                         "threshold": 0.0, "eps": 0.1, "details": {}})
    path.write_text(json.dumps(res))
    paths = write_report(r)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert message in paths["warnings"]
    escaped = message.replace("<", "&lt;").replace(">", "&gt;")
    assert "<b>not bold</b>" not in html and escaped in html
    boxes = re.findall(r'<div class="warn"[^>]*>.*?</ul></div>', html, flags=re.S)
    assert boxes and any(escaped in b for b in boxes)
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert escaped in summary  # prominent: already in the summary
    assert "TRIPPED" in html
    quoted = [l for l in md.splitlines() if l.startswith(">") and message in l]
    assert quoted, "warning not in a Markdown block quote"
    assert "**WARNING" in md


# ---------------------------------------------------------------------------- partial runs
def _no_data(monkeypatch):
    def refuse(name, split="train", data_dir=None, download=True):
        raise DataNotFoundError(f"{name} {split}: not found (test)")

    monkeypatch.setattr(robustsnn.data, "load_dataset", refuse)


def test_partial_run_only_a_checkpoint_says_what_is_missing(run, tmp_path, monkeypatch):
    _no_data(monkeypatch)
    r = tmp_path / "plain"
    shutil.copytree(run / "snn" / "model", r / "model")  # `robustsnn train --out plain` without log.json
    paths = write_report(r)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert {"evaluation", "energy"} <= set(paths["missing"])
    for text in (html, md):
        assert "Not available" in text
        assert "no evaluation result" in text
        assert "robustsnn evaluate" in text  # what to run
        assert "test images are not available" in text  # energy: why
    # what can be had without data is there: sparsity, memory, the training history in the checkpoint
    assert "sparsity per layer" in html and "stored bytes" in html and "training curve" in html
    assert not (r / "efficiency.json").exists()
    for link in re.findall(r"\]\(([^)#][^)]*)\)", md):
        assert (paths["md"].parent / link).is_file()


def test_efficiency_is_measured_and_saved_when_missing(run, tmp_path, monkeypatch):
    from helpers import synthetic_fmnist

    monkeypatch.setattr(robustsnn.data, "load_dataset", lambda name, split="train", data_dir=None, download=True: synthetic_fmnist(48, seed=2))
    r = copy_run(run, tmp_path / "run")
    (r / "efficiency.json").unlink()
    paths = write_report(r, n=32)
    assert paths["efficiency"] == r / "efficiency.json"
    eff = json.loads((r / "efficiency.json").read_text())
    assert eff["images"] == 32 and eff["energy"]["savings"]["ann"] > 0 and eff["command"].startswith("robustsnn efficiency")
    html = paths["html"].read_text()
    assert "computed by robustsnn report" in html and "Energy saving vs ANN" in html
    # the next report reads the saved file instead of measuring again
    assert write_report(r)["efficiency"] is None


def test_evaluation_only_run(run, tmp_path):
    r = tmp_path / "evalonly"
    r.mkdir()
    shutil.copy(run / "eval-quick.json", r / "result.json")
    paths = write_report(r, compute=False)
    html = paths["html"].read_text()
    assert {"checkpoint", "efficiency", "training"} <= set(paths["missing"])
    assert "accuracy against eps" in html and "Not available" in html


def test_unreadable_files_are_skipped_and_named(run, tmp_path):
    r = copy_run(run, tmp_path / "run")
    (r / "broken.json").write_text("{not json")
    (r / "old-eval.json").write_text(json.dumps({"format": "robustsnn-eval", "preset": "quick"}))
    (r / ".hidden").mkdir()
    (r / ".hidden" / "x.json").write_text("{")
    paths = write_report(r)
    problems = " ".join(paths["problems"])
    assert "broken.json" in problems and "old-eval.json" in problems and ".hidden" not in problems
    assert "broken.json" in paths["html"].read_text()


def test_final_model_is_run_dir_final_else_the_newest_snn(run, tmp_path):
    r = tmp_path / "stages"
    for stage in ("ann", "pruned", "snn_finetune"):
        shutil.copytree(run / "snn" / "model", r / stage / "model")
    cfg = r / "ann" / "model" / "config.json"
    meta = json.loads(cfg.read_text())
    meta["model"]["kind"] = "ann"
    cfg.write_text(json.dumps(meta))  # newest file, but an ANN
    import os
    import time

    now = time.time()
    os.utime(r / "pruned" / "model" / "config.json", (now - 100, now - 100))
    os.utime(r / "snn_finetune" / "model" / "config.json", (now - 10, now - 10))
    os.utime(r / "ann" / "model" / "config.json", (now, now))
    for p in ("pruned", "snn_finetune", "ann"):
        os.utime(r / p / "model" / "weights.safetensors", (now - 200, now - 200))
    data = collect(r, compute=False)
    assert data.final.rel == "snn_finetune/model" and "SNN" in data.final_reason
    (r / "final").symlink_to("pruned/model")
    data = collect(r, compute=False)
    assert data.final.rel == "pruned/model" and "final" in data.final_reason
    assert len(data.checkpoints) == 3  # the symlink is not a fourth checkpoint


# ---------------------------------------------------------------------------- per-stage accuracy
def _section(html: str, sid: str) -> str:
    return html.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]


def _orange_pixels(png: bytes) -> int:
    """Pixels of the robust bars' colour (#ef6c00) in a figure."""
    import io

    import numpy as np
    from matplotlib.image import imread

    rgb = imread(io.BytesIO(png))[..., :3]
    return int((np.abs(rgb - np.array([0xEF, 0x6C, 0x00]) / 255).max(axis=-1) < 0.08).sum())


def test_per_stage_accuracy_table_and_plot_in_both_outputs(run, tmp_path, report):
    assert 'id="stages"' not in report[1] and "Per-stage accuracy" not in report[2]  # not a pipeline run: no section
    r = copy_run(run, tmp_path / "run")
    write_pipeline(r, NEW_STAGES)
    paths = write_report(r)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    sec = _section(html, "stages")
    assert ">Per-stage accuracy</h2>" in sec
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", sec)
    rows = [cells[i:i + 6] for i in range(0, len(cells), 6)]
    assert [row[:5] for row in rows] == [
        ["robust ANN", "81.5%", "62.0%", "200", ""],  # the accuracy record wins over the stage's test_acc (81.0 %)
        ["pruned ANN", "79.0%", "58.5%", "200", "-2.5 / -3.5 pts"],
        ["converted SNN (before finetuning)", "47.0%", "30.5%", "200", "-32.0 / -28.0 pts"],
        ["finetuned SNN", "60.5%", "44.0%", "200", "+13.5 / +13.5 pts"],
    ]
    assert "robust (preset quick, eps 0.1)" in sec and "same first 200 test images" in sec
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', sec)
    assert len(imgs) == 1 and "each pipeline stage" in imgs[0][1]
    png_new = base64.b64decode(imgs[0][0])
    md_sec = md.split("## Per-stage accuracy", 1)[1].split("\n## ", 1)[0]
    assert "| converted SNN (before finetuning) | **47.0%** | **30.5%** | 200 | -32.0 / -28.0 pts |" in md_sec
    link = re.findall(r"\]\(([^)]+stage-accuracy\.png)\)", md_sec)
    assert link and (paths["md"].parent / link[0]).read_bytes() == png_new
    # old records: clean only; the robust bars are gone (only the legend's swatch keeps the colour)
    write_pipeline(r, OLD_STAGES)
    old = write_report(r)["html"].read_text()
    png_old = base64.b64decode(re.findall(r'<img src="data:image/png;base64,([^"]+)"', _section(old, "stages"))[0])
    assert _orange_pixels(png_new) > 10 * max(1, _orange_pixels(png_old))


def test_per_stage_accuracy_from_an_older_pipeline_json(run, tmp_path):
    r = copy_run(run, tmp_path / "run")
    write_pipeline(r, OLD_STAGES)
    data = collect(r, compute=False)
    assert [(x["stage"], x["clean"], x["robust"], x["n"]) for x in data.stages] == [
        ("ann", 0.762, None, None), ("convert", 0.454, None, 1000), ("finetune", 0.644, None, None)]  # prune recorded nothing
    # a stage's own training log fills the gap, with its number of test images
    (r / "prune").mkdir()
    (r / "prune" / "log.json").write_text(json.dumps({"history": [{"epoch": 1, "test_acc": 0.5},
                                                                  {"epoch": 2, "test_acc": 0.7, "test_images": 500}]}))
    paths = write_report(r)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", _section(html, "stages"))
    assert [cells[i:i + 6] for i in range(0, len(cells), 6)][1] == ["pruned ANN", "70.0%", "n/a", "500", "-6.2 pts", "training log prune/log.json"]
    for text in (html, md):
        assert "No robust accuracy recorded for: robust ANN, pruned ANN, converted SNN (before finetuning), finetuned SNN" in text
    assert "| robust ANN | **76.2%** | *n/a* | *?* |" in md


def test_stage_accuracies_labels_and_bad_records():
    problems: list[str] = []
    pipe = {"stages": [
        {"name": "baseline", "status": "done", "test_acc": 0.8, "accuracy": {"clean": 7.5, "robust": 0.5}},  # not a fraction
        {"name": "convert", "status": "running", "accuracy": {"clean": 0.4, "robust": 0.2, "n": 10}},  # unfinished
        {"name": "evaluate", "status": "done", "clean_acc": 0.9},
    ]}
    rows = stage_accuracies(pipe, [], problems)
    assert [(x["label"], x["clean"], x["robust"], x["source"]) for x in rows] == [("end-to-end SNN", 0.8, None, "pipeline.json test_acc")]
    assert len(problems) == 1 and "baseline" in problems[0] and "unexpected layout" in problems[0]
    assert stage_accuracies(None) == [] and stage_accuracies({"stages": []}) == []
    rows = stage_accuracies({"stages": [{"name": "finetune", "accuracy": {"clean": 0.6, "robust": None, "n": 50, "preset": "quick", "eps": 0.1}}]})
    assert rows[0]["robust"] is None and rows[0]["n"] == 50 and rows[0]["eps"] == 0.1


# ---------------------------------------------------------------------------- errors and CLI
def test_bad_run_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        write_report(tmp_path / "nope")
    f = tmp_path / "file.json"
    f.write_text("{}")
    with pytest.raises(UsageError, match="not a run directory"):
        write_report(f)
    with pytest.raises(UsageError, match="no robustsnn output"):
        write_report(tmp_path)
    with pytest.raises(UsageError, match="--n"):
        write_report(tmp_path, n=0)
    with pytest.raises(UsageError) as err:
        write_report(tmp_path / "nope")
    assert "\n" not in str(err.value)


def _cli(monkeypatch, capsys, *args):
    from robustsnn import cli
    from robustsnn.cli import report as report_cli

    if not any(c.name == "report" for c in cli.app.registered_commands):
        report_cli.register(cli.app)
    monkeypatch.setattr(sys, "argv", ["robustsnn", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_report(run, tmp_path, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "report", run, "--html", tmp_path / "a.html", "--md", tmp_path / "a.md", "--n", "16")
    assert code == 0, err
    assert (tmp_path / "a.html").is_file() and (tmp_path / "a.md").is_file() and (tmp_path / "a_files").is_dir()
    assert "written" in out
    code, _, err = _cli(monkeypatch, capsys, "report", tmp_path / "missing")
    lines = [l for l in err.strip().splitlines() if l]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "does not exist" in lines[0]


def test_plain_train_run_and_damaged_efficiency(run, tmp_path, monkeypatch):
    _no_data(monkeypatch)
    r = tmp_path / "demo"  # what `robustsnn train --out demo` leaves: demo/model + demo/log.json
    shutil.copytree(run / "snn" / "model", r / "model")
    shutil.copy(run / "snn" / "log.json", r / "log.json")
    (r / "efficiency.json").write_text(json.dumps({"energy": {"oops": 1}, "memory": {}, "ops": {}}))
    (r / "pipeline.json").write_text(json.dumps({"stages": ["not a dict", {"name": "train", "status": "done"}], "config": None}))
    data = collect(r, compute=False)
    assert [g.stage for g in data.logs] == ["demo"]  # one stage: the log and the checkpoint history are the same run
    paths = write_report(r)
    html = paths["html"].read_text()
    assert "could not be built" in html and any("Summary" in p or "Energy" in p for p in paths["problems"])
    assert "Training" in html and "training curve of demo" in html
