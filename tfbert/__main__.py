"""`python -m tfbert COMMAND ...`: the `tfbert` command, e.g. `python -m tfbert serve ...`."""

from tfbert.cli import run

if __name__ == "__main__":
    run()
