"""--mode serve's JSON API through Starlette's test client: the answers of --mode predict,
for one model and an ensemble; every kind of bad input a 4xx with a reason; no request
compiles anything; 20 requests at once answered alike."""

import concurrent.futures
import io
import json
import os

import jax
import numpy as np
from PIL import Image
import pytest
from starlette.testclient import TestClient

from jaxposter import restore
from jaxposter.data import synthetic
from jaxposter.serve import app as serve_app
from jaxposter.serve.model import Model
from tests.conftest import run_cli
from tests.test_images import _truncated, png

MAX_UPLOAD = 200_000


def _encode(image: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).convert(mode).save(buf, format=fmt)
  return buf.getvalue()


@pytest.fixture(scope="module")
def posters(tmp_path_factory) -> dict[str, bytes]:
  """Posters of several sizes and formats (the model's input is 32x24: all are resized)."""
  folder = tmp_path_factory.mktemp("posters")
  made = {}
  for i, (h, w, fmt, mode) in enumerate([(268, 182, "JPEG", "RGB"), (50, 33, "PNG", "RGB"),
                                         (411, 300, "PNG", "L"), (90, 61, "GIF", "P")]):
    image, _ = synthetic.make_example(21, i, h, w)
    made[f"p{i}.{fmt.lower()}"] = data = _encode(image, fmt, mode)
    (folder / f"p{i}.{fmt.lower()}").write_bytes(data)
  return made


def _predict_cli(workdirs: list[str], posters: dict, tmp_path) -> dict[str, dict]:
  """--mode predict's rows for the same files, by file name."""
  folder, out = tmp_path / "in", tmp_path / "predicted.json"
  folder.mkdir(exist_ok=True)
  for name, data in posters.items():
    (folder / name).write_bytes(data)
  run_cli(["--workdir", ",".join(workdirs), "--mode", "predict", "--inputs", str(folder),
           "--output", str(out)])
  return {os.path.basename(r["file"]): r for r in json.loads(out.read_text())}


def _client(workdirs: list[str]) -> TestClient:
  members = restore.restore_all(workdirs, None, None, with_data=False)
  model = Model(members, members[0].exp.config.threshold)
  model.warm_up()
  return TestClient(serve_app.create_app(model, max_upload=MAX_UPLOAD))


@pytest.fixture(scope="module")
def single(two_runs):
  return _client(two_runs[:1])


@pytest.mark.parametrize("ensemble", [False, True])
def test_answers_are_predicts(two_runs, single, posters, tmp_path, ensemble):
  workdirs = two_runs if ensemble else two_runs[:1]
  client = _client(workdirs) if ensemble else single
  expected = _predict_cli(workdirs, posters, tmp_path)
  model = client.get("/api/model").json()
  assert model["genres"] == list(synthetic.GENRES)
  assert [m["name"] for m in model["models"]] == [os.path.basename(w) for w in workdirs]
  for name, data in posters.items():
    r = client.post("/api/predict", content=data)
    assert r.status_code == 200, r.text
    got, want = r.json(), expected[name]
    np.testing.assert_allclose([got["probabilities"][g] for g in synthetic.GENRES],
                               [want["probabilities"][g] for g in synthetic.GENRES], atol=2e-4)
    assert got["thresholds"] == model["thresholds"]
    assert got["genres"] == [g for g in synthetic.GENRES
                             if got["probabilities"][g] >= got["thresholds"][g]]


def test_no_request_compiles(single, posters):
  events = []
  def listener(event, duration, **kwargs):
    if "compile" in event or "mlir" in event:
      events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for data in posters.values():
      assert single.post("/api/predict", content=data).status_code == 200
      r = single.post("/api/saliency", params={"genre": "Horror"}, content=data)
      assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert events == []
    jax.jit(lambda x: x + 1)(np.ones(3))  # the listener does see a compilation
    assert events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_saliency_is_an_upright_overlay(single):
  tall = np.zeros((300, 100, 3), np.uint8)
  tall[:150] = (255, 0, 0)  # red above, black below
  r = single.post("/api/saliency?genre=Drama", content=_encode(tall, "PNG"))
  overlay = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
  h, w = overlay.shape[:2]
  assert h > w  # a poster, not turned on its side
  assert overlay[: h // 4, :, 0].mean() > overlay[3 * h // 4:, :, 0].mean() + 60


def test_twenty_concurrent_requests_agree(two_runs, single, posters, tmp_path):
  expected = _predict_cli(two_runs[:1], posters, tmp_path)
  names = [list(posters)[i % len(posters)] for i in range(20)]
  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    answers = list(pool.map(lambda n: single.post("/api/predict", content=posters[n]), names))
  for name, r in zip(names, answers):
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(list(r.json()["probabilities"].values()),
                               list(expected[name]["probabilities"].values()), atol=2e-4)


@pytest.mark.parametrize("body, status, error", [
    (b"", 400, "empty"),
    (b"just some text, no image", 400, "not_an_image"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", 400, "html"),
    (_truncated(), 400, "truncated"),
    (png(None, 13_000, 13_000), 413, "too_many_pixels"),  # a few KB, 169 megapixels
    (b"\xff" * (MAX_UPLOAD + 1), 413, "too_large"),
    (_encode(np.zeros((1, 70_000, 3), np.uint8), "PNG"), 400, "unreadable"),  # too wide for JPEG
])
def test_bad_uploads_are_refused_with_a_reason(single, body, status, error):
  for path in ("/api/predict", "/api/saliency?genre=Drama"):
    r = single.post(path, content=body)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.json()["message"] and "Traceback" not in r.text


def test_other_bad_requests(single, posters):
  data = posters["p0.jpeg"]
  r = single.post("/api/saliency?genre=Western", content=data)
  assert r.status_code == 400 and "Drama" in r.json()["message"]
  assert single.post("/api/saliency", content=data).json()["error"] == "unknown_genre"
  r = single.post("/api/predict", files={"file": ("p.jpg", data, "image/jpeg")})
  assert r.status_code == 415 and "--data-binary" in r.json()["message"]
  # sent in chunks, with no length announced: refused once past the cap
  r = single.post("/api/predict", content=iter([b"\xff" * 60_000] * 4))
  assert r.status_code == 413 and r.json()["error"] == "too_large"
  assert single.get("/api/predict").status_code == 405
  assert single.get("/etc/passwd").status_code == 404
  assert single.post("/api/predict?path=/etc/passwd", content=b"").json()["error"] == "empty"


def test_page_is_served(single):
  r = single.get("/")
  assert r.status_code == 200 and "/api/predict" in r.text and "/api/saliency" in r.text


def test_a_taken_port_is_one_clear_error():
  sock = serve_app.listen("127.0.0.1", 0)
  try:
    with pytest.raises(serve_app.UserError, match="cannot listen on"):
      serve_app.listen("127.0.0.1", sock.getsockname()[1])
  finally:
    sock.close()
  with pytest.raises(serve_app.UserError, match="0-65535"):
    serve_app.listen("127.0.0.1", 70000)
