"""The HTML report in headless Chromium: it renders without console errors, shows every panel
(or, when data is absent, the note saying what to ask for), and the method switcher recolours
the tokens with the chosen method's scores. Screenshots go to test-artifacts/; with
SEQLENS_UPDATE_DOCS=1 the demo model's report also replaces docs/report.png.

Chromium is driven by Selenium through the system's chromedriver. Chromium and chromedriver
come from the Debian packages ``chromium`` and ``chromium-driver``; the fixture installs them
when it can (root + apt-get) and skips otherwise. Nothing is downloaded at run time: both paths
are given to Selenium, so Selenium Manager (which would fetch drivers) never runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait
from seqlens_client import Client, Explanation, Method, StateOptions, Target

from tests.factories import export_tiny
from tests.unit.test_sdk_report import feature_explanation, token_explanation

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
PANELS = ["attribution", "prediction", "prefix", "norms", "gates", "saturation", "faithfulness", "timings", "units"]
HANG_GUARD = 300.0  # seconds: detects a report that never renders; what is judged is the condition


def _tools() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _install() -> str:
    """Try apt-get; returns why it could not, or ''."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "apt-get failed"
    return ""


def _version(binary: str) -> str:
    """'Chromium 138.0.7204.92 built on ...' / 'ChromeDriver 138.0.7204.92 (...)' -> '138.0.7204.92'."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    return next(w for w in out.split() if w[:1].isdigit() and "." in w)


class Browser:
    """The Selenium driver plus the few helpers the tests share."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def click(self, css: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def browser_log(self) -> list[dict[str, Any]]:
        """The console entries since the last call (chromedriver's log endpoint drains them)."""
        return list(self.driver.get_log("browser"))

    def resize(self, height: int) -> None:
        self.driver.set_window_size(1400, height)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), path

    def wait_rendered(self) -> None:
        """Until the report's script says it has drawn every panel."""
        try:
            WebDriverWait(self.driver, HANG_GUARD, poll_frequency=0.05).until(
                lambda d: d.execute_script("return document.body.getAttribute('data-rendered')") == "true")
        except TimeoutException:
            pytest.fail(f"report did not render; console: {self.browser_log()}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    tools = _tools()
    if tools is None:
        why = _install()
        tools = _tools()
        if tools is None:
            pytest.skip(f"chromium/chromedriver not installed and could not be installed ({why}): "
                        "apt-get install chromium chromium-driver")
    chromium, driver_bin = tools
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    # A throwaway profile: no state from (or into) a user's own Chromium.
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # should Selenium Manager ever run, it may not download
        mp.delenv("SE_CHROMEDRIVER", raising=False)  # would replace the driver path given here
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_bin))
    try:
        # The session runs the system's binaries, not something fetched for it.
        caps = driver.capabilities
        assert caps["chrome"]["chromedriverVersion"].split()[0] == _version(driver_bin)
        assert caps["browserVersion"] == _version(chromium)
        wd = Browser(driver)
        wd.resize(1000)
        yield wd
    finally:
        driver.quit()


def _open(browser: Browser, exp: Explanation, path: Path) -> None:
    exp.to_html(path)
    browser.browser_log()  # drain entries from earlier pages
    browser.driver.get(path.as_uri())
    browser.wait_rendered()


def _errors(browser: Browser) -> list[dict[str, Any]]:
    return [e for e in browser.browser_log() if e.get("level") in ("SEVERE", "ERROR", "WARNING")]


_PANEL_STATE = """
return Array.from(document.querySelectorAll('section.panel')).map(function (s) {
  var b = s.querySelector('.body'), r = b.getBoundingClientRect();
  return {id: s.dataset.panel, svg: b.querySelectorAll('svg').length, notes: b.querySelectorAll('.note').length,
          marks: b.querySelectorAll('path.series, rect.bar, rect.cell, circle.dot, tr, span.tok').length,
          height: r.height, width: r.width};
});"""
_TOKENS = """
return Array.from(document.querySelectorAll('#panel-attribution span.tok')).map(function (t) {
  return [parseFloat(t.dataset.score), getComputedStyle(t).backgroundColor, t.textContent];
});"""


