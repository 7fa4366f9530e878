"""The `deployplan` command line: parse options, build what the command needs, run it; the only place that exits.

Start is kept lean: at import only the small error modules load; the parser (runner.cli.options) is built with
the named command's options only; each command's module (and what it needs: jsonschema, Jinja2, the HTTP
client) is imported when that command runs.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from runner import __version__
from runner.cli.errors import AgentRefused, AgentUnreachable, Answered, DeployFailed, Exit, UsageError
from runner.core.errors import DeployplanError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    from runner.cli.console import Console


# Each command: the module and function that run it, imported only when it runs.
COMMANDS: dict[str, str] = {
    "lint": "runner.cli.local:cmd_lint",
    "render": "runner.cli.local:cmd_render",
    "dry-run": "runner.cli.deploy:cmd_dry_run",
    "apply": "runner.cli.deploy:cmd_apply",
    "status": "runner.cli.reads:cmd_status",
    "history": "runner.cli.reads:cmd_history",
    "logs": "runner.cli.reads:cmd_logs",
    "follow": "runner.cli.attach:cmd_follow",
    "prune": "runner.cli.prune:cmd_prune",
    "audit": "runner.cli.audit:cmd_audit",
    "check": "runner.cli.check:cmd_check",
}


def _command(name: str) -> Callable[[argparse.Namespace, Console], int]:
    module, _, function = COMMANDS[name].partition(":")
    found: Callable[[argparse.Namespace, Console], int] = getattr(importlib.import_module(module), function)
    return found


def run(argv: Sequence[str], console: Console) -> int:
    """Run one command and map every error to its exit code; never raises."""
    verbose = "--verbose" in argv
    if list(argv) == ["--version"]:  # answered before any parser is built (argparse is most of a lean start)
        console.print(f"deployplan {__version__}")
        return Exit.OK
    named = next((a for a in argv if not a.startswith("-")), None)
    try:
        from runner.cli.options import build_parser

        args = build_parser(named).parse_args(argv)
        return _command(args.command)(args, console)
    except Answered as e:  # --help: argparse printed it
        return e.status
    except UsageError as e:
        console.error(f"{console.style('error:', 'red', 'bold', err=True)} {e}")
        return Exit.INVALID
    except InvalidInput as e:
        console.problems(e.problems)
        return Exit.INVALID
    except (AgentUnreachable, AgentRefused) as e:
        console.error(f"{console.style('error:', 'red', 'bold', err=True)} {e}")
        return Exit.AGENT
    except DeployFailed as e:
        console.error(f"{console.style('deploy failed:', 'red', 'bold', err=True)} {e}")
        return Exit.FAILED
    except DeployplanError as e:  # pragma: no cover - every subclass is mapped above
        console.error(f"error: {e}")
        return Exit.FAILED
    except KeyboardInterrupt:
        console.error("interrupted")
        return Exit.INTERRUPTED
    except Exception as e:  # the last line of defence: a plain message, a traceback only with --verbose
        # Not str(e): an unexpected error may quote a value (a header, a variable) that is a secret.
        console.error(f"internal error: {type(e).__name__}" + ("" if verbose else " (run with --verbose for details)"))
        if verbose:
            import traceback

            traceback.print_exc(file=console.err)
        return Exit.FAILED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> NoReturn:
    """Console script entry point."""
    import gc

    from runner.cli.console import Console

    # One short-lived command. The cyclic collector would walk every object the imports create (jsonschema's,
    # Jinja2's) again and again while they load, and all of them once more at exit, and find next to nothing to
    # free: a tenth of an `apply` (bench/RESULTS.md). Reference counting still frees what the command drops, and
    # the process lives no longer than the deploy it follows.
    gc.disable()
    # A cancelled GitHub job gets SIGINT, then SIGTERM: both stop following the same way (the deploy goes on).
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(
        out=sys.stdout, err=sys.stderr, github=os.environ.get("GITHUB_ACTIONS") == "true", environ=os.environ
    )
    code = run(sys.argv[1:], console)
    gc.freeze()  # exit without that last full collection: the OS takes the whole process back at once
    sys.exit(code)
