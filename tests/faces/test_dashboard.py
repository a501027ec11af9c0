"""The dashboard and the report, loaded in real headless Chromium at a wide and a narrow width.

Every section is there, no console error, no text of a chart leaves its chart or
overlaps another text (from the browser's bounding boxes), the canary's state shows
while one runs, the page updates itself without a reload, and promote and roll back
ask for a reason and show the answer. Screenshots go to ``test-screenshots/`` at the
top of the repository (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from evertrain.faces import ui
from evertrain.faces.report_html import write_report
from evertrain.faces.ui import views
from evertrain.serve.app import create_app
from evertrain.spec import load_spec
from evertrain.store import Store

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTHS = (1400, 800)
SHOTS = Path(__file__).resolve().parents[2] / "test-screenshots"
SECTION_IDS = [sid for sid, _ in views.SECTIONS]

# Every text of every chart: inside its SVG, and not overlapping another text of it; no chart
# blown up past its drawn size (its text would be too); every legend entry, caption and note
# inside its figure; nothing wider than the window.
LAYOUT_PROBLEMS = """
() => {
  const problems = [];
  const inside = (a, b, slack) => a.left >= b.left - slack && a.right <= b.right + slack &&
    a.top >= b.top - slack && a.bottom <= b.bottom + slack;
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5 &&
    Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
  const svgs = [...document.querySelectorAll('figure.chart svg')];
  for (const svg of svgs) {
    const box = svg.getBoundingClientRect();
    // a chart alone in its row must not swell to the page's width, its text with it
    const scale = box.width / svg.viewBox.baseVal.width;
    const name = svg.getAttribute('aria-label');
    if (scale > 1.3) problems.push(`${name} is drawn ${scale.toFixed(1)}x its size`);
    const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim())
      .map(t => [t.textContent, t.getBoundingClientRect()]);
    for (const [label, r] of texts) {
      const chart = svg.getAttribute('aria-label');
      if (!inside(r, box, 1)) problems.push(`"${label}" leaves its chart (${chart})`);
    }
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      if (overlap(texts[i][1], texts[j][1])) {
        problems.push(`"${texts[i][0]}" overlaps "${texts[j][0]}" (${svg.getAttribute('aria-label')})`);
      }
    }
  }
  for (const fig of document.querySelectorAll('figure.chart')) {
    const box = fig.getBoundingClientRect();
    for (const el of fig.querySelectorAll('figcaption, ul.legend li, p.note')) {
      const r = el.getBoundingClientRect();
      if (r.width && !inside(r, box, 1)) problems.push(`"${el.textContent.slice(0, 40)}" leaves its figure`);
      if (el.scrollWidth > el.clientWidth + 1) problems.push(`"${el.textContent.slice(0, 40)}" is cut`);
    }
    const items = [...fig.querySelectorAll('ul.legend li')]
      .map(li => [li.textContent, li.getBoundingClientRect()]);
    for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
      if (overlap(items[i][1], items[j][1])) {
        problems.push(`legend "${items[i][0]}" overlaps "${items[j][0]}"`);
      }
    }
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    const wide = document.documentElement.scrollWidth;
    problems.push(`the page is ${wide}px wide in a ${window.innerWidth}px window`);
  }
  return problems;
}
"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (make test installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def project(demo_run: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo's project (these tests change it), with a rollout live."""
    from evertrain.rollout import commands, state

    out, _ = demo_run
    copy = tmp_path_factory.mktemp("ui") / "project"
    shutil.copytree(out, copy)
    store = Store.for_project(copy).open()
    try:
        if state.get_active(store, "demo") is None:
            champion = store.registry.get_alias("demo", "champion")
            newest = store.registry.list_versions("demo")[-1].version
            version = newest if newest != champion else newest - 1
            commands.start_rollout(
                store, "demo", version, rollout_spec=load_spec(copy).rollout, actor="tester", reason="ui test"
            )
    finally:
        store.close()
    return copy


