"""`--mode serve`: seconds from launch to the first answer, and one poster's latency; with
--load, the server's memory under a burst of large-pixel uploads.

  .venv/bin/python bench/bench_serve.py --workdir runs/scratch                  # one model: ~2 min
  .venv/bin/python bench/bench_serve.py --workdir runs/a,runs/b --poster x.jpg   # an ensemble
  nice -n 15 .venv/bin/python bench/bench_serve.py --workdir runs/scratch --load  # 64 x 36 MP PNGs

Start-up: from `python launch.py ... --mode serve --port 0` to the first answer of GET
/api/model (restore, compile, warm-up, uvicorn): one launch on an empty compilation cache
("cold"), then `--runs` launches that reuse it ("warm": every relaunch). Latency: POST
/api/predict and /api/saliency of one poster (default: a synthetic 268x182 JPEG), one
request at a time after one warm-up request, `--requests` per launch; medians over all.

Load (--load): one launch; `--clients` concurrent POST /api/predict of a `--megapixels` PNG
that compresses small (a 36 MP gradient: about 150 KB), each bounded by `--timeout`; the
server process's RSS idle (before), at its peak (sampled every 5 ms) and after (once it
settles, at most 20 s), and how many answers were 200, 503 or anything else. Targets
(issue 30): peak within 1 GB of idle, only 200 and 503, RSS back within 100 MB of idle.

Records of past runs: docs/benchmarks.md.
"""

import argparse
import concurrent.futures
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import _common


def launch(workdir: str, env: dict) -> tuple[subprocess.Popen, str, float]:
  """(process, url, seconds until GET /api/model answered)."""
  start = time.perf_counter()
  proc, line, _ = _common.launch(["--workdir", workdir, "--mode", "serve", "--port", "0"], env,
                                 lambda line: line.startswith("serving "))
  url = re.search(r" at (http://\S+/) ", line).group(1)
  with urllib.request.urlopen(url + "api/model") as r:
    json.loads(r.read())
  return proc, url, time.perf_counter() - start


def synthetic_poster() -> bytes:
  from PIL import Image
  from jaxposter.data import synthetic
  buf = io.BytesIO()
  Image.fromarray(synthetic.make_example(1, 0, 268, 182)[0]).save(buf, format="JPEG")
  return buf.getvalue()


def seconds(url: str, data: bytes) -> float:
  start = time.perf_counter()
  with urllib.request.urlopen(urllib.request.Request(url, data=data)) as r:
    r.read()
  return time.perf_counter() - start


def rss_mb(pid: int) -> float:
  with open(f"/proc/{pid}/statm", encoding="ascii") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def large_png(megapixels: float) -> bytes:
  """An RGB PNG of `megapixels` (2:3) that compresses small: a smooth gradient."""
  import numpy as np
  from PIL import Image
  width = int((megapixels * 1e6 / 1.5) ** 0.5)
  height = int(megapixels * 1e6 / width)
  x = np.arange(width, dtype=np.uint16)[None, :] // 16
  y = np.arange(height, dtype=np.uint16)[:, None] // 16
  rgb = np.stack(np.broadcast_arrays(x % 256, y % 256, (x + y) % 256), -1).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format="PNG", compress_level=9)
  return buf.getvalue()


def post(url: str, data: bytes, timeout: float) -> tuple[str, float]:
  """(the answer's status, or "timeout" / the error's name; seconds)."""
  start = time.perf_counter()
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
      r.read()
      status = str(r.status)
  except urllib.error.HTTPError as e:
    status = str(e.code)
    if e.code == 503 and e.headers.get("Retry-After") is None:
      status = "503 without Retry-After"
  except TimeoutError:
    status = "timeout"
  except (urllib.error.URLError, OSError) as e:
    status = "timeout" if "timed out" in str(e) else type(e).__name__
  return status, time.perf_counter() - start


def settled_rss(pid: int, seconds: float = 20.0) -> float:
  """RSS once it stops falling (two readings 1 s apart within 2 MB), at most `seconds`."""
  last, end = rss_mb(pid), time.monotonic() + seconds
  while time.monotonic() < end:
    time.sleep(1)
    now = rss_mb(pid)
    if abs(now - last) < 2:
      return now
    last = now
  return last


