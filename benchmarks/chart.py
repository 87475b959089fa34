"""The standing at a glance: serving and training throughput of every contender.

Reads the results `run_all` keeps in ``benchmarks/results/`` (the JSON each
benchmark writes) and draws ``docs/benchmarks.png``: one panel of served
text -> probabilities throughput (``serving_speed``) and one of train-step
throughput (``encoder_speed``), a bar per contender coloured by precision,
each labelled with its ratio to the panel's reference (ONNX Runtime fp32 for
serving, keras-hub fp32 without XLA for training). A benchmark that was never
run leaves its panel out.

Run: ``python -m benchmarks.chart [--results DIR] [--out PNG]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
OUT = os.path.join(ROOT, "docs", "benchmarks.png")
COLOURS = {"fp32": "#4c72b0", "bf16": "#dd8452", "int8": "#55a868"}
# (benchmark, record list, throughput field, reference contender, title)
PANELS = (
    ("serving_speed", "throughput", "texts_per_s", "ONNX Runtime",
     "Served classifier: text -> probabilities (texts/s, batch 32, real texts)"),
    ("encoder_speed", "train", "seq_per_s", "keras-hub BertBackbone, no XLA",
     "Train step: forward + backward + AdamW (seq/s, MiniLM-L6 shape, 32 x 128)"),
)


def load_results(directory: str) -> dict[str, dict]:
    results = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".json"):
                with open(os.path.join(directory, name), encoding="utf-8") as f:
                    data = json.load(f)
                results[data.get("benchmark", name[:-5])] = data
    return results


def draw(results: dict[str, dict], out: str) -> str | None:
    """Write the chart to ``out``; None (and no file) when no panel has data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(p, results[p[0]]) for p in PANELS if results.get(p[0], {}).get(p[1])]
    if not panels:
        return None
    heights = [0.45 * len(r[p[1]]) + 1.2 for p, r in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, ((benchmark, key, field, reference, title), result) in zip(
            axes[:, 0], panels, strict=True):
        records = sorted(result[key], key=lambda r: r[field])
        by_name = {r["name"]: r[field] for r in records}
        ref = by_name.get(reference)
        names = [r["name"] for r in records]
        values = [r[field] for r in records]
        colours = [COLOURS.get(r.get("precision", "fp32"), "#8172b2") for r in records]
        bars = ax.barh(names, values, color=colours)
        for bar, name, value in zip(bars, names, values, strict=True):
            if name.startswith("tfbert"):
                bar.set_edgecolor("black")
                bar.set_linewidth(1.5)
            label = f" {value:,.0f}"
            if ref:
                label += f"  ({value / ref:.2f}x)"
            ax.text(value, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
        ax.set_title(title + (f"; ratios vs {reference}" if ref else ""), fontsize=9)
        ax.set_xlim(0, max(values) * 1.3)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlabel(f"{field.replace('_per_s', '')}/s  ({benchmark}, "
                      f"{result.get('machine', {}).get('date', '')})", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="lower right", fontsize=8, title="precision",
               title_fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS, help="directory of benchmark JSON")
    parser.add_argument("--out", default=OUT, help="PNG to write")
    args = parser.parse_args(argv)
    path = draw(load_results(args.results), args.out)
    print(f"wrote {path}" if path else "no results to draw")


if __name__ == "__main__":
    main(sys.argv[1:])