def _rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in css[css.index("(") + 1:css.index(")")].split(",")[:3])
    return r, g, b


def test_full_report_renders_every_panel_and_the_switcher_works(browser: Browser, tmp_path: Path) -> None:
    exp = token_explanation()
    _open(browser, exp, tmp_path / "report.html")
    # The log channel works (else "no errors" would prove nothing): a probe error shows up.
    browser.js("console.error('probe-error')")
    assert any("probe-error" in e["message"] for e in browser.browser_log())
    panels = {p["id"]: p for p in browser.js(_PANEL_STATE)}
    assert list(panels) == PANELS
    for pid, p in panels.items():
        assert p["notes"] == 0, f"panel {pid} shows a note although its data is present"
        assert p["marks"] > 0 and p["height"] > 40 and p["width"] > 200, f"panel {pid} is empty: {p}"
    assert panels["units"]["svg"] == 1  # one heatmap: only layer 0 returned hidden states

    # Tokens carry the first method's scores, red for positive and blue for negative.
    tokens = browser.js(_TOKENS)
    ig = exp.attributions["integrated_gradients"].scores
    assert [t[2] for t in tokens] == [exp.text[k.start:k.end] for k in exp.tokens]  # type: ignore[index]
    np.testing.assert_allclose([t[0] for t in tokens], ig, rtol=1e-6)
    for score, color, _ in tokens:
        r, _, b = _rgb(color)
        assert (r >= b) if score > 0 else (b >= r)

    browser.click('#method-switcher button[data-method="occlusion"]')
    assert browser.js("return document.body.dataset.method") == "occlusion"
    assert browser.js("return document.querySelector('#method-switcher button.active').dataset.method") == "occlusion"
    after = browser.js(_TOKENS)
    np.testing.assert_allclose([t[0] for t in after], exp.attributions["occlusion"].scores, rtol=1e-6)
    assert [t[1] for t in after] != [t[1] for t in tokens]
    # Faithfulness exists for integrated gradients only: the panel now says so.
    assert "No faithfulness scores for occlusion" in browser.js(
        "return document.querySelector('#panel-faithfulness .body').textContent")
    browser.click('#method-switcher button[data-method="integrated_gradients"]')
    assert browser.js("return document.querySelectorAll('#panel-faithfulness svg').length") == 1
    assert _errors(browser) == []

    height = int(browser.js("return document.documentElement.scrollHeight"))
    browser.resize(height + 140)
    shot = ARTIFACTS / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser.resize(1000)


def test_absent_data_gives_notes_not_errors(browser: Browser, tmp_path: Path) -> None:
    _open(browser, token_explanation(state=False, faithfulness=False), tmp_path / "bare.html")
    panels = {p["id"]: p for p in browser.js(_PANEL_STATE)}
    for pid in ("prefix", "norms", "gates", "units", "saturation", "faithfulness"):
        assert panels[pid]["notes"] == 1 and panels[pid]["svg"] == 0, pid
    for pid in ("attribution", "prediction", "timings"):
        assert panels[pid]["notes"] == 0, pid
    assert "state=True" in browser.js("return document.querySelector('#panel-norms .note').textContent")
    assert _errors(browser) == []


def test_feature_report_draws_the_series_and_feature_heatmap(browser: Browser, tmp_path: Path) -> None:
    exp = feature_explanation()
    _open(browser, exp, tmp_path / "features.html")
    panels = {p["id"]: p for p in browser.js(_PANEL_STATE)}
    assert panels["attribution"]["svg"] == 3  # series with coloured steps, feature heatmap, bars
    assert browser.js("return document.querySelectorAll('#panel-attribution rect.band').length") == exp.length
    assert browser.js("return document.querySelectorAll('#panel-attribution rect.cell').length") == exp.length * 3
    assert panels["prediction"]["svg"] == 1  # the forecast line
    assert panels["faithfulness"]["notes"] == 1
    # A GRU has gates r, z, n: one line each in the gate panel.
    assert browser.js("return document.querySelectorAll('#panel-gates path.series').length") == 3
    assert _errors(browser) == []
    browser.screenshot(ARTIFACTS / "report-features.png")


