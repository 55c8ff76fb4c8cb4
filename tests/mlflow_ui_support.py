"""An MLflow tracking server and a headless Chromium for the browser test of the MLflow UI.

Everything stays on 127.0.0.1: the server binds there, Chromium resolves no other host name and
sends anything not meant for the loopback to a closed local port, and selenium is handed the installed chromedriver so that selenium-manager never looks for
(or downloads) a browser of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
INSTALL_HINT = "apt-get install chromium chromium-driver"
# Debian's packages first, then whatever else is on PATH under the usual names.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
    "--metrics-recording-only", "--mute-audio", "--window-size=1400,1000", "--hide-scrollbars",
    # No name but 127.0.0.1 resolves, and anything not on the loopback goes to a closed local port.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9",
)
# The tracking server only: no telemetry, and no background job runner (it starts a handful of
# worker processes that a UI test does not need).
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
              "DO_NOT_TRACK": "true"}


def _first_executable(candidates) -> str | None:
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def find_chromium() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) executables, each None when it is not installed."""
    return _first_executable(CHROMIUM_CANDIDATES), _first_executable(CHROMEDRIVER_CANDIDATES)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _local_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with _local_opener().open(url, timeout=timeout) as response:
        return response.read()


class MlflowServer:
    """``mlflow server`` on a SQLite store as a subprocess in its own process group.

    ``start()`` returns once ``/health`` answers; ``stop()`` ends the whole group (the CLI starts
    uvicorn as a child), first with SIGTERM, then SIGKILL.
    """

    def __init__(self, backend_store_uri: str, artifact_root: Path, log_path: Path, port: int | None = None):
        self.backend_store_uri, self.artifact_root, self.log_path = backend_store_uri, artifact_root, log_path
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
                "--default-artifact-root", self.artifact_root.resolve().as_uri(),
                "--host", HOST, "--port", str(self.port), "--workers", "1"]

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> None:
        deadline = time.monotonic() + timeout_s
        for _ in range(attempts):
            if self._launch(deadline):
                return
            # Another process took the free port between free_port() and the server's bind.
            self.port = free_port()
            self.url = f"http://{HOST}:{self.port}"
        raise RuntimeError(f"mlflow server found no free port in {attempts} attempts:\n{self.log_tail()}")

    def _launch(self, deadline: float) -> bool:
        """Start the server and wait for /health; False when it could not bind its port."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env={**os.environ, **SERVER_ENV}, cwd=self.log_path.parent)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    return False
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http_get(f"{self.url}/health", timeout=2).strip() == b"OK":
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"mlflow server not healthy at {self.url} in time:\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # uvicorn may outlive the CLI by a moment: make sure nothing of the group is left.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def chrome_driver(chromium: str, chromedriver: str, folder: Path):
    """A headless Chromium under selenium, started from the given executables only, its profile and
    the driver's log in ``folder``. Set SE_OFFLINE=true around it as well, so that selenium-manager
    would never download anything even if it were asked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={folder / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("excludeSwitches", ["enable-automation"])  # no "controlled by" bar
    service = Service(executable_path=chromedriver, log_output=str(folder / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def save_screenshot(driver, paths: list[Path], max_bytes: int = 300_000) -> None:
    """The browser window as an optimised PNG at each path; a 256-colour palette when it is still too big."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as shot:
        image = shot.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    if buffer.tell() > max_bytes:
        buffer = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
