"""An epoch's clock: images/s, the share of time spent waiting for input (with advice when
training is input-bound), and the loss since the last log step."""

import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from jaxposter import report, runtime
from jaxposter import steps as steps_lib


INPUT_BOUND = 0.1  # advice when training waits for its input more than this share of an epoch


def input_advice(share: float, epoch: int, threads: int) -> str:
  return (f"Input-bound: training waited for the next batch {share:.0%} of epoch {epoch}'s "
          f"time. The input pipeline decodes and resizes with {threads} reader thread(s) on "
          f"a host with {runtime.usable_cores()} usable core(s): raise --config.data.num_threads "
          "(-1: one per core), keep posters stored at the training size "
          "(--config.data.store_height/store_width 0, the default), or use a host with more "
          "cores per accelerator.")


class Progress:
  """An epoch's clock: the time spent waiting for input, images/s, and the loss since the
  last log step, shown on the bar (or, without one, printed as a line)."""

  def __init__(self, bar: tqdm, step: int, epoch: int, steps_per_epoch: int, batch_size: int):
    self.bar, self.first, self.epoch = bar, step, epoch
    self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
    self.start, self.waited, self.logged = time.perf_counter(), 0.0, None

  def timed(self, fn: Callable, *args):
    ready = time.perf_counter()
    out = fn(*args)
    self.waited += time.perf_counter() - ready
    return out

  def log(self, step: int, totals: dict[str, np.ndarray]) -> None:
    last = self.logged or {"loss_sum": 0.0, "count": 0.0}
    loss = float((totals["loss_sum"] - last["loss_sum"]) / max(totals["count"] - last["count"], 1))
    self.logged = totals
    seconds = time.perf_counter() - self.start
    rate, wait = (step - self.first) * self.batch_size / seconds, self.waited / seconds
    self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}", input_wait=f"{wait:.0%}")
    if self.bar.disable and report.is_chief():  # no bar (a log file): a line instead
      print(f"  step {step} (epoch {self.epoch}, {step - (self.epoch - 1) * self.steps_per_epoch}/"
            f"{self.steps_per_epoch}): loss {loss:.4f}, {rate:.1f} images/s, waiting for "
            f"input {wait:.0%} of the time", flush=True)

  def summary(self, totals: dict[str, np.ndarray], step: int) -> dict[str, float]:
    """The epoch's train metrics, speed and input-wait share (metrics.jsonl's `train`)."""
    out = steps_lib.summarize_train(totals)
    out["seconds"] = time.perf_counter() - self.start
    out["images_per_s"] = (step - self.first) * self.batch_size / out["seconds"]
    out["input_wait_share"] = self.waited / out["seconds"]
    return out
