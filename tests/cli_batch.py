"""Run several `sgeo` command lines through `sgeo.cli.main` in one process (imports paid once).

    python tests/cli_batch.py commands.json

commands.json holds a list of argument lists. One JSON line per command goes to stdout:
{"args", "code", "stdout", "stderr"}; what the commands print is captured, not shown.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run(args: list[str]) -> dict:
    from sgeo.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:  # a crash: recorded with its traceback, like a real process would print it
            traceback.print_exc()
            code = 1
    return {"args": args, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    with open(sys.argv[1]) as spec:
        commands = json.load(spec)
    stdout = sys.stdout
    for args in commands:
        print(json.dumps(run(args)), file=stdout, flush=True)


if __name__ == "__main__":
    main()
