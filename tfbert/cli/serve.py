"""`tfbert serve` and `tfbert query`.

Importing this module is cheap (no TensorFlow): the server and client are
imported when a command runs. Flags of `serve` mirror
`tensorflow_model_server`; booleans accept both `--enable_batching` and
`--enable_batching=true|false`, as TF Serving's do. `python -m tfbert serve
...` runs the server alone (e.g. in a subprocess).

A bad flag or config file raises `tfbert.errors.ConfigError` and a failed
RPC the client's `ServingError` (a `tfbert.errors.ServingError`);
`tfbert.cli.main` prints either as one line and exits 2.

Example:

>>> import argparse
>>> args = add_serve_arguments(argparse.ArgumentParser()).parse_args(
...     ["--model_base_path", "savedmodels/clf", "--enable_batching=false"])
>>> args.port, args.host, args.model_name, args.enable_batching
(8500, '127.0.0.1', None, False)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from tfbert.errors import ConfigError

PROG_SERVE = "tfbert serve"


def register(subparsers) -> None:
    """Add `serve` and `query` to the `tfbert` subparsers."""
    p = subparsers.add_parser("serve", help="embedded TF-Serving-compatible gRPC/REST server",
                              description="Serve SavedModels over TF Serving's gRPC API "
                              "(PredictionService, ModelService), and its REST API with "
                              "--rest_api_port, with TF Serving's layout and flags.")
    add_serve_arguments(p)
    p.set_defaults(run=run_serve)
    q = subparsers.add_parser("query", help="query TF Serving or `tfbert serve` (gRPC or REST)",
                              description="Send texts to a served model and print JSON.")
    add_query_arguments(q)
    q.set_defaults(run=run_query)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds `tfbert serve` flags (TF Serving's names) to `parser`; returns it."""
    parser.add_argument("--port", type=int, default=8500,
                        help="gRPC port (default 8500; 0 picks a free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--model_name", default=None,
                        help="name of the single model to serve (with --model_base_path)")
    parser.add_argument("--model_base_path", default=None,
                        help="directory holding the model's numeric version directories")
    parser.add_argument("--model_config_file", default=None,
                        help="ModelServerConfig text file (several models); "
                             "base_path entries must be absolute")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                        help="re-read --model_config_file this often and apply changes "
                             "(models added/removed, policies, labels) without a restart "
                             "(default 0: read once)")
    parser.add_argument("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?",
                        const=True, default=False,
                        help="let a new version label point at a version that is not loaded "
                             "yet (a label in use still moves only to an AVAILABLE version)")
    parser.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False,
                        help="merge concurrent requests into batches")
    parser.add_argument("--batching_parameters_file", default=None,
                        help="BatchingParameters text file (TF Serving format)")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="seconds between scans for new versions (0: scan once)")
    parser.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024,
                        help="largest request message accepted (default 64 MiB)")
    parser.add_argument("--max_request_input_bytes", type=int, default=16 * 1024 * 1024,
                        help="most bytes of input tensors per request (text bytes plus "
                             "numeric data; default 16 MiB; 0: no limit); larger requests get "
                             "RESOURCE_EXHAUSTED. Requests with many rows are run in pieces, "
                             "not refused")
    parser.add_argument("--max_request_batch_size", type=int, default=0,
                        help="most rows per request (default 0: no limit; it was 1024 "
                             "before large requests were split); more rows get "
                             "INVALID_ARGUMENT")
    parser.add_argument("--grpc_max_threads", type=int, default=0,
                        help="gRPC handler threads (default: max(32, 2 x the batch size run "
                             "at once))")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="port of TF Serving's REST API (default 0: none; -1 picks a "
                             "free port); must differ from --port")
    parser.add_argument("--rest_api_num_threads", type=int, default=0,
                        help="REST request threads (default: as many as gRPC's)")
    parser.add_argument("--rest_api_enable_cors_support", type=_bool, nargs="?", const=True,
                        default=False, help="add CORS headers to REST answers")
    parser.add_argument("--enable_grpc_healthcheck_service", type=_bool, nargs="?", const=True,
                        default=True,
                        help="serve grpc.health.v1.Health on the gRPC port: SERVING once every "
                             "model has a version AVAILABLE, NOT_SERVING while loading and "
                             "shutting down (default true; false turns it off)")
    parser.add_argument("--monitoring_config_file", default=None,
                        help="MonitoringConfig text file (TF Serving format); with "
                             "prometheus_config { enable: true } the REST port serves "
                             "Prometheus metrics (needs --rest_api_port)")
    parser.add_argument("--ssl_config_file", default=None,
                        help="SSLConfig text file (TF Serving format: server_key, server_cert, "
                             "custom_ca, client_verify): TLS on the gRPC and REST ports")
    parser.add_argument("--shutdown_grace_seconds", type=float, default=10.0,
                        help="on SIGTERM/SIGINT, how long in-flight requests may finish")
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Runs the server until SIGTERM/SIGINT; returns 0.

    Prints `tfbert serve: serving NAME version V on HOST:PORT` on stdout
    (followed by `, REST on HOST:PORT` with `--rest_api_port`) once every
    model's current version is loaded and the ports are bound.

    Raises:
        ConfigError: bad flags or config files, a missing base path, a port
            that cannot be bound.
    """
    if args.model_config_file and (args.model_name or args.model_base_path):
        raise ConfigError("give --model_config_file or --model_name/--model_base_path, not both")
    if not (args.model_config_file or args.model_base_path):
        raise ConfigError("give --model_base_path (with --model_name) or --model_config_file")
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    from tfbert.serving.server import ModelServer

    if args.model_config_file:
        server = ModelServer(
            model_config_file=args.model_config_file,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
            **_options(args),
        )
    else:
        server = ModelServer(
            model_name=args.model_name or "default",  # TF Serving's default name
            model_base_path=args.model_base_path,
            **_options(args),
        )
    if args.batching_parameters_file and not args.enable_batching:
        logging.getLogger("tfbert.serving").warning(
            "--batching_parameters_file is ignored without --enable_batching"
        )
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # Installed before loading so a SIGTERM during a slow load still
        # ends in a clean stop instead of a KeyboardInterrupt traceback.
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        rest = f", REST on {server.rest_address}" if server.rest_address else ""
        print(f"{PROG_SERVE}: serving {server.describe()} on {server.address}{rest}", flush=True)
        while not stop.wait(0.5):  # short waits keep signal delivery prompt
            pass
        print(f"{PROG_SERVE}: shutting down", file=sys.stderr, flush=True)
        server.stop(grace=args.shutdown_grace_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from tfbert.serving.configs import parse_batching_parameters
    from tfbert.serving.metrics import parse_monitoring_config_file
    from tfbert.serving.tls import SslConfig

    batching = None
    if args.enable_batching and args.batching_parameters_file:
        batching = parse_batching_parameters(args.batching_parameters_file)
    monitoring, ssl_config = args.monitoring_config_file, args.ssl_config_file
    return {
        "enable_grpc_healthcheck_service": bool(args.enable_grpc_healthcheck_service),
        "monitoring_config": parse_monitoring_config_file(monitoring) if monitoring else None,
        "ssl_config": SslConfig.from_file(ssl_config) if ssl_config else None,
        "host": args.host,
        "port": args.port,
        "enable_batching": bool(args.enable_batching),
        "batching_parameters": batching,
        "file_system_poll_wait_seconds": args.file_system_poll_wait_seconds,
        "max_request_bytes": args.max_request_bytes,
        "max_request_batch_size": args.max_request_batch_size or None,
        "max_request_input_bytes": args.max_request_input_bytes or None,
        "allow_version_labels_for_unavailable_models":
            bool(args.allow_version_labels_for_unavailable_models),
        "grpc_max_threads": args.grpc_max_threads or None,
        "rest_api_port": args.rest_api_port,
        "rest_api_num_threads": args.rest_api_num_threads or None,
        "rest_api_enable_cors_support": bool(args.rest_api_enable_cors_support),
    }


def add_query_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds `tfbert query` flags to `parser`; returns it."""
    parser.add_argument("--server", default=None,
                        help="HOST:PORT (default localhost:8500, with --rest localhost:8501)")
    parser.add_argument("--rest", action="store_true",
                        help="use TF Serving's REST API (JSON over HTTP) instead of gRPC")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--signature", default=None,
                        help="signature key (default serving_default; classify with --classify)")
    parser.add_argument("--version", type=int, default=None, help="model version (default latest)")
    parser.add_argument("--input_name", default="text",
                        help="input tensor for the texts (default text)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--classify", action="store_true", help="use the Classify RPC")
    mode.add_argument("--metadata", action="store_true", help="print the model's signatures")
    mode.add_argument("--status", action="store_true", help="print the model's version states")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, trusting the system's CAs (implied by "
                             "--ca-cert and --client-cert)")
    parser.add_argument("--ca-cert", "--ca_cert", dest="ca_cert", default=None, metavar="FILE",
                        help="TLS: PEM file of the CA that signed the server's certificate")
    parser.add_argument("--client-cert", "--client_cert", dest="client_cert", default=None,
                        metavar="FILE",
                        help="TLS: PEM client certificate, for servers that require one "
                             "(with --client-key)")
    parser.add_argument("--client-key", "--client_key", dest="client_key", default=None,
                        metavar="FILE", help="TLS: PEM private key of --client-cert")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to send (default: one per line from stdin)")
    return parser


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def run_query(args: argparse.Namespace) -> int:
    """Sends one request and prints the result as JSON; returns 0.

    Raises:
        ConfigError: no texts to send.
        tfbert.serving.ServingError: the RPC failed (its gRPC status code
            and the server's message).
    """
    texts = list(args.texts)
    needs_texts = not (args.metadata or args.status)
    if needs_texts and not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise ConfigError("no TEXT given (as arguments or stdin lines)")
    from tfbert.serving.client import Client
    from tfbert.serving.tls import TlsOptions

    tls = None
    if args.tls or args.ca_cert or args.client_cert or args.client_key:
        tls = TlsOptions(args.ca_cert, args.client_cert, args.client_key)
    server = args.server or ("localhost:8501" if args.rest else "localhost:8500")
    with Client(server, timeout=args.timeout, rest=args.rest, tls=tls) as client:
        if args.status:
            result: Any = client.status(args.model, args.version)
        elif args.metadata:
            result = client.metadata(args.model, args.version)
        elif args.classify:
            signature = args.signature or "classify"
            rows = client.classify(args.model, texts, signature, args.version)
            result = [
                {"text": t, "classes": [{"label": lab, "score": s} for lab, s in row]}
                for t, row in zip(texts, rows, strict=True)
            ]
        else:
            outputs = client.predict(
                args.model, {args.input_name: texts},
                args.signature or "serving_default", args.version,
            )
            result = {key: _jsonable(value) for key, value in sorted(outputs.items())}
    print(json.dumps(result, ensure_ascii=False))
    return 0
