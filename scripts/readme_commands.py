"""Runs every command of README.md's ```bash blocks, in order, and prints each with its exit code.

  d=$(mktemp -d) && git clone . "$d"
  nice -n 15 python3 scripts/readme_commands.py --checkout "$d"
  nice -n 15 python3 scripts/readme_commands.py --checkout "$d" --reuse-venv "$PWD/.venv"

Commands run in the checkout (a fresh clone is the honest test), one `bash -c` each, in README
order, each with `--timeout` seconds. A line ending in `\\` continues on the next line. Skipped,
with the reason printed, are the commands a fresh clone cannot run:
  - a placeholder path (`/path/to/...`): the Kaggle posters; `--data DIR` puts DIR in its place
    and runs them (long: each trains a model);
  - `--mode serve` (serves until stopped) and requests to 127.0.0.1 (need that server);
  - the GPU / TPU extras and several-host flags;
  - the test suite (`-m pytest`: CI runs it; `--run-tests` runs it here too);
  - commands on a workdir whose training command was skipped.
`--reuse-venv VENV` links VENV as the checkout's `.venv` instead of installing one, and then
leaves out the commands' `python3 -m venv` and `pip install` steps (pip would point VENV's
editable install of jaxposter at the checkout); the checkout's own code still runs, since
`launch.py` and `python -c` put the checkout first on `sys.path`.

Exit status: 0 when every command that ran succeeded.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time

PLACEHOLDER = re.compile(r"/path/to/[\w.-]+")
SKIPS = (  # (pattern, reason): the first match skips the command
    (re.compile(r"--mode serve\b"), "blocks: serves until stopped"),
    (re.compile(r"https?://127\.0\.0\.1"), "needs the server of --mode serve"),
    (re.compile(r"\[cuda\d*\]|\[tpu\]"), "needs a GPU / TPU host"),
    (re.compile(r"--coordinator|--num_processes"), "needs several hosts"),
)
TESTS = re.compile(r"-m pytest\b")
WORKDIR = re.compile(r"--workdir[= ](\S+)")


def bash_commands(markdown: str) -> list[str]:
  """The commands of every ```bash block, continuation lines joined, comment lines dropped."""
  commands = []
  for block in re.findall(r"^```bash\n(.*?)^```", markdown, re.M | re.S):
    pending = ""
    for line in block.splitlines():
      if not pending and (not line.strip() or line.lstrip().startswith("#")):
        continue
      if line.rstrip().endswith("\\"):
        pending += line.rstrip()[:-1].rstrip() + " "
        continue
      commands.append((pending + line.strip()).strip())
      pending = ""
    if pending:
      commands.append(pending.strip())
  return commands


def without_install(command: str) -> str:
  """`command` without its `python3 -m venv` and `pip install` steps ("" if nothing is left)."""
  parts = [p for p in command.split(" && ")
           if not re.match(r"\s*python3? -m venv\b", p) and "pip install" not in p]
  return " && ".join(parts)


def plan(command: str, data: str, run_tests: bool, reuse_venv: bool) -> tuple[str, str]:
  """(the command to run, "") or (the command, why it is skipped)."""
  for pattern, reason in SKIPS:
    if pattern.search(command):
      return command, reason
  if TESTS.search(command) and not run_tests:
    return command, "the whole test suite (CI runs it; --run-tests)"
  if PLACEHOLDER.search(command):
    if not data:
      return command, "needs the Kaggle posters (a placeholder path; --data DIR)"
    command = PLACEHOLDER.sub(data, command)
  if reuse_venv:
    stripped = without_install(command)
    if not stripped:
      return command, "installs into the venv (--reuse-venv)"
    command = stripped
  return command, ""


def run(command: str, cwd: str, timeout: float) -> tuple[int | str, float, str]:
  """(exit code or "timeout", seconds, the output's last lines)."""
  start = time.monotonic()
  proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
    code = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGTERM)  # the command's own process group only
    try:
      out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      out, _ = proc.communicate()
    code = "timeout"
  tail = "\n".join((out or "").rstrip().splitlines()[-8:])
  return code, time.monotonic() - start, tail


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkout", default=".", help="the repository to run in (a fresh clone)")
  parser.add_argument("--readme", default="README.md", help="relative to --checkout")
  parser.add_argument("--timeout", type=float, default=900, help="seconds per command")
  parser.add_argument("--data", default="", help="the Kaggle posters' folder, for /path/to/...")
  parser.add_argument("--reuse-venv", default="", help="link this venv as the checkout's .venv")
  parser.add_argument("--run-tests", action="store_true", help="also run the test suite")
  parser.add_argument("--list", action="store_true", help="print the plan, run nothing")
  args = parser.parse_args()

  checkout = os.path.abspath(args.checkout)
  with open(os.path.join(checkout, args.readme)) as f:
    commands = bash_commands(f.read())
  if args.reuse_venv and not args.list:
    link = os.path.join(checkout, ".venv")
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(args.reuse_venv), link)
  data = os.path.abspath(args.data) if args.data else ""

  rows, failed, not_trained = [], 0, set()
  for i, command in enumerate(commands, 1):
    to_run, skip = plan(command, data, args.run_tests, bool(args.reuse_venv))
    workdirs = set(WORKDIR.findall(command))
    if not skip and workdirs & not_trained:
      skip = f"needs {', '.join(sorted(workdirs & not_trained))}, whose training was skipped"
    if skip and "--config" in command:  # a training command: its workdir will not exist
      not_trained |= workdirs
    print(f"\n[{i}/{len(commands)}] $ {command}", flush=True)
    if to_run != command and not skip:
      print(f"  ran as: {to_run}", flush=True)
    if skip or args.list:
      print(f"  skipped: {skip}" if skip else "  (--list: would run)", flush=True)
      rows.append((i, command, "skipped" if skip else "(would run)", skip))
      continue
    code, seconds, tail = run(to_run, checkout, args.timeout)
    print(f"  exit {code} after {seconds:.0f} s", flush=True)
    if code != 0:
      failed += 1
      print("  " + tail.replace("\n", "\n  "), flush=True)
    rows.append((i, command, str(code), f"{seconds:.0f} s"))

  print("\n| # | command | exit code | time / reason |\n|---|---|---|---|")
  for i, command, code, note in rows:
    shown = command if len(command) <= 110 else command[:107] + "..."
    print(f"| {i} | `{shown}` | {code} | {note} |")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