@contextlib.contextmanager
def _serving(project: Path) -> Iterator[tuple[str, Store]]:
    """The serving app of ``project`` with the dashboard mounted, under uvicorn on a loopback port."""
    store = Store.for_project(project).open()
    app = create_app(store, load_spec(project), admin_token="secret")
    ui.mount(app, store, root=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        store.close()


@pytest.fixture(scope="module")
def dashboard(project: Path) -> Iterator[tuple[str, Store]]:
    with _serving(project) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:  # Playwright gives the browser a fresh temporary profile
        launched = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, url: str, width: int) -> tuple[Any, Any, list[str]]:
    # The server has an admin token, so the page asks for it (HTTP Basic, any user name).
    context = browser.new_context(
        viewport={"width": width, "height": 900}, http_credentials={"username": "admin", "password": "secret"}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return context, page, errors


def _every_section_once(page: Any, ids: list[str]) -> None:
    for sid in ids:
        assert page.locator(f"section#{sid}").count() == 1, f"section {sid} is missing"


def _laid_out_without_errors(page: Any, errors: list[str], shot: str) -> None:
    """No layout problem, a screenshot in SHOTS, and no console error on ``page``."""
    problems = page.evaluate(LAYOUT_PROBLEMS)
    assert problems == [], problems
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / shot), full_page=True)
    assert errors == [], errors


@pytest.mark.parametrize("width", WIDTHS)
def test_dashboard_shows_every_section_laid_out_at_width(
    dashboard: tuple[str, Store], browser: Any, width: int
) -> None:
    from evertrain.rollout import state

    url, store = dashboard
    context, page, errors = _open(browser, f"{url}/", width)
    try:
        _every_section_once(page, ["models", *SECTION_IDS])
        assert page.locator("figure.chart svg").count() >= 5
        champion = store.registry.get_alias("demo", "champion")
        assert page.locator('.card[data-alias="champion"] .v').inner_text() == f"v{champion}"
        last = store.runs.list(model="demo", kind="decision")[-1].result or {}
        assert page.locator("#last-decision").inner_text() == last["action"]
        # the rollout that runs is shown as what it is, never as idle
        active = state.get_active(store, "demo")
        assert active is not None
        shown = page.locator("#rollout-state").inner_text()
        assert shown == f"{active.phase} v{active.version}", shown
        assert f"{active.share:.0%} of traffic" in page.locator(".rollout-state .d").inner_text()
        assert page.locator("#rollout-phase").inner_text().startswith(active.phase)
        # the failed runs are listed with their error, and versions open to their lineage
        page.locator(".only-failed").check()
        page.wait_for_function("document.querySelector('#runs .note').textContent.includes('failed runs')")
        first = page.locator("details.version").first
        first.locator("summary").click()
        assert first.locator("h4", has_text="Lineage").is_visible()
        _laid_out_without_errors(page, errors, f"dashboard-{width}.png")
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_report_is_one_offline_file_laid_out_at_width(project: Path, browser: Any, width: int) -> None:
    store = Store.for_project(project).open()
    try:
        target = project / "report.html"
        write_report(store, "demo", str(target))
    finally:
        store.close()
    text = target.read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    context, page, errors = _open(browser, target.as_uri(), width)
    try:
        _every_section_once(page, SECTION_IDS)
        assert page.locator("#drift .dcard").count() >= 1  # reference vs current per feature
        assert page.locator("#rollout-phase").count() == 1
        _laid_out_without_errors(page, errors, f"report-{width}.png")
    finally:
        context.close()


def test_dashboard_and_its_actions_need_the_admin_token(dashboard: tuple[str, Store]) -> None:
    url, store = dashboard
    champion = store.registry.get_alias("demo", "champion")
    assert httpx.get(f"{url}/ui/state").status_code == 401  # the audit trail is not for anyone
    assert httpx.get(f"{url}/", auth=("admin", "wrong")).status_code == 401
    assert httpx.get(f"{url}/ui/api/models/demo/sections").status_code == 401
    state = httpx.get(f"{url}/ui/state", headers={"Authorization": "Bearer secret"}).json()
    assert state["models"][0]["aliases"]["champion"] == champion
    refused = httpx.post(f"{url}/admin/models/demo/rollback", json={})
    assert refused.status_code == 401
    assert store.registry.get_alias("demo", "champion") == champion