def load(a, env: dict) -> bool:
  """The burst of --load; prints the figures and returns whether the targets are met."""
  data = large_png(a.megapixels)
  proc, url, _ = launch(a.workdir, env)
  try:
    seconds(url + "api/predict", synthetic_poster())  # the first request's own allocations
    time.sleep(2)
    idle = settled_rss(proc.pid)
    peak, done = [idle], threading.Event()

    def sample():
      while not done.is_set():
        peak[0] = max(peak[0], rss_mb(proc.pid))
        time.sleep(0.005)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
      answers = list(pool.map(lambda _: post(url + "api/predict", data, a.timeout),
                              range(a.clients)))
    took = time.perf_counter() - start
    done.set()
    sampler.join()
    after = settled_rss(proc.pid)
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait()
  counts = {}
  for status, _ in answers:
    counts[status] = counts.get(status, 0) + 1
  ok = (peak[0] - idle <= 1024 and after - idle <= 100
        and set(counts) <= {"200", "503"})
  print(f"{a.workdir}: {a.clients} concurrent POST /api/predict of a {a.megapixels:g} MP PNG "
        f"({len(data) / 1e3:.0f} KB), each bounded by {a.timeout:g} s")
  print(f"  {'RSS idle':<22}{idle:>9.0f} MB")
  print(f"  {'RSS peak':<22}{peak[0]:>9.0f} MB  (+{peak[0] - idle:.0f}; target +1024)")
  print(f"  {'RSS after':<22}{after:>9.0f} MB  (+{after - idle:.0f}; target +100)")
  print(f"  {'answers':<22}{', '.join(f'{k}: {n}' for k, n in sorted(counts.items()))}")
  print(f"  {'slowest answer':<22}{max(s for _, s in answers):>9.2f} s  (burst {took:.1f} s)")
  print(f"  targets {'met' if ok else 'NOT met'}")
  return ok


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a trained workdir, or several with commas")
  p.add_argument("--poster", default="", help="an image file (default: a synthetic poster)")
  p.add_argument("--runs", type=int, default=10, help="warm launches")
  p.add_argument("--requests", type=int, default=10)
  p.add_argument("--load", action="store_true", help="the memory of a burst instead (above)")
  p.add_argument("--clients", type=int, default=64, help="--load: concurrent uploads")
  p.add_argument("--megapixels", type=float, default=36.0, help="--load: each upload's size")
  p.add_argument("--timeout", type=float, default=120.0, help="--load: seconds per request")
  a = p.parse_args()
  with tempfile.TemporaryDirectory(prefix="jaxposter_serve_") as tmp:
    env = _common.fresh_cache_env(tmp)
    if a.load:
      sys.exit(0 if load(a, env) else 1)
    with open(a.poster, "rb") if a.poster else io.BytesIO(synthetic_poster()) as f:
      poster = f.read()
    startups, latency = [], {"predict": [], "saliency?genre=": []}
    for _ in range(1 + a.runs):
      proc, url, took = launch(a.workdir, env)
      try:
        startups.append(took)
        genre = json.loads(urllib.request.urlopen(url + "api/model").read())["genres"][0]
        for path, times in latency.items():
          target = url + "api/" + path + (genre if path.endswith("=") else "")
          seconds(target, poster)  # warm-up
          times += [seconds(target, poster) for _ in range(a.requests)]
      finally:
        proc.send_signal(signal.SIGINT)
        proc.wait()
  warm = startups[1:]
  print(f"{a.workdir}: start-up {startups[0]:.1f} s cold, {statistics.median(warm):.1f} s warm "
        f"(median of {len(warm)}: {', '.join(f'{s:.1f}' for s in warm)})")
  for path, times in latency.items():
    print(f"  POST /api/{path.split('?')[0]}: {1000 * statistics.median(times):.0f} ms median "
          f"of {len(times)} (min {1000 * min(times):.0f}, max {1000 * max(times):.0f})")


if __name__ == "__main__":
  main()
