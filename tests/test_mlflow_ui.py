"""The MLflow UI shows a real training run: a tiny training logs to a SQLite store, ``mlflow server``
serves it on 127.0.0.1, and headless Chromium (selenium) checks the experiment list, the run list,
the run's metrics (against the values MlflowClient reads) and the confusion-matrix figure.

Needs Debian's chromium and chromium-driver (``apt-get install chromium chromium-driver``): skipped
without them, failed without them when CI is set. ``AGELAB_UI_SCREENSHOTS=<folder>`` also writes the
run page and the confusion-matrix view there as mlflow_ui_run.png and mlflow_ui_confusion.png.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from agelab.training import train

from conftest import TINY, compose_config
from mlflow_ui_support import INSTALL_HINT, MlflowServer, chrome_driver, find_chromium, save_screenshot

EXPERIMENT = "agelab-ui"
RUN_NAME = "smlf_small-dex-synth-ui"
CONFUSION = "figures/confusion_matrix.png"
WAIT_S = 30  # the longest any page element may take to show up
# One epoch on a few faces; only the figures this test looks at (the others cost seconds to draw).
OVERRIDES = [
    *TINY, "trainer.max_epochs=1", "data.source.train_size=64", "data.source.val_size=32",
    "data.source.test_size=64", f"logger.experiment_name={EXPERIMENT}", f"logger.run_name={RUN_NAME}",
    *(f"++callbacks.{name}=null" for name in ("worst_predictions_figure", "learning_curves_figure",
                                               "mae_breakdown_figure", "best_checkpoint_artifact")),
]
# For the pictures only: a model that has learnt something, so the confusion matrix has a diagonal.
PICTURE_OVERRIDES = ["data.source.train_size=1500", "data.source.val_size=256", "data.source.test_size=512",
                     "trainer.max_epochs=6"]
SHOWN_METRICS = ("test/mae", "test/cs5", "val/mae")
SCREENSHOTS_ENV = "AGELAB_UI_SCREENSHOTS"
# True when an element whose own text is arguments[0] lies wholly in view: inside the window and not
# cut off by any clipping ancestor (such as a tree branch still folding open).
SHOWN_JS = """
const found = document.evaluate(`//*[normalize-space(text())='${arguments[0]}']`, document, null,
                                XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
for (let i = 0; i < found.snapshotLength; i++) {
  const box = found.snapshotItem(i).getBoundingClientRect();
  let shown = box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
  for (let a = found.snapshotItem(i).parentElement; shown && a; a = a.parentElement) {
    const style = getComputedStyle(a);
    if (style.overflowX !== 'visible' || style.overflowY !== 'visible') {
      const clip = a.getBoundingClientRect();
      shown = box.top >= clip.top - 1 && box.bottom <= clip.bottom + 1;
    }
  }
  if (shown) return true;
}
return false;
"""


@dataclass
class TrackedRun:
    root: Path
    experiment_id: str
    run_id: str
    metrics: dict[str, float]
    figures: list[str]  # artifact paths under figures/
    artifact_dir: Path  # where the run's file:// artifact URI points


@pytest.fixture(scope="module")
def browser_binaries():
    chromium, chromedriver = find_chromium()
    if chromium and chromedriver:
        return chromium, chromedriver
    missing = " and ".join(name for name, path in (("chromium", chromium), ("chromedriver", chromedriver)) if not path)
    message = f"{missing} not found; install Chromium and its driver with `{INSTALL_HINT}` (README, Tests)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def tracked_run(browser_binaries, tmp_path_factory) -> TrackedRun:
    root = tmp_path_factory.mktemp("mlflow_ui")
    train(compose_config(root, OVERRIDES + (PICTURE_OVERRIDES if os.environ.get(SCREENSHOTS_ENV) else [])))
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == RUN_NAME and run.info.status == "FINISHED"
    figures = [f.path for f in client.list_artifacts(run.info.run_id, "figures")]
    assert CONFUSION in figures  # the dex head predicts age groups, so the test logs their confusion
    artifact_dir = Path(unquote(urlparse(run.info.artifact_uri).path))
    return TrackedRun(root, experiment.experiment_id, run.info.run_id, run.data.metrics, figures, artifact_dir)


@pytest.fixture(scope="module")
def server(tracked_run):
    root = tracked_run.root
    server = MlflowServer(f"sqlite:///{root / 'mlflow.db'}", root / "mlruns", root / "mlflow_server.log")
    try:
        server.start(timeout_s=90)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(browser_binaries, server, tracked_run):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # selenium-manager: never fetch a driver or a browser
        driver = chrome_driver(*browser_binaries, tracked_run.root)
        try:
            driver.get(f"{server.url}/health")  # same origin, so the UI's settings can be stored first
            # Keep the assistant side panel closed (it opens itself on a first visit and covers a third).
            driver.execute_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                                  "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")
            yield UiPage(driver, server, tracked_run.root)
        finally:
            driver.quit()


class UiPage:
    """Opens UI routes and waits for what they should show; a wait that runs out fails with the page text."""

    def __init__(self, driver, server: MlflowServer, folder: Path):
        self.driver, self.server, self.folder = driver, server, folder

    def open(self, route: str) -> None:
        # Model-training view of the UI (MLflow 3 opens on its GenAI view otherwise).
        self.driver.get(f"{self.server.url}/#/{route}?workflowType=machine_learning")

    def wait(self, condition, what: str):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, WAIT_S, poll_frequency=0.2).until(condition)
        except TimeoutException:
            shot = self.folder / "failure.png"
            self.driver.save_screenshot(str(shot))
            body = self.driver.execute_script("return document.body ? document.body.innerText : ''")
            pytest.fail(f"MLflow UI: no {what} after {WAIT_S} s at {self.driver.current_url} (screenshot {shot})\n"
                        f"page text: {body[:1500]!r}\nserver log: {self.server.log_tail(1500)}")

    def link(self, text: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait(ec.visibility_of_element_located((By.XPATH, f"//a[normalize-space()='{text}']")),
                         f"link {text!r}")

    def settle(self, timeout_s: float = 5.0) -> None:
        """Give running CSS transitions (a tree folding open) time to end before a picture; never fails."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout_s, poll_frequency=0.1).until(lambda d: d.execute_script(
                "return document.getAnimations().every(a => a.playState !== 'running')"))
        except TimeoutException:
            pass

    def screenshot(self, name: str) -> list[Path]:
        self.settle()
        paths = [self.folder / name]
        if os.environ.get(SCREENSHOTS_ENV):
            paths.append(Path(os.environ[SCREENSHOTS_ENV]) / name)
        save_screenshot(self.driver, paths)
        return paths


