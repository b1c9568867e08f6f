"""--mode serve's JSON API through Starlette's test client: the answers of --mode predict,
for one model and an ensemble; every kind of bad input a 4xx with a reason; no request
compiles anything; 20 requests at once answered alike; a 503 with Retry-After when the
decoding budget is full (its load test: bench/bench_serve.py --load)."""

import concurrent.futures
import io
import json
import os
import threading

import jax
import numpy as np
from PIL import Image
import pytest
from starlette.testclient import TestClient

from jaxposter import restore
from jaxposter.data import synthetic
from jaxposter.serve import app as serve_app
from jaxposter.serve.budget import DecodeBudget
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


def _model(workdirs: list[str]) -> Model:
  members = restore.restore_all(workdirs, None, None, with_data=False)
  model = Model(members, members[0].exp.config.threshold)
  model.warm_up()
  return model


def _client(workdirs: list[str]) -> TestClient:
  return TestClient(serve_app.create_app(_model(workdirs), max_upload=MAX_UPLOAD))


@pytest.fixture(scope="module")
def single_model(two_runs) -> Model:
  return _model(two_runs[:1])


@pytest.fixture(scope="module")
def single(single_model):
  return TestClient(serve_app.create_app(single_model, max_upload=MAX_UPLOAD))


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
                               [want["probabilities"][g] for g in synthetic.GENRES], atol=1e-5)
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
                               list(expected[name]["probabilities"].values()), atol=1e-5)


@pytest.mark.parametrize("body, status, error", [
    (b"", 400, "empty"),
    (b"just some text, no image", 400, "not_an_image"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", 400, "html"),
    (_truncated(), 400, "truncated"),
    (png(None, 13_000, 13_000), 413, "too_many_pixels"),  # a few KB, 169 megapixels
    (b"\xff" * (MAX_UPLOAD + 1), 413, "too_large"),
])
def test_bad_uploads_are_refused_with_a_reason(single, body, status, error):
  for path in ("/api/predict", "/api/saliency?genre=Drama"):
    r = single.post(path, content=body)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.json()["message"] and "Traceback" not in r.text


def test_what_the_build_would_store_is_answered_and_an_unreadable_file_refused(
    single, single_model, monkeypatch):
  """A 1x70,000 strip is too wide for a JPEG, but a build shrinks it to the store size first,
  and so does the server (it used to encode it whole, and refuse it); an OSError while
  decoding is a 400 with the reason in words and its detail."""
  strip = _encode(np.zeros((1, 70_000, 3), np.uint8), "PNG")
  assert single.post("/api/predict", content=strip).status_code == 200

  def broken(data, *args):
    raise OSError("encoder error -2")

  for name, path in (("predict", "/api/predict"), ("saliency_png", "/api/saliency?genre=Drama")):
    monkeypatch.setattr(single_model, name, broken)
    r = single.post(path, content=strip)
    assert r.status_code == 400 and r.json() == {
        "error": "unreadable", "message": "the image could not be read (encoder error -2)"}


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


def _flat_png(height: int, width: int) -> bytes:
  """A PNG of many pixels and few bytes."""
  return _encode(np.full((height, width, 3), 90, np.uint8), "PNG")


def test_a_full_decoding_budget_answers_503_with_retry_after(single_model, posters):
  """Issue 30 item 5: memory follows the budget, not the number of uploads."""
  big = _flat_png(2000, 1500)  # 3 megapixels: 24 MB to decode, 13 KB to send
  cost = serve_app.images.decode_cost(big)
  assert cost >= 3_000_000 * 8 and len(big) < 20_000
  budget = DecodeBudget(capacity=cost + cost // 2)  # room for one at a time
  client = TestClient(serve_app.create_app(single_model, MAX_UPLOAD, budget))

  with budget.admit(cost):  # a large upload in flight
    for path in ("/api/predict", "/api/saliency?genre=Drama"):
      r = client.post(path, content=big)
      assert r.status_code == 503 and r.json()["error"] == "busy", r.text
      assert r.headers["retry-after"] == "1" and "try again" in r.json()["message"]
    small = client.post("/api/predict", content=posters["p0.jpeg"])  # still fits beside it
    assert small.status_code == 200
  assert budget.in_use == 0 and budget.in_flight == 0
  assert client.post("/api/predict", content=big).status_code == 200

  # concurrent uploads: while the first one decodes, the others are refused, not queued
  entered, leave = threading.Event(), threading.Event()
  predict = single_model.predict

  def slow_predict(data):
    entered.set()
    assert leave.wait(30)
    return predict(data)

  single_model.predict = slow_predict
  try:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
      first = pool.submit(client.post, "/api/predict", content=big)
      assert entered.wait(30)
      others = list(pool.map(lambda _: client.post("/api/predict", content=big), range(5)))
      leave.set()
      assert first.result().status_code == 200
  finally:
    del single_model.predict  # the class's method again
  assert [r.status_code for r in others] == [503] * 5
  assert budget.in_use == 0
  # a request larger than the whole budget is not refused forever: it runs alone
  alone = TestClient(serve_app.create_app(single_model, MAX_UPLOAD, DecodeBudget(capacity=1)))
  assert alone.post("/api/predict", content=big).status_code == 200
