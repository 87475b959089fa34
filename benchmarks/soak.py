"""Soak and hot swap: `tfbert serve` under sustained concurrent load.

The served model is the classifier :mod:`benchmarks.serving_speed` builds
(the real all-MiniLM-L6-v2 encoder, random 2-class head, exported with
WordPiece inside). ``tfbert serve`` runs in a subprocess with server-side
batching (``docker/batching_parameters.txt``: runs of at most 32 rows padded
to 1/4/8/16/32, large requests split) and answers a fixed, seeded plan of
Predict requests: each carries 1-8 texts drawn from :mod:`benchmarks.texts`
(short and long sentences), sent by ``--concurrency`` client threads.

Phases, in one server process:

1. warm-up: one request per (batch size, padded width) the plan can produce,
   then an untimed burst at full concurrency; the server's resident memory
   (``/proc/PID/status`` VmRSS) is read after it;
2. steady window: the first 30% of the plan, timed alone: req/s, texts/s,
   p50/p99 latency;
3. the rest of the plan while, in turn, version 2 is published (copied to a
   temporary sibling, then renamed) and must take over with no failed
   request, and a version 3 with truncated variables is published and must
   never answer while version 2 keeps answering;
4. drain: ``--concurrency`` requests of 8 texts are sent, SIGTERM follows
   0.2 s later; every one must be answered and the process must exit 0.

Every request of every phase must succeed. Memory is reported after
warm-up, after the swap has settled and at the end: growth over the last
phase (no loads happen there) is the leak signal.

The reference is the same SavedModel called in this process
(``serving_default``, batches of 32) on the same texts, in the order the
steady window sends them: served texts/s at concurrency 32 over in-process
texts/s is what batching, gRPC and the server cost.

Run: ``python -m benchmarks.soak [--requests 10000] [--concurrency 32]
[--json out.json]``; ``--requests 1000`` for a short run.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import common
from benchmarks.common import log
from benchmarks.serving_speed import BATCH, MODEL_NAME, export_classifier, tfbert_inprocess
from benchmarks.texts import texts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHING_FILE = os.path.join(ROOT, "docker", "batching_parameters.txt")
STEADY_SHARE = 0.3
SWAP_AT, BROKEN_AT = 0.4, 0.65  # fractions of the plan


# ----------------------------------------------------------------------------- server


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """``python -m tfbert serve`` in a subprocess; stderr goes to a file."""

    def __init__(self, base: str, workdir: str, batching_file: str, poll: float) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log_path = os.path.join(workdir, "serve.log")
        self._log = open(self.log_path, "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfbert", "serve", "--port", "0", "--model_name", MODEL_NAME,
             "--model_base_path", base, "--enable_batching",
             "--batching_parameters_file", batching_file,
             "--file_system_poll_wait_seconds", str(poll), "--shutdown_grace_seconds", "60"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT, env=env,
        )
        line = self.proc.stdout.readline()
        if " on " not in line:
            self.kill()
            raise SystemExit(f"tfbert serve did not start: {line!r}\n{self.tail()}")
        self.address = line.rsplit(" on ", 1)[1].split(",")[0].strip()

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        with open(self.log_path, encoding="utf-8") as f:
            return f.read()[-chars:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._log.close()


def publish(base: str, version: int, source: str, truncate_variables: bool = False) -> None:
    """Copies a version directory the way exports are published: temp sibling, rename."""
    tmp = os.path.join(base, f".tmp-{version}")
    shutil.copytree(source, tmp)
    if truncate_variables:
        variables = os.path.join(tmp, "variables")
        for name in os.listdir(variables):
            if ".data-" in name:
                path = os.path.join(variables, name)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
    os.rename(tmp, os.path.join(base, str(version)))


# ----------------------------------------------------------------------------- client


class Caller:
    """Predict over one shared channel; returns (ok, latency, version, error)."""

    def __init__(self, address: str) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        self.channel = grpc.insecure_channel(address)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def request(self, batch: list[str]):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs["text"].CopyFrom(
            tf.make_tensor_proto([t.encode("utf-8") for t in batch], dtype=tf.string))
        request.output_filter.append("labels")
        return request

    def call(self, batch: list[str], timeout: float = 120.0) -> tuple[bool, float, int, str]:
        request = self.request(batch)
        start = time.perf_counter()
        try:
            response = self.stub.Predict(request, timeout=timeout)
        except self._grpc.RpcError as exc:
            return False, time.perf_counter() - start, 0, f"{exc.code().name}: {exc.details()}"
        elapsed = time.perf_counter() - start
        if len(response.outputs["labels"].string_val) != len(batch):
            return False, elapsed, 0, "wrong number of labels"
        return True, elapsed, response.model_spec.version.value, ""

    def status(self) -> dict[int, tuple[str, str]]:
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL_NAME
        response = model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus(
            request, timeout=30)
        return {s.version: (get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                            s.status.error_message) for s in response.model_version_status}


def run_plan(caller: Caller, plan: list[list[str]], concurrency: int, on_answer=None,
             extend_while=None, deadline: float = 600.0) -> tuple[list, list[list[str]]]:
    """Sends every batch of ``plan`` from ``concurrency`` threads.

    ``on_answer(n, result)`` is called after the n-th answer. While
    ``extend_while()`` is true after the plan is exhausted, the plan is sent
    again from the start (at most ``deadline`` seconds more).

    Returns:
        (results, batches sent): per request (ok, latency s, version, error,
        end time), in the order the requests were taken.
    """
    results: list = []
    sent: list[list[str]] = []
    lock = threading.Lock()
    index = [0]
    stop_at = [None]

    def take() -> list[str] | None:
        with lock:
            i = index[0]
            if i >= len(plan):
                if extend_while is None or not extend_while():
                    return None
                if stop_at[0] is None:
                    stop_at[0] = time.perf_counter() + deadline
                if time.perf_counter() > stop_at[0]:
                    return None
            index[0] += 1
            return plan[i % len(plan)]

    def worker():
        while (batch := take()) is not None:
            ok, latency, version, error = caller.call(batch)
            result = (ok, latency, version, error, time.perf_counter())
            with lock:
                results.append(result)
                sent.append(batch)
                n = len(results)
            if on_answer is not None:
                on_answer(n, result)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return results, sent


def summarize(results, plan, wall: float) -> dict:
    latencies = [r[1] for r in results]
    texts_sent = sum(len(b) for b in plan)
    return {"requests": len(results), "texts": texts_sent,
            "failures": sum(not r[0] for r in results),
            "req_per_s": len(results) / wall, "texts_per_s": texts_sent / wall,
            "p50_ms": 1000 * common.percentile(latencies, 50),
            "p99_ms": 1000 * common.percentile(latencies, 99), "seconds": wall}


def make_plan(data: list[str], requests: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(data, rng.randint(1, 8)) for _ in range(requests)]


# ----------------------------------------------------------------------------- driver


def inprocess_rate(predict, sequence: list[str], reps: int = 3) -> float:
    """texts/s of the SavedModel called here on ``sequence`` in batches of 32."""
    batches = [sequence[i:i + BATCH] for i in range(0, len(sequence), BATCH)]
    for batch in batches[:4]:
        predict(batch)  # traces and compiles what the timed runs need
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        for batch in batches:
            predict(batch)
        seconds.append(time.perf_counter() - start)
    return len(sequence) / common.median(seconds)


def warm_shapes(caller: Caller, data: list[str], token_ids, sizes) -> int:
    """One request per (allowed batch size, padded width) the texts can produce."""
    by_width: dict[int, list[str]] = {}
    for text in data:
        by_width.setdefault(token_ids([text]).shape[1], []).append(text)
    sent = 0
    for group in by_width.values():
        for size in sizes:
            ok, _, _, error = caller.call((group * size)[:size])
            if not ok:
                raise SystemExit(f"warm-up request failed: {error}")
            sent += 1
    return sent


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=1)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="Predict requests in the soak (default 10000)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--texts", type=int, default=400, help="distinct texts to draw from")
    parser.add_argument("--batching-file", default=BATCHING_FILE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.requests < 100:
        raise SystemExit("--requests must be >= 100")

    from tfbert.serving.configs import parse_batching_parameters

    batching = parse_batching_parameters(args.batching_file)
    machine = common.machine_info()
    log(f"machine: {machine}")
    data = texts(args.texts)
    plan = make_plan(data, args.requests, args.seed)
    steady_n = int(len(plan) * STEADY_SHARE)
    steady, rest = plan[:steady_n], plan[steady_n:]
    swap_at, broken_at = (int(len(plan) * f) - steady_n for f in (SWAP_AT, BROKEN_AT))

    with tempfile.TemporaryDirectory(prefix="tfbert-soak-") as workdir:
        start = time.perf_counter()
        root, versions, _, _ = export_classifier(workdir, precisions=("fp32",))
        base, version_dir = os.path.join(root, MODEL_NAME), versions["fp32"]
        log(f"exported {version_dir} in {time.perf_counter() - start:.1f} s")
        predict, token_ids, _loaded = tfbert_inprocess(version_dir)
        sequence = [t for batch in steady for t in batch]
        inproc_before = inprocess_rate(predict, sequence)
        log(f"in-process, batches of {BATCH}: {inproc_before:.1f} texts/s")

        start = time.perf_counter()
        server = Server(base, workdir, args.batching_file, poll=0.5)
        load_seconds = time.perf_counter() - start
        caller = Caller(server.address)
        try:
            log(f"server up in {load_seconds:.1f} s at {server.address}")
            warmed = warm_shapes(caller, data, token_ids, batching.executed_batch_sizes)
            burst = make_plan(data, 4 * args.concurrency, args.seed + 1)
            if not all(r[0] for r in run_plan(caller, burst, args.concurrency)[0]):
                raise SystemExit(f"warm-up burst failed\n{server.tail()}")
            rss_warm = rss_mib(server.proc.pid)
            log(f"warm-up: {warmed} shapes + {len(burst)} requests; RSS {rss_warm:.0f} MiB")

            start = time.perf_counter()
            steady_results, _ = run_plan(caller, steady, args.concurrency)
            steady_row = summarize(steady_results, steady, time.perf_counter() - start)
            log(f"steady: {steady_row}")
            # Measured again right after (the server idle): a shared machine's
            # load drifts, and the mean of both brackets the steady phase.
            inproc_after = inprocess_rate(predict, sequence)
            inproc = (inproc_before + inproc_after) / 2
            log(f"in-process again: {inproc_after:.1f} texts/s")

            # Version 2 is published at SWAP_AT; version 3 (broken) once version
            # 2 answers and BROKEN_AT is reached; the phase goes on until the
            # server has refused version 3 and answered 50 more requests.
            events: dict[str, float] = {}
            rss_samples: list[tuple[float, float]] = []  # (time, MiB)
            v1 = os.path.join(base, "1")
            lock = threading.Lock()

            def watch_v3() -> None:
                while time.perf_counter() - events["broken"] < 600:
                    if caller.status().get(3, ("",))[0] == "END":
                        events["v3_refused"] = time.perf_counter()
                        return
                    time.sleep(0.5)

            def on_answer(n: int, result) -> None:
                with lock:
                    if result[0] and result[2] == 2 and "v2" not in events:
                        events["v2"] = result[4]
                    if n >= swap_at and "swap" not in events:
                        events["swap"] = time.perf_counter()
                        threading.Thread(target=publish, args=(base, 2, v1)).start()
                    if n >= broken_at and "v2" in events and "broken" not in events:
                        events["broken"] = time.perf_counter()
                        publish(base, 3, v1, truncate_variables=True)
                        threading.Thread(target=watch_v3, daemon=True).start()
                    if "v3_refused" in events and result[4] > events["v3_refused"]:
                        events["after_refused"] = events.get("after_refused", 0) + 1
                    if n % 200 == 0:
                        rss_samples.append((time.perf_counter(), rss_mib(server.proc.pid)))

            start = time.perf_counter()
            rest_results, rest = run_plan(
                caller, rest, args.concurrency, on_answer,
                extend_while=lambda: events.get("after_refused", 0) < 50)
            soak_wall = time.perf_counter() - start
            rss_end = rss_mib(server.proc.pid)
            status = caller.status()
            refused_at = events.get("v3_refused", float("inf"))
            after_broken = [r for r in rest_results if r[4] > refused_at]
            settled = [rss for at, rss in rss_samples if at > refused_at]
            rss_settled = settled[0] if settled else rss_end
            swap_row = summarize(rest_results, rest, soak_wall)
            swap = {
                "failures": swap_row["failures"],
                "errors": sorted({r[3] for r in rest_results if not r[0]})[:5],
                "versions": sorted({r[2] for r in rest_results if r[0]}),
                "v2_after_s": events["v2"] - events["swap"] if "v2" in events else None,
                "v3_served": any(r[2] == 3 for r in rest_results),
                "v3_state": status.get(3, ("missing", ""))[0],
                "v3_error": status.get(3, ("", ""))[1][:200],
                "answers_after_broken": len(after_broken),
                "answers_after_broken_ok": sum(r[0] and r[2] == 2 for r in after_broken),
            }
            log(f"soak with swap: {swap_row}; {swap}")

            # Drain: requests in flight when SIGTERM arrives are all answered.
            drain_plan = make_plan(data, args.concurrency, args.seed + 2)
            drain_plan = [(b * 8)[:8] for b in drain_plan]
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                futures = [pool.submit(caller.call, b, 120.0) for b in drain_plan]
                time.sleep(0.2)
                sigterm = time.perf_counter()
                server.proc.send_signal(signal.SIGTERM)
                drained = [f.result() for f in futures]
            exit_code = server.proc.wait(timeout=120)
            drain = {"requests": len(drained), "answered": sum(r[0] for r in drained),
                     "errors": sorted({r[3] for r in drained if not r[0]})[:3],
                     "exit_code": exit_code,
                     "exit_after_s": time.perf_counter() - sigterm}
            log(f"drain: {drain}")
        finally:
            caller.channel.close()
            log_tail = server.tail()
            server.kill()

    total = steady_row["requests"] + swap_row["requests"]
    failures = steady_row["failures"] + swap_row["failures"]
    ratio = steady_row["texts_per_s"] / inproc
    memory = {"after_warmup_mib": rss_warm, "after_swap_mib": rss_settled, "end_mib": rss_end,
              "growth_after_swap_mib": rss_end - rss_settled,
              "growth_after_warmup_mib": rss_end - rss_warm,
              "max_mib": max([rss_warm, rss_end] + [r for _, r in rss_samples])}
    ok = (failures == 0 and swap["versions"] == [1, 2] and not swap["v3_served"]
          and swap["v3_state"] == "END"
          and swap["answers_after_broken_ok"] == swap["answers_after_broken"] > 0
          and drain["answered"] == drain["requests"] and exit_code == 0)

    rows = [
        ["steady (first 30%)", steady_row["requests"], steady_row["failures"],
         common.fmt(steady_row["req_per_s"]), common.fmt(steady_row["texts_per_s"]),
         common.fmt(steady_row["p50_ms"], 0), common.fmt(steady_row["p99_ms"], 0)],
        ["with hot swap + broken version", swap_row["requests"], swap_row["failures"],
         common.fmt(swap_row["req_per_s"]), common.fmt(swap_row["texts_per_s"]),
         common.fmt(swap_row["p50_ms"], 0), common.fmt(swap_row["p99_ms"], 0)],
    ]
    md = [
        f"{total} Predict requests of 1-8 texts at concurrency {args.concurrency} through "
        f"`tfbert serve` (subprocess, batching: max_execution_batch_size "
        f"{batching.execution_batch_size}, allowed {list(batching.executed_batch_sizes)}, "
        f"batch_timeout_micros {batching.batch_timeout_micros}, num_batch_threads "
        f"{batching.num_batch_threads}); {failures} failed:", "",
        common.markdown_table(["phase", "requests", "failed", "req/s", "texts/s", "p50 ms",
                               "p99 ms"], rows),
        "",
        f"- Served vs in-process: {common.fmt(steady_row['texts_per_s'])} texts/s served at "
        f"concurrency {args.concurrency} vs {common.fmt(inproc)} texts/s for the same "
        f"SavedModel called in-process in batches of {BATCH} on the same texts (mean of "
        f"{common.fmt(inproc_before)} before and {common.fmt(inproc_after)} after the "
        f"steady phase): **{100 * ratio:.0f}%**.",
        f"- Hot swap: version 2 answered {swap['v2_after_s']:.1f} s after it was published"
        if swap["v2_after_s"] is not None else "- Hot swap: version 2 never answered",
        f"  ({swap['failures']} failed requests during the swap); version 3 (truncated "
        f"variables) {'was served' if swap['v3_served'] else 'was never served'}, state "
        f"{swap['v3_state']}; {swap['answers_after_broken_ok']} of "
        f"{swap['answers_after_broken']} requests after its refusal answered by version 2.",
        f"- Drain: SIGTERM with {drain['requests']} requests in flight: {drain['answered']} "
        f"answered, exit code {drain['exit_code']} after {drain['exit_after_s']:.1f} s.",
        f"- Server memory (VmRSS): {memory['after_warmup_mib']:.0f} MiB after warm-up, "
        f"{memory['after_swap_mib']:.0f} MiB once the swap settled, {memory['end_mib']:.0f} MiB "
        f"at the end ({memory['growth_after_swap_mib']:+.0f} MiB since the swap settled); "
        f"max {memory['max_mib']:.0f} MiB.",
        f"- Server start (export load and warmup replay): {load_seconds:.1f} s; "
        f"load average at start: {machine['load_at_start']}, at end: "
        f"{common.load_average():.2f}.",
    ]
    markdown = "\n".join(md)
    print(markdown)
    result = dict(benchmark="soak", machine=machine, reps=1,
                  versions=common.library_versions("tensorflow", "tensorflow-text", "grpcio"),
                  requests=total, concurrency=args.concurrency, failures=failures,
                  steady=steady_row, swap_phase=swap_row, swap=swap, drain=drain,
                  memory=memory, inprocess_texts_per_s=inproc,
                  inprocess_before_after=[inproc_before, inproc_after], served_vs_inprocess=ratio,
                  load_seconds=load_seconds, ok=ok, markdown=markdown)
    common.write_json(args.json, result)
    if not ok:
        sys.stderr.write(f"soak FAILED\n{log_tail}\n")
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

