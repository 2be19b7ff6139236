"""The ``medmim-eval`` command line. One module per command; plugins load lazily, on first use."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from medmim_eval import __version__
from medmim_eval.errors import MedmimError

STRICT_ENV = "MEDMIM_STRICT_PLUGINS"
BUILTIN_COMMANDS = {
    "run": "medmim_eval.cli.run_cmd:run",
    "sweep": "medmim_eval.cli.sweep_cmd:sweep",
    "list": "medmim_eval.cli.list_cmd:list_",
    "plugins": "medmim_eval.cli.plugins_cmd:plugins",
    "data": "medmim_eval.cli.data_cmd:data",
    "leaderboard": "medmim_eval.cli.leaderboard_cmd:leaderboard",
    "compare": "medmim_eval.cli.compare_cmd:compare",
    "train": "medmim_eval.cli.train_cmd:train",
    "demo": "medmim_eval.cli.demo_cmd:demo",
    "explain": "medmim_eval.cli.explain_cmd:explain",
    "audit": "medmim_eval.cli.audit_cmd:audit",
    "rescore": "medmim_eval.cli.rescore_cmd:rescore",
    "new": "medmim_eval.cli.new_cmd:new",
}


class LazyGroup(click.Group):
    """Built-in commands import on use; plugin commands join when the plugin host is built."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        from medmim_eval.cli.context import get_host

        extra = click.Group("plugin-commands")
        try:
            host = get_host(ctx)
        except MedmimError:
            return {}
        host.add_commands(extra)
        return dict(extra.commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(BUILTIN_COMMANDS) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in BUILTIN_COMMANDS:
            from medmim_eval.registry import resolve_callable

            return resolve_callable(BUILTIN_COMMANDS[cmd_name])  # type: ignore[return-value]
        return self._plugin_commands(ctx).get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medmim-eval")
@click.option("--strict-plugins", is_flag=True, envvar=STRICT_ENV,
              help=f"Fail when any plugin fails to load (also ${STRICT_ENV}=1).")
@click.pass_context
def cli(ctx: click.Context, strict_plugins: bool) -> None:
    """Evaluate medical multi-image vision-language models on Med-MIM and beyond.

    \b
    Quick start (no data, no GPU, no download):
      medmim-eval demo                   # train a tiny model on the synthetic suite, evaluate it
      medmim-eval run --models all --tasks synth --open-metrics bertscore.model=minilm
    The real benchmark:
      medmim-eval data status            # what is present, what to download
      medmim-eval run --models random --tasks held-out
    """
    ctx.ensure_object(dict)
    ctx.obj["strict_plugins"] = strict_plugins


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: user errors print one line, never a traceback."""
    try:
        return cli.main(args=argv, prog_name="medmim-eval", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MedmimError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into `head` and friends.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def entry() -> None:
    """The ``medmim-eval`` console script and ``python -m medmim_eval``: :func:`main`, then exit
    without the interpreter's teardown (with torch loaded, 1-2 s of freeing modules) once the
    output is flushed, non-daemon threads joined and the ``atexit`` hooks (servers to stop) run.
    Code calling :func:`main` in-process (tests) keeps a normal interpreter."""
    try:
        main()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import atexit
    import threading

    try:
        shutdown = getattr(threading, "_shutdown", None)
        if callable(shutdown):
            shutdown()  # what the interpreter does first: thread pools' exit hooks, then joins non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - leave the exit to the interpreter, as without this shortcut
        sys.exit(code)
    os._exit(code or 0)