def test_dashboard_updates_in_place_and_rolls_back_with_a_reason(
    dashboard: tuple[str, Store], browser: Any
) -> None:
    from evertrain.rollout import state

    url, store = dashboard
    context, page, errors = _open(browser, f"{url}/ui", 1400)
    try:
        page.evaluate("window.__same_page = true")
        # a run fails behind the page's back: it shows up without a reload
        run = store.runs.start("train", model="demo", params={"note": "from the ui test"})
        store.runs.finish(run.id, "failed", error="ValueError: the ui test broke this training")
        page.wait_for_function(
            "document.querySelector('#runs').textContent.includes('the ui test broke this training')",
            timeout=30_000,
        )
        assert page.evaluate("window.__same_page") is True
        # roll back from the page: it asks for a reason and the token, and shows the answer
        active = state.get_active(store, "demo")
        assert active is not None
        page.locator('.actions button[data-action="rollback"]').click()
        dialog = page.locator("dialog#confirm")
        assert dialog.is_visible()
        dialog.locator("textarea[name=reason]").fill("the ui test stops this rollout")
        dialog.locator("input[name=token]").fill("secret")
        dialog.locator("button[value=ok]").click()
        page.wait_for_function("document.querySelector('#confirm-result').textContent.startsWith('done')")
        assert state.get_active(store, "demo") is None
        # the rollout (a canary, or a watch after an early promotion) ends on the page too
        page.wait_for_function(
            "document.querySelector('#rollout-state').textContent.trim().startsWith('idle')", timeout=30_000
        )
        reasons = [e.reason for e in store.audit.entries(subject_prefix="model/demo/")]
        assert "the ui test stops this rollout" in reasons
        assert errors == [], errors
    finally:
        context.close()


# A price model (regression) replayed through the real controller on a simulated clock:
# district premiums flip halfway, the error rises, a retrain follows, its canary is judged
# on the labelled rows of each arm, promoted and watched.
REGRESSION_SPEC = """\
model:
  name: prices
  task: regression
  target: price
  features: [district, size_m2, rooms, age_years]
  trainer: {kind: sklearn, estimator: sklearn.linear_model.Ridge, params: {alpha: 1.0}, seed: 7}
data:
  source: {kind: parquet, path: "warehouse/*.parquet"}
  time_column: event_ts
  label_time_column: label_ts
  label_delay: 3600
training:
  window: {kind: sliding, rows: 800}
  holdout: {fraction: 0.3}
  executor: inline
serving:
  range_tolerance: null
monitoring:
  window_rows: 400
triggers:
  performance: {metric: mae, drop: 5.0, min_labels: 200}
policy:
  cooldown: 2h
  cycle_interval: 3600
gates:
  - {kind: threshold, metric: rmse, max: 60}
rollout:
  steps:
    - {share: 0.5, duration: 1h, min_samples: 100, max_duration: 4h}
  analysis: {min_labels: 80, quality_margin: 2.0, alpha: 0.05, require_labels: true}
"""
BATCH_ROWS = 400


@pytest.fixture(scope="module")
def regression_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evertrain.controller.clock import ManualClock
    from evertrain.controller.replay import BatchSource, Replay
    from evertrain.data.examples import make_price_stream
    from evertrain.data.timeline import START_EPOCH
    from evertrain.rollout import state

    project = tmp_path_factory.mktemp("ui-regression") / "project"
    project.mkdir()
    (project / "evertrain.yaml").write_text(REGRESSION_SPEC)
    rows = make_price_stream(BATCH_ROWS * 14, seed=3, change_at=BATCH_ROWS * 7)
    rows = rows.drop(columns=["ts", "label_ts"])  # the replay gives the rows their times
    clock = ManualClock(START_EPOCH)
    store = Store.for_project(project, clock=clock).open()
    try:
        Replay(
            store=store,
            spec=load_spec(project),
            project=project,
            source=BatchSource.from_frame(rows, BATCH_ROWS),
            clock=clock,
            start=START_EPOCH,
            batch_seconds=3600.0,
            label_delay_batches=1,
            warm_batches=2,
        ).run()
        assert state.history(store, "prices", 1), "the replay rolled nothing out: no arms to show"
    finally:
        store.close()
    return project


