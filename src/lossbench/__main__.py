"""`lossbench` (the installed command) and `python -m lossbench`."""

import gc


def main() -> None:
    # Most of a command's CPU is start-up, mostly imports (typer, pydantic, then torch,
    # scipy, pandas) that make millions of lasting objects the cycle collector would walk
    # again and again: off, 0.6 s of a tiny training stage's 2.5 s and 0.3 s of a tiny
    # report's 3.5 s (benchmarks/results.md). A command makes few cycles before it ends;
    # the long ones (train, run) turn it back on once started.
    gc.disable()
    from lossbench.cli import main as run_command

    run_command()


if __name__ == "__main__":
    main()
