"""Run every benchmark and rewrite the tables in BENCHMARKS.md.

``make bench`` runs ``python -m benchmarks.run_all``. Each benchmark runs in
its own process (TensorFlow, PyTorch and ONNX Runtime thread pools of one
benchmark never overlap another's) and hands back JSON, kept in
``benchmarks/results/<name>.json``; the markdown between ``<!-- BEGIN name -->``
and ``<!-- END name -->`` in BENCHMARKS.md is then replaced, the hand-written
text around it is kept, the machine block lists every kept result (so a
partial ``--only`` run keeps the others' dates), and ``benchmarks.chart``
redraws ``docs/benchmarks.png``.

The machine is shared: before each benchmark this waits (up to ``--wait``
seconds) for the 1-minute load average to fall below ``--max-load``, and the
tables record the load at the start and end of each run.

Usage: ``python -m benchmarks.run_all [--reps N] [--only encoder_speed ...]
[--no-write]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks import chart, common

BENCHMARKS = ("encoder_speed", "pretrain_speed", "accumulation_speed", "compile_policy",
              "serving_speed", "bf16_accuracy", "profile_ops", "warmup_latency", "soak",
              "qa_speed")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "BENCHMARKS.md")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def wait_for_quiet(max_load: float, wait: float) -> float:
    deadline = time.monotonic() + wait
    load = common.load_average()
    while load >= max_load and time.monotonic() < deadline:
        common.log(f"load average {load:.2f} >= {max_load}; waiting for a quieter machine")
        time.sleep(15)
        load = common.load_average()
    if load >= max_load:
        common.log(f"load average still {load:.2f}: measuring anyway (numbers will be noisy)")
    return load


def run_one(name: str, reps: int | None, workdir: str) -> dict:
    out = os.path.join(workdir, f"{name}.json")
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--json", out]
    if reps is not None:
        cmd += ["--reps", str(reps)]
    common.log(f"$ {' '.join(cmd[1:])}")
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(out, encoding="utf-8") as f:
        result = json.load(f)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def machine_block(results: list[dict]) -> str:
    """The machine block over every kept result (machine facts from the newest)."""
    results = sorted(results, key=lambda r: r["machine"]["date"])
    m = results[-1]["machine"]
    versions: dict[str, str] = {}
    dates: dict[str, list[str]] = {}
    for r in results:
        versions.update(r.get("versions", {}))
        dates.setdefault(r["machine"]["date"], []).append(r["benchmark"])
    lines = [
        "- Dates: " + "; ".join(f"{d} ({', '.join(names)})" for d, names in dates.items()),
        f"- CPU: {m['cpu']} (/proc/cpuinfo), {m['cores']} cores visible, "
        f"{m.get('memory_gib', '?')} GiB; flags: {', '.join(m['flags'])}",
        f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- Wall time: " + ", ".join(f"{r['benchmark']} {r.get('wall_seconds', 0):.0f} s"
                                   for r in results),
    ]
    return "\n".join(lines)


def keep(result: dict) -> None:
    """Store a benchmark's JSON in ``benchmarks/results/`` (atomically)."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{result['benchmark']}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + f"\n\n{block}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--reps", type=int, help="timed repetitions (each benchmark's default)")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--wait", type=float, default=180.0,
                        help="seconds to wait for --max-load before each benchmark")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.reps is not None:
        common.check_reps(args.reps)

    results, failed = [], []
    with tempfile.TemporaryDirectory(prefix="tfbert-bench-") as workdir:
        for name in args.only:
            wait_for_quiet(args.max_load, args.wait)
            try:
                result = run_one(name, args.reps, workdir)
            except subprocess.CalledProcessError as exc:
                # One broken benchmark must not cost the others' results.
                common.log(f"{name} failed (exit {exc.returncode}); its table is kept as it was")
                failed.append(name)
                continue
            results.append(result)
            if not args.no_write:
                keep(result)

    for r in results:
        print(f"\n## {r['benchmark']}\n\n{r['markdown']}\n")
    if args.no_write or not results:
        sys.exit(1 if failed else 0)
    text = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else "# Benchmarks\n"
    text = replace_section(text, "machine",
                           machine_block(list(chart.load_results(RESULTS).values())))
    for r in results:
        command = f"python -m benchmarks.{r['benchmark']}"
        body = f"`{command}` (reps {r['reps']}):\n\n{r['markdown']}"
        text = replace_section(text, r["benchmark"], body)
    with open(DOC + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(DOC + ".tmp", DOC)
    common.log(f"rewrote {DOC}")
    drawn = chart.draw(chart.load_results(RESULTS), chart.OUT)
    if drawn:
        common.log(f"drew {drawn}")
    if failed:
        common.log(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