@pytest.fixture(scope="module")
def regression_dashboard(regression_project: Path) -> Iterator[tuple[str, Store]]:
    with _serving(regression_project) as served:
        yield served


def _champion_errors(project: Path, version: int) -> Any:
    """label - prediction of every labelled row the champion ``version`` served, oldest first, from the
    log files themselves (a part and the compacted part holding it count once)."""
    import pandas as pd

    logs = project / ".evertrain" / "logs"

    def read(kind: str) -> pd.DataFrame:
        parts = sorted((logs / kind / "model=prices").rglob("*.parquet"))
        return pd.concat([pd.read_parquet(p) for p in parts]).drop_duplicates("request_id", keep="last")

    served = read("predictions")
    served = served[(served["arm"] == "champion") & (served["model_version"] == version)]
    joined = served.merge(read("feedback")[["request_id", "label"]], on="request_id").sort_values("ts")
    return joined["label"] - joined["prediction"]


@pytest.mark.parametrize("width", WIDTHS)
def test_regression_dashboard_shows_residuals_and_errors_laid_out_at_width(
    regression_project: Path, regression_dashboard: tuple[str, Store], browser: Any, width: int
) -> None:
    url, store = regression_dashboard
    context, page, errors = _open(browser, f"{url}/", width)
    try:
        _every_section_once(page, ["models", *SECTION_IDS])
        # prediction quality: residuals, not a confusion matrix or a calibration curve
        quality = page.locator("#quality")
        champion = store.registry.get_alias("prices", "champion")
        residuals = quality.locator("figure.chart", has_text="Residuals (label - prediction)")
        assert residuals.count() == 1
        assert quality.locator("table.confusion").count() == 0
        assert quality.locator("figure.chart", has_text="Calibration").count() == 0
        said = re.search(r"champion \(v(\d+)\) on its newest (\d+) labelled", quality.inner_text())
        assert said is not None and int(said.group(1)) == champion
        n = int(said.group(2))
        bars = residuals.locator("svg rect title").all_text_contents()
        assert len(bars) >= 10 and sum(int(t.rsplit(": ", 1)[1]) for t in bars) == n  # every row counted
        numbers = re.search(r"MAE ([\d.]+) · RMSE ([\d.]+) · bias ([+-][\d.e-]+)", residuals.inner_text())
        assert numbers is not None
        res = _champion_errors(regression_project, champion).tail(n)
        assert len(res) == n
        assert float(numbers.group(1)) == pytest.approx(res.abs().mean(), rel=1e-3)
        assert float(numbers.group(2)) == pytest.approx((res**2).mean() ** 0.5, rel=1e-3)
        assert float(numbers.group(3)) == pytest.approx(res.mean(), rel=1e-3, abs=1e-3)
        # realized error per cycle, with the line above which a retrain is due (an error: higher is worse)
        perf = page.locator("#performance figure.chart", has_text="Realized mae per cycle")
        assert perf.count() == 1
        assert "retrain above (baseline + drop)" in perf.locator("ul.legend").inner_text()
        # each arm of the rollout by its mean absolute error with an interval, on labelled rows
        arms = page.locator("#rollout figure.chart", has_text="Each arm's MAE")
        assert arms.count() == 1
        dots = arms.locator("svg circle title").all_text_contents()  # "canary v2 (n=412): 11.2 [10.4, 12]"
        for arm in ("champion", "canary"):
            shown = [re.match(rf"{arm} v\d+ \(n=(\d+)\): [\d.]+ \[", t) for t in dots]
            assert any(m and int(m.group(1)) > 0 for m in shown), dots
        # the drift of numeric and categorical features, reference against current
        cards = page.locator("#drift .dcard")
        assert cards.count() == 4
        assert page.locator("#drift .dcard", has_text="district (categorical)").count() == 1
        _laid_out_without_errors(page, errors, f"dashboard-regression-{width}.png")
    finally:
        context.close()
