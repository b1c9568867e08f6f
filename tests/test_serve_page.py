"""`launch.py --mode serve` as a person meets it: started from the command line it answers
on 127.0.0.1 and stops cleanly on Ctrl-C; in headless Chromium the page shows a poster's
genres (the top one --mode predict's), its Grad-CAM for the genre picked, why a bad file was
refused, takes a poster dropped on it, fits a 420-pixel-wide window and asks for no favicon."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from PIL import Image
import pytest

from jaxposter.data import synthetic
from tests.conftest import ROOT, cli_env, run_cli
from tests.test_images import within

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def _serving(workdir: str):
  """(process, url) of `launch.py --mode serve` on a free port, once it says it serves;
  killed on leaving if still running."""
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "launch.py"), "--workdir", workdir, "--mode",
       "serve", "--port", "0"], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)

  def ready() -> str:
    for line in proc.stdout:
      if line.startswith("serving "):
        return line
    raise AssertionError(f"--mode serve ended ({proc.wait()}) before serving")

  try:
    yield proc, re.search(r" at (http://\S+/) ", within(300, ready)).group(1)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.fixture(scope="module")
def server(two_runs):
  with _serving(two_runs[0]) as served:
    yield served


@pytest.fixture(scope="module")
def poster(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("upload") / "poster.jpg")
  Image.fromarray(synthetic.make_example(33, 4, 268, 182)[0]).save(path, quality=92)
  return path


def _post(url: str, data: bytes) -> tuple[int, dict]:
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_the_command_serves_on_loopback(server, poster):
  _, url = server
  assert url.startswith("http://127.0.0.1:")
  with open(poster, "rb") as f:
    status, answer = _post(url + "api/predict", f.read())
  assert status == 200 and set(answer["probabilities"]) == set(synthetic.GENRES)
  assert _post(url + "api/predict", b"<html>gone</html>") == \
      (400, {"error": "html", "message": "this is an HTML page, not an image (a saved error "
                                         "page?)"})


def _require_browser():
  """selenium's webdriver, or a skip that says what is missing (CI has no browser)."""
  if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("no browser here: apt-get install chromium chromium-driver")
  return pytest.importorskip("selenium.webdriver",
                             reason="the browser driver: pip install -e '.[test]'")


def _chrome(profile):
  """Headless Chromium with a fresh profile, quiet: no background updates or sync."""
  webdriver = _require_browser()
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", f"--user-data-dir={profile}", "--window-size=1100,1000"):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)


OVERFLOW = """  // what sticks out sideways: past the viewport (less its scroll bar), or out of its card
  const width = document.documentElement.clientWidth;
  const out = [...document.body.querySelectorAll("*")]
      .map(e => [e, e.getBoundingClientRect(), e.closest(".card")])
      .filter(([e, r, card]) => r.width > 0 && (r.left < -0.5 || r.right > width + 0.5
          || (card && card !== e && r.right > card.getBoundingClientRect().right + 0.5)))
      .map(([e, r]) => `${e.tagName}.${e.className} ${r.left}..${r.right}`);
  return [window.innerWidth, document.documentElement.scrollWidth, width, out];
"""


def _phone_width(driver, width: int = 420):
  """The page in a `width`-pixel window with a scroll bar (it leaves the page less room than
  a phone's overlay one): the window's width, the page's, the room, what overflows it."""
  driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
  return driver.execute_script(OVERFLOW)


DROP = """  // a poster dropped on the drop zone: red above, blue below
  const c = Object.assign(document.createElement("canvas"), {width: 120, height: 180});
  const g = c.getContext("2d");
  g.fillStyle = "#c22"; g.fillRect(0, 0, 120, 90); g.fillStyle = "#22c"; g.fillRect(0, 90, 120, 90);
  c.toBlob(b => {
    const dt = new DataTransfer();
    dt.items.add(new File([b], "dropped.png", {type: "image/png"}));
    document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt}));
  });
"""


def test_the_page_in_chromium(server, two_runs, poster, tmp_path):
  _require_browser()  # before importing selenium's parts
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select, WebDriverWait
  out = tmp_path / "predicted.json"
  run_cli(["--workdir", two_runs[0], "--mode", "predict", "--inputs", poster, "--output",
           str(out)])
  probs = json.loads(out.read_text())[0]["probabilities"]
  bad = tmp_path / "saved_error_page.jpg"
  bad.write_text("<!doctype html><html><body>404 Not Found</body></html>")
  driver = _chrome(tmp_path / "profile")
  try:
    driver.get(server[1])
    driver.find_element(By.ID, "files").send_keys(f"{poster}\n{bad}")
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card .error"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-done] .bar"))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".cam").get_attribute("src"))
    wait.until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    shown = [b.get_attribute("data-genre") for b in driver.find_elements(By.CSS_SELECTOR, ".bar")]
    assert shown[0] == max(probs, key=probs.get)
    assert sorted(shown) == sorted(synthetic.GENRES)
    assert "HTML page" in driver.find_element(By.CSS_SELECTOR, ".card .error").text
    cam = driver.find_element(By.CSS_SELECTOR, ".cam").get_attribute("src")
    Select(driver.find_element(By.CSS_SELECTOR, ".genre")).select_by_value(shown[-1])
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".cam").get_attribute("src") != cam)
    driver.execute_script(DROP)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-done]")) == 2)
    screenshot = str(tmp_path / "serve_page.png")
    driver.save_screenshot(screenshot)
    print(f"screenshot: {screenshot}")
    window, page, room, overflowing = _phone_width(driver)  # two scored cards and an error
    assert window == 420 and page <= room <= window and not overflowing, (page, overflowing)
    driver.save_screenshot(str(tmp_path / "serve_page_420.png"))
    # No request the page does not need (a browser asks for /favicon.ico unless told).
    assert not [e for e in driver.get_log("browser") if "favicon" in e["message"]]
  finally:
    driver.quit()


def test_ctrl_c_stops_the_server_cleanly(two_runs):
  """Its own server, interrupted the moment it says it serves: no window after that line
  where Ctrl-C ends in a traceback (CI once hit one, while the app was being built)."""
  with _serving(two_runs[0]) as (proc, _):
    proc.send_signal(signal.SIGINT)
    assert within(60, proc.wait) == 0
    out = proc.stdout.read()
    assert "Traceback" not in out and out.rstrip().endswith("stopped"), out