def test_experiment_list_links_the_experiment(browser, tracked_run):
    browser.open("experiments")
    link = browser.link(EXPERIMENT)
    assert link.get_attribute("href").endswith(f"#/experiments/{tracked_run.experiment_id}")


def test_experiment_page_lists_the_run_by_name(browser, tracked_run):
    browser.open(f"experiments/{tracked_run.experiment_id}/runs")
    link = browser.link(RUN_NAME)
    assert link.get_attribute("href").endswith(f"/runs/{tracked_run.run_id}")


def test_run_page_shows_the_logged_metrics(browser, tracked_run):
    from selenium.webdriver.common.by import By

    browser.open(f"experiments/{tracked_run.experiment_id}/runs/{tracked_run.run_id}")
    heading = f"Metrics ({len(tracked_run.metrics)})"  # every metric of the run, none more
    browser.wait(lambda d: d.find_elements(By.XPATH, f"//*[normalize-space(text())='{heading}']"), repr(heading))
    for name in SHOWN_METRICS:
        row = browser.wait(lambda d: d.find_elements(
            By.XPATH, f"//*[@role='row'][.//*[normalize-space(text())='{name}']]"), f"metrics row {name!r}")[0]
        shown_name, shown_value = (cell.text.strip() for cell in row.find_elements(By.XPATH, "./*[@role='cell']"))
        assert shown_name == name
        assert float(shown_value) == pytest.approx(tracked_run.metrics[name], rel=1e-9), name
    assert RUN_NAME in browser.driver.find_element(By.TAG_NAME, "h2").text

    # The picture: the run's header and its test metrics in view.
    search = browser.driver.find_element(By.XPATH, "//input[@placeholder='Search metrics']")
    search.send_keys("test/")
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", search)
    browser.screenshot("mlflow_ui_run.png")


def test_artifact_view_shows_the_confusion_matrix(browser, tracked_run):
    browser.open(f"experiments/{tracked_run.experiment_id}/runs/{tracked_run.run_id}/artifacts/{CONFUSION}")
    for path in tracked_run.figures:  # the unfolded artifact tree shows every figure of the run
        leaf = path.rsplit("/", 1)[1]
        browser.wait(lambda d: d.execute_script(SHOWN_JS, leaf), f"artifact {leaf} in view")
    # The preview has loaded the PNG the server read from the run's file:// artifact folder.
    size = browser.wait(lambda d: d.execute_script(
        "const img = document.querySelector(`img[alt='${arguments[0]}']`);"
        "return img && img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;",
        CONFUSION), f"loaded image {CONFUSION}")
    with Image.open(tracked_run.artifact_dir / CONFUSION) as png:
        assert tuple(size) == png.size
    browser.screenshot("mlflow_ui_confusion.png")
