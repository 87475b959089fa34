"""`tfbert demo`: the main job end to end on the bundled data and MiniLM.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["demo", "--epochs", "1"])
>>> args.workdir, args.base, args.epochs, args.port
('runs/demo', 'savedmodels', 1, 0)
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add `demo` to the `tfbert` subparsers."""
    p = subparsers.add_parser(
        "demo", help="end-to-end main job on an embedded default",
        description="Fine-tune the pretrained all-MiniLM-L6-v2 on a small bundled topic "
        "dataset, export it to savedmodels/demo/<version>, check it, serve it with the "
        "embedded gRPC server and query it.")
    p.add_argument("--workdir", default="runs/demo", help="fine-tuning output (runs/demo)")
    p.add_argument("--base", default="savedmodels", help="model base root (savedmodels)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--port", type=int, default=0, help="gRPC port; 0 picks a free one")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Fine-tune, export, check, serve and query; returns 0."""
    from tfbert.demo import run_demo as demo

    demo(workdir=args.workdir, base=args.base, epochs=args.epochs, port=args.port)
    return 0
