"""Wall time and peak RSS of short CLI calls, as a user runs them: ``rscore --version``, ``rscore plugins list`` and a
64x64 ``rscore run`` with the default matcher (sentence embeddings) and with ``--matcher keyword``.

Each command runs as a child process (``python -m rscore ...``); its own peak RSS comes from ``os.wait4``
(``ru_maxrss``), its CPU seconds (user + system) too: on a loaded machine CPU time stays near the quiet figure
while wall time grows with the queue for the cores, so the table prints both and the load average at start and end.
Every row is repeated ``--repeat`` times, rows interleaved round-robin so that load from other work
on the machine hits all of them alike; the table shows the median wall time and the largest peak RSS.

Bytecode: a user's install runs from compiled ``.pyc`` files (pip writes them when it installs; an editable install
on the first import). A shell with ``PYTHONDONTWRITEBYTECODE=1`` (this project's worktrees set it) compiles every
rscore module from source in every call instead: ~0.25 CPU-s a run that no user pays. The children therefore
run with the variable removed and ``PYTHONPYCACHEPREFIX`` under ``--workdir`` (no ``__pycache__`` in the checkout;
the warm-up fills it); ``--no-bytecode-cache`` measures the old way. ``OPENBLAS_THREAD_TIMEOUT`` is removed from the
children's environment too, so that "before" rows run as a user's shell would and "after" rows set it themselves.

Rows:

- ``after``: this checkout (the numpy MiniLM forward, template vectors from the on-disk cache, which the first
  ``cold cache`` row fills: ``RSCORE_CACHE_DIR`` points into ``--workdir``).
- ``after, new query``: the same with a query text never seen before in every call (the query is embedded in the
  run, the template vectors come from the cache): what a user typing a new question gets.
- ``after, cold cache``: the same with the cache emptied before every call (template texts embedded in the run).
- ``reference embedder``: this checkout with ``RSCORE_EMBEDDER=sentence-transformers`` (torch).
- ``before``: with ``--before SRC`` (a checkout of an older commit, e.g. ``/work/main``), the same commands with
  that tree's sources first on ``PYTHONPATH`` (same interpreter and site-packages).

::

    python benchmarks/bench_cli_startup.py --before /work/main
    python benchmarks/bench_cli_startup.py --quick --repeat 7 --before /tmp/old-a --before /tmp/old-b
    python benchmarks/bench_cli_startup.py --repeat 5 --json out.json
    python benchmarks/bench_cli_startup.py --quick --repeat 7 --importtime --before /tmp/old   # + import profile

``--importtime`` runs every row once more under ``python -X importtime`` and prints the sum of the modules' own
import times, the number of modules and the packages that cost most (self time summed per top-level package):
which libraries a command loads. Import times are wall times per module, so they grow with the machine's load too:
compare rows of one run.

Issue 22 target: the default-matcher run <= 1.0 s wall and <= 250 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("earth", "safety", "surgical", "underwater")


def pythonpath(src: Path) -> str:
    parts = [src, src / "flows", *(src / "plugins" / p / "src" for p in PLUGINS)]
    return os.pathsep.join(str(p) for p in parts)


def run_child(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, float]:
    """Wall seconds, peak RSS (MiB), exit code and CPU seconds (user + system) of ``cmd`` (run in ``cwd``: ``python -m`` puts the working
    directory first on sys.path, so it must not be a checkout)."""
    t0 = time.perf_counter()
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=quiet, stderr=quiet, stdin=quiet, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def import_profile(cmd: list[str], env: dict[str, str], cwd: Path, top: int = 6) -> dict[str, Any]:
    """``cmd`` (``python -m rscore ...``) once under ``-X importtime``: total self time (s), module count and the
    ``top`` top-level packages by summed self time."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    per_package: dict[str, int] = {}
    n = 0
    for line in proc.stderr.splitlines():
        parts = line.split("|")  # "import time: SELF | CUMULATIVE | NAME" (the header line has no digits)
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].split(":")[1].strip().isdigit():
            continue
        n += 1
        package = parts[2].strip().split(".")[0]
        per_package[package] = per_package.get(package, 0) + int(parts[0].split(":")[1])
    ranked = sorted(per_package.items(), key=lambda kv: -kv[1])[:top]
    return {"import_s": sum(per_package.values()) / 1e6, "modules": n,
            "top": [(name, us / 1e6) for name, us in ranked]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, action="append", default=[],
                    help="checkout root of the code to compare against (e.g. /work/main); repeat it to compare "
                         "several (rows 'before: NAME', NAME = the folder's name)")  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="leave out the slow rows (cold cache, reference embedder): for side-by-side start-up figures")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rscore-bench-cli"))
    ap.add_argument("--plugin", default="underwater")
    ap.add_argument("--query", default="where is the sea floor")
    ap.add_argument("--input", type=Path, help="run on this file instead of a 64x64 PNG (e.g. a CT slice with "
                    "--plugin surgical --query 'the body')")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--importtime", action="store_true",
                    help="also profile each row's imports once (python -X importtime): total, modules, top packages")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as the shell has it (every module compiled in every call)")
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    args.workdir.mkdir(parents=True, exist_ok=True)
    img = args.workdir / "img64.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(img)
    what = "64x64"
    if args.input is not None:
        img, what = args.input.resolve(), args.input.name
    cache = args.workdir / "cache"

    base = {**os.environ, "RSCORE_CACHE_DIR": str(cache)}
    base.pop("RSCORE_MATCHER", None)
    base.pop("RSCORE_EMBEDDER", None)
    base.pop("OPENBLAS_THREAD_TIMEOUT", None)
    if not args.no_bytecode_cache:  # compiled once (in the warm-up), as in an installed copy
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = str(args.workdir / "pycache")
    variants: list[tuple[str, dict[str, str], bool]] = [
        ("after", {**base, "PYTHONPATH": pythonpath(ROOT)}, False),
        ("after, new query", {**base, "PYTHONPATH": pythonpath(ROOT)}, False),
        ("after, cold cache", {**base, "PYTHONPATH": pythonpath(ROOT)}, True),
        ("reference embedder",
         {**base, "PYTHONPATH": pythonpath(ROOT), "RSCORE_EMBEDDER": "sentence-transformers"}, False),
    ]
    if args.quick:
        variants = [v for v in variants if v[0] in ("after", "after, new query")]
    for src in args.before:
        name = "before" if len(args.before) == 1 else f"before: {src.resolve().name}"
        variants.append((name, {**base, "PYTHONPATH": pythonpath(src.resolve())}, False))

    py = [sys.executable, "-m", "rscore"]

    def out(tag: str) -> list[str]:  # a fresh folder per run (an existing one may belong to another version)
        folder = args.workdir / f"out-{tag}"
        shutil.rmtree(folder, ignore_errors=True)
        return ["-o", str(folder)]

    commands = [
        ("--version", py + ["--version"], ("after", "before")),
        ("plugins list", py + ["plugins", "list"], ("after", "before")),
        (f"run {what} (default matcher)", py + ["run", str(img), args.query, "-p", args.plugin], None),
        (f"run {what} --matcher keyword", py + ["run", str(img), args.query, "-p", args.plugin, "--matcher", "keyword"],
         ("after", "before")),
    ]
    rows: list[tuple[str, str, list[str], dict[str, str], bool]] = []
    for cname, cmd, only in commands:
        for vname, env, cold in variants:
            if only is None or vname.split(":")[0] in only:
                rows.append((cname, vname, cmd, env, cold))

    fresh = iter(range(10**6))

    def argv(cmd: list[str], vname: str, i: int) -> list[str]:
        if "run" not in cmd:
            return cmd
        if vname == "after, new query":  # the query is the argument after the image
            at = cmd.index(str(img)) + 1
            cmd = [*cmd[:at], f"{cmd[at]} (question {next(fresh)} {os.getpid()} {time.time()})", *cmd[at + 1:]]
        return cmd + out(str(i))

    load_start = os.getloadavg()[0]
    # warm-up: fills the embedding cache and the OS page cache for every variant
    for i, (cname, vname, cmd, env, _) in enumerate(rows):
        run_child(argv(cmd, vname, i), env, args.workdir)
    samples: dict[int, list[tuple[float, float, int, float]]] = {i: [] for i in range(len(rows))}
    for _ in range(args.repeat):
        for i, (cname, vname, cmd, env, cold) in enumerate(rows):
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            # (a cold row's own run refills the cache for the warm rows of the next round)
            samples[i].append(run_child(argv(cmd, vname, i), env, args.workdir))

    figures: list[dict[str, Any]] = []
    print(f"{'command':32} {'variant':22} {'wall s (median)':>16} {'CPU s (median)':>15} {'peak RSS MiB':>13} "
          f"{'exit':>5}")
    for i, (cname, vname, _cmd, _env, _cold) in enumerate(rows):
        walls = [s[0] for s in samples[i]]
        rss = max(s[1] for s in samples[i])
        codes = sorted({s[2] for s in samples[i]})
        cpu = statistics.median(s[3] for s in samples[i])
        figures.append({"command": cname, "variant": vname, "wall_s": statistics.median(walls), "walls": walls,
                        "cpu_s": cpu, "peak_rss_mib": rss, "exit_codes": codes})
        print(f"{cname:32} {vname:22} {statistics.median(walls):16.2f} {cpu:15.2f} {rss:13.1f} "
              f"{','.join(map(str, codes)):>5}")
    target = next(f for f in figures if f["command"].startswith(f"run {what} (default") and f["variant"] == "after")
    ok = target["wall_s"] <= 1.0 and target["peak_rss_mib"] <= 250
    print(f"target (default-matcher run <= 1.0 s and <= 250 MiB{'' if args.input is None else ', on ' + what}): "
          f"{'meets' if ok else 'MISSES'} "
          f"({target['wall_s']:.2f} s wall, {target['cpu_s']:.2f} CPU-s, {target['peak_rss_mib']:.0f} MiB); "
          f"load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end on {os.cpu_count()} cores; "
          f"bytecode {'compiled in every call' if args.no_bytecode_cache else 'cached'}")
    if args.importtime:
        print(f"\n{'command':32} {'variant':22} {'imports s':>10} {'modules':>8}  packages by own import time (s)")
        for i, (cname, vname, cmd, env, cold) in enumerate(rows):
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            prof = import_profile(argv(cmd, vname, i), env, args.workdir)
            figures[i]["imports"] = prof
            top = ", ".join(f"{name} {sec:.3f}" for name, sec in prof["top"])
            print(f"{cname:32} {vname:22} {prof['import_s']:10.3f} {prof['modules']:8d}  {top}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
