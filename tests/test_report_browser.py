"""The HTML report in a real browser (headless Chromium, network off): every figure decodes,
the per-stage accuracy plot is laid out with a real size, nothing is fetched from anywhere,
no console error. Saves a full-page screenshot.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped without it.
Set ``ROBUSTSNN_ARTIFACTS=DIR`` to keep the screenshot and the report in DIR.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from cdp_client import Browser, find_chromium
from report_fixtures import NEW_STAGES, build_run, write_pipeline

from robustsnn.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()

#: Hard limit for the whole test: a browser that stops answering fails the test, never hangs the suite.
WATCHDOG_S = 300


@pytest.fixture(autouse=True)
def watchdog():
    """Fail (not hang) after WATCHDOG_S seconds; SIGALRM interrupts even a blocked socket read."""

    def expire(signum, frame):
        raise TimeoutError(f"browser test still running after {WATCHDOG_S} s: Chromium stopped answering")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(WATCHDOG_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
def test_report_renders_offline_in_chromium(tmp_path):
    t0 = time.monotonic()
    run = build_run(tmp_path / "run")
    write_pipeline(run, NEW_STAGES)  # a pipeline run: the report gets its per-stage accuracy section
    paths = write_report(run)
    html = paths["html"]
    # view a copy alone in an empty folder: the page must not need report_files/ or anything else
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(html, alone / "report.html")
    shot = tmp_path / "report.png"

    with Browser(CHROMIUM, timeout=30) as browser:
        page = browser.open((alone / "report.html").as_uri())
        state = page.evaluate(
            "({images: Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0,"
            " w: i.naturalWidth, src: i.currentSrc.slice(0, 30)})),"
            " title: document.title, h1: document.querySelector('h1') && document.querySelector('h1').textContent,"
            " sections: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),"
            " warnings: document.querySelectorAll('.warn').length,"
            " warnColor: document.querySelector('.warn') ? getComputedStyle(document.querySelector('.warn')).color : null,"
            " summaryRows: document.querySelectorAll('#summary table.summary tr').length,"
            " stagePlots: Array.from(document.querySelectorAll('#stages figure img')).map(i => {"
            "   const r = i.getBoundingClientRect();"
            "   return {ok: i.complete && i.naturalWidth > 0, w: r.width, h: r.height, alt: i.alt}; }),"
            " stageRows: document.querySelectorAll('#stages table tbody tr').length,"
            " ready: document.readyState})"
        )
        page.screenshot(shot)
        errors = page.errors()
        requests = page.requests()
        page.close()

    print(f"\nscreenshot: {shot}\nreport: {html}")
    keep = os.environ.get("ROBUSTSNN_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report-screenshot.png")
        shutil.copy(html, Path(keep) / "report.html")
        print(f"kept in {keep}")

    assert state["ready"] == "complete"
    assert len(state["images"]) >= 6
    bad = [i for i in state["images"] if not i["ok"]]
    assert not bad, f"images that did not load: {bad}"
    assert all(i["src"].startswith("data:image/png") for i in state["images"])
    assert errors == [], errors
    foreign = [u for u in requests if not (u.startswith("data:") or u == (alone / "report.html").as_uri())]
    assert foreign == [], f"the page fetched {foreign}"
    assert state["title"].startswith("robustsnn report") and state["h1"] == state["title"]
    assert state["sections"][0] == "Summary" and "Robustness" in state["sections"]
    assert state["summaryRows"] >= 8
    assert "Per-stage accuracy" in state["sections"]
    assert len(state["stagePlots"]) == 1, state["stagePlots"]
    plot = state["stagePlots"][0]
    assert plot["ok"] and plot["w"] > 100 and plot["h"] > 50, plot  # decoded and laid out with a real size
    assert state["stageRows"] == 4  # robust ANN, pruned ANN, converted SNN, finetuned SNN
    if paths["warnings"]:
        assert state["warnings"] >= 1 and state["warnColor"] in ("rgb(183, 28, 28)",)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    assert time.monotonic() - t0 < WATCHDOG_S