def test_demo_report_end_to_end(browser: Browser, demo_server: Any, tmp_path: Path) -> None:
    """The trained demo sentiment model, explained through the CLI against a real server, drawn
    in the browser: every panel has data, the switcher works, no console errors."""
    html = tmp_path / "demo.html"
    text = "A gorgeous, witty film, though the ending is a bit too neat."
    r = subprocess.run([sys.executable, "-m", "seqlens_client.cli", "explain", "sentiment", text,
                        "--method", "integrated_gradients", "--method", "occlusion", "--window", "1",
                        "--faithfulness", "--html", str(html), "--target-address", demo_server.target],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    browser.browser_log()
    browser.driver.get(html.as_uri())
    browser.wait_rendered()
    panels = {p["id"]: p for p in browser.js(_PANEL_STATE)}
    assert list(panels) == PANELS
    for pid, p in panels.items():
        assert p["notes"] == 0 and p["marks"] > 0, f"panel {pid}: {p}"
    before = browser.js(_TOKENS)
    assert "".join(t[2] for t in before) == "".join(text.split())  # every character of the text, coloured
    browser.click('#method-switcher button[data-method="occlusion"]')
    assert [t[1] for t in browser.js(_TOKENS)] != [t[1] for t in before]
    browser.click('#method-switcher button[data-method="integrated_gradients"]')
    assert _errors(browser) == []
    height = int(browser.js("return document.documentElement.scrollHeight"))
    browser.resize(height + 140)
    shot = ARTIFACTS / "report-demo.png"
    browser.screenshot(shot)
    if os.environ.get("SEQLENS_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "report.png")
    browser.resize(1000)


LIVE = {  # tiny seeded models of the shapes the report must handle
    "rnn": {"cell": "rnn_tanh", "task": "classification", "tokens": True},  # no gates
    "bitagger": {"cell": "gru", "task": "tagging", "tokens": True, "bidirectional": True, "layers": 2},
    "series": {"cell": "lstm", "task": "forecasting", "tokens": False},
}


def test_live_reports_of_every_model_shape(browser: Browser, start_server: Any, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for i, (name, spec) in enumerate(LIVE.items()):
        export_tiny(repo, name, seed=i, **spec)  # type: ignore[arg-type]
    srv = start_server(repo, poll_interval_s=0)
    text = "the film was not very good , but the plot was witty !"
    series = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    with Client(srv.target) as c:
        reports = {
            "rnn": c.explain("rnn", text, ["integrated_gradients", "saliency"], state=StateOptions(include_hidden=True),
                             faithfulness=True),
            "bitagger": c.explain("bitagger", text, "integrated_gradients", target=Target(timestep=5),
                                  state=StateOptions(include_hidden=True)),
            "series": c.explain("series", series, [Method("feature_ablation", ablation="per_feature")],
                                state=True, faithfulness=True),
        }
    # Notes only where data is absent: a plain RNN has no gates; the bidirectional tagger has no
    # prefix predictions and was explained without faithfulness; the series without hidden states.
    expected_notes = {"rnn": {"gates", "saturation"}, "bitagger": {"prefix", "faithfulness"}, "series": {"units"}}
    for name, exp in reports.items():
        _open(browser, exp, tmp_path / f"{name}.html")
        panels = {p["id"]: p for p in browser.js(_PANEL_STATE)}
        noted = {pid for pid, p in panels.items() if p["notes"]}
        assert noted == expected_notes[name], name
        for pid in set(PANELS) - noted:
            assert panels[pid]["marks"] > 0, (name, pid)
        assert _errors(browser) == [], name
    # The tagger's explained step is outlined; its backward layers have no prefix predictions.
    _open(browser, reports["bitagger"], tmp_path / "bitagger.html")
    assert browser.js("return document.querySelectorAll('#panel-attribution span.tok.target').length") == 1
    assert browser.js("return document.querySelectorAll('#panel-units svg').length") == 4  # 2 layers x 2 dirs
