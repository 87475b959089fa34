"""Speed comparisons of tfbert against keras-hub, Hugging Face (PyTorch) and ONNX Runtime.

Each module runs tfbert and its peers in the same process and prints a table
with ratios and MFU; ``python -m benchmarks.run_all`` runs them all and
rewrites the tables in ``BENCHMARKS.md``.

- ``python -m benchmarks.encoder_speed``: encoder forward/train throughput vs
  keras-hub ``BertBackbone`` and Hugging Face ``BertModel`` on PyTorch.
- ``python -m benchmarks.serving_speed``: served classifier throughput and
  gRPC latency through ``tfbert serve`` vs HF + PyTorch and ONNX Runtime.

Shared timing, FLOP and table helpers are in :mod:`benchmarks.common`.
"""
