"""`llmspeed` command line: one module per command, each with `register(app)`.

User mistakes (bad paths, bad values) end as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

# command modules; each adds its command(s) to the app
COMMANDS = ("generate", "profile", "serve", "eval", "optimize", "bench", "loadtest", "export", "distill", "auto")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a language model answer faster and cheaper, and prove what it cost.")
_registered = False




@app.callback()
def _root(prefill_path: str = typer.Option(
        "", "--prefill-path", help="quantized layers' path for prefill rows: auto (measured on this machine, "
        "cached), kernel, bf16 or fp32; sets LLMSPEED_PREFILL for this process and its workers")) -> None:
    """Make a language model answer faster and cheaper, and prove what it cost."""
    if prefill_path:
        from llmspeed.llm import PREFILL_ENV
        from llmspeed.runtime.options import PREFILL_CHOICES

        if prefill_path not in PREFILL_CHOICES:
            raise UserError(f"--prefill-path must be one of {', '.join(PREFILL_CHOICES)}, got {prefill_path!r}")
        os.environ[PREFILL_ENV] = prefill_path


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit code 2."""


def _register() -> None:
    global _registered
    if not _registered:
        for name in COMMANDS:
            importlib.import_module(f"llmspeed.cli.{name}").register(app)
        _registered = True


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LLMSPEED_LOG", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("llmspeed.progress").setLevel(logging.INFO)  # heartbeats of long phases always show
    _register()
    try:
        app(args=argv, prog_name="llmspeed", standalone_mode=False)
    except Exception as e:
        code = _click_exit(e)
        if code is None:
            raise
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _click_exit(e: Exception) -> int | None:
    """Exit code for click/typer's own exceptions (their module moved between typer versions)."""
    names = {c.__name__ for c in type(e).__mro__}
    if "Exit" in names:
        return int(getattr(e, "exit_code", 0))
    if "Abort" in names:
        print("aborted", file=sys.stderr)
        return 130
    if "ClickException" in names:
        e.show()  # type: ignore[attr-defined]
        return 2
    if isinstance(e, (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                      IsADirectoryError)):
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return None


def run() -> None:  # pragma: no cover - console entry
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
