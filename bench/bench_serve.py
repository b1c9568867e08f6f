"""`--mode serve`: seconds from launch to the first answer, and one poster's latency.

  .venv/bin/python bench/bench_serve.py --workdir runs/scratch                 # one model
  .venv/bin/python bench/bench_serve.py --workdir runs/a,runs/b --poster x.jpg  # an ensemble, your poster

Start-up: from `python launch.py ... --mode serve --port 0` to the first answer of GET
/api/model (restore, compile, warm-up, uvicorn): one launch on an empty compilation cache
("cold"), then `--runs` launches that reuse it ("warm": every relaunch). Latency: POST
/api/predict and /api/saliency of one poster (default: a synthetic 268x182 JPEG), one
request at a time after one warm-up request, `--requests` per launch; medians over all.

Records of past runs: docs/benchmarks.md.
"""

import argparse
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def launch(workdir: str, env: dict) -> tuple[subprocess.Popen, str, float]:
  """(process, url, seconds until GET /api/model answered)."""
  start = time.perf_counter()
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), "--workdir", workdir,
                           "--mode", "serve", "--port", "0"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    if line.startswith("serving "):
      url = re.search(r" at (http://\S+/) ", line).group(1)
      with urllib.request.urlopen(url + "api/model") as r:
        json.loads(r.read())
      return proc, url, time.perf_counter() - start
  raise RuntimeError(f"launch.py --mode serve ended (exit {proc.wait()}) before serving")


def synthetic_poster() -> bytes:
  sys.path.insert(0, ROOT)
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


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a trained workdir, or several with commas")
  p.add_argument("--poster", default="", help="an image file (default: a synthetic poster)")
  p.add_argument("--runs", type=int, default=10, help="warm launches")
  p.add_argument("--requests", type=int, default=10)
  a = p.parse_args()
  with tempfile.TemporaryDirectory(prefix="jaxposter_serve_") as tmp:
    if a.poster:
      with open(a.poster, "rb") as f:
        poster = f.read()
    else:
      poster = synthetic_poster()
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "xla"))
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
