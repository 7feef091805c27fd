"""The HTML report in headless Chromium: it renders without console errors, shows every panel
(or, when data is absent, the note saying what to ask for), and the method switcher recolours
the tokens with the chosen method's scores. Screenshots go to test-artifacts/; with
SEQLENS_UPDATE_DOCS=1 the demo model's report also replaces docs/report.png.

Chromium is driven through chromedriver's W3C WebDriver protocol by the small stdlib client
below. Chromium and chromedriver come from the Debian packages ``chromium`` and
``chromium-driver``; the fixture installs them when it can (root + apt-get) and skips otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from seqlens_client import Client, Explanation, Method, StateOptions, Target

from tests.factories import export_tiny
from tests.unit.test_sdk_report import feature_explanation, token_explanation

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
PANELS = ["attribution", "prediction", "prefix", "norms", "gates", "saturation", "faithfulness", "timings", "units"]


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriver:
    """Just enough of the W3C WebDriver protocol (plus chromedriver's log endpoint)."""

    def __init__(self, url: str, chromium: str, profile: Path) -> None:
        self.url = url
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": [*FLAGS, f"--user-data-dir={profile}"]}}}}
        self.session = self._request("POST", "/session", caps)["sessionId"]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.read().decode()[:2000]}") from None

    def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        found = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return str(next(iter(found.values())))

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def browser_log(self) -> list[dict[str, Any]]:
        return list(self.cmd("POST", "/se/log", {"type": "browser"}))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self) -> None:
        self.cmd("DELETE", "")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    tools = _tools()
    if tools is None:
        why = _install()
        tools = _tools()
        if tools is None:
            pytest.skip(f"chromium/chromedriver not installed and could not be installed ({why}): "
                        "apt-get install chromium chromium-driver")
    chromium, driver_bin = tools
    port = _free_port()
    proc = subprocess.Popen([driver_bin, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/status", timeout=2) as r:
                    if json.loads(r.read())["value"]["ready"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("chromedriver did not become ready")
            time.sleep(0.1)
        wd = WebDriver(url, chromium, tmp_path_factory.mktemp("chromium-profile"))
        wd.cmd("POST", "/window/rect", {"width": 1400, "height": 1000})
        yield wd
        wd.quit()
    finally:
        proc.terminate()
        proc.wait(10)


def _open(browser: WebDriver, exp: Explanation, path: Path) -> None:
    exp.to_html(path)
    browser.browser_log()  # drain entries from earlier pages
    browser.get(path.as_uri())
    deadline = time.monotonic() + 20
    while browser.js("return document.body.getAttribute('data-rendered')") != "true":
        assert time.monotonic() < deadline, f"report did not render; console: {browser.browser_log()}"
        time.sleep(0.05)


def _errors(browser: WebDriver) -> list[dict[str, Any]]:
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


def test_full_report_renders_every_panel_and_the_switcher_works(browser: WebDriver, tmp_path: Path) -> None:
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
    browser.cmd("POST", "/window/rect", {"width": 1400, "height": height + 140})
    shot = ARTIFACTS / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser.cmd("POST", "/window/rect", {"width": 1400, "height": 1000})


def test_absent_data_gives_notes_not_errors(browser: WebDriver, tmp_path: Path) -> None:
    _open(browser, token_explanation(state=False, faithfulness=False), tmp_path / "bare.html")
    panels = {p["id"]: p for p in browser.js(_PANEL_STATE)}
    for pid in ("prefix", "norms", "gates", "units", "saturation", "faithfulness"):
        assert panels[pid]["notes"] == 1 and panels[pid]["svg"] == 0, pid
    for pid in ("attribution", "prediction", "timings"):
        assert panels[pid]["notes"] == 0, pid
    assert "state=True" in browser.js("return document.querySelector('#panel-norms .note').textContent")
    assert _errors(browser) == []


def test_feature_report_draws_the_series_and_feature_heatmap(browser: WebDriver, tmp_path: Path) -> None:
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


def test_demo_report_end_to_end(browser: WebDriver, demo_server: Any, tmp_path: Path) -> None:
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
    browser.get(html.as_uri())
    deadline = time.monotonic() + 20
    while browser.js("return document.body.getAttribute('data-rendered')") != "true":
        assert time.monotonic() < deadline
        time.sleep(0.05)
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
    browser.cmd("POST", "/window/rect", {"width": 1400, "height": height + 140})
    shot = ARTIFACTS / "report-demo.png"
    browser.screenshot(shot)
    if os.environ.get("SEQLENS_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "report.png")
    browser.cmd("POST", "/window/rect", {"width": 1400, "height": 1000})


LIVE = {  # tiny seeded models of the shapes the report must handle
    "rnn": {"cell": "rnn_tanh", "task": "classification", "tokens": True},  # no gates
    "bitagger": {"cell": "gru", "task": "tagging", "tokens": True, "bidirectional": True, "layers": 2},
    "series": {"cell": "lstm", "task": "forecasting", "tokens": False},
}


def test_live_reports_of_every_model_shape(browser: WebDriver, start_server: Any, tmp_path: Path) -> None:
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
