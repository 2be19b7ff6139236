"""``medmim-eval serve``: run one vLLM server for a model, to share it between runs, until Ctrl-C.

A command of the vLLM plugin, added through ``register_commands`` (see :mod:`medmim_eval.adapters.vllm.plugin`)."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from medmim_eval.cli.context import get_host
from medmim_eval.errors import MedmimError


def resolve_target(model: str, extra: dict[str, str], host: Any) -> tuple[str, dict[str, str]]:
    """(target, options) for MODEL: a registered model name (its vLLM route), ``vllm:TARGET[,k=v]``,
    or a checkpoint folder / hub id with ``,key=value`` options."""
    from medmim_eval.adapter import parse_model_specs
    from medmim_eval.run_setup import route_for

    specs = parse_model_specs(model)
    if len(specs) != 1:
        raise MedmimError(f"serve takes one model, got {model!r}")
    spec = specs[0]
    if spec.target is None and spec.adapter in host.models:
        route, reason = route_for(host.models.get(spec.adapter), host, tuple({**spec.option_dict, **extra}.items()))
        if route is None:
            raise MedmimError(f"model '{spec.adapter}' cannot be served here: {reason}")
        if route.adapter != "vllm":
            raise MedmimError(f"model '{spec.adapter}' is not served by vLLM (its route is {route})")
        return str(route.target), route.option_dict
    if spec.adapter == "vllm" and spec.target:
        return spec.target, {**spec.option_dict, **extra}
    head = f"{spec.adapter}:{spec.target}" if spec.target else spec.adapter
    return head, {**spec.option_dict, **extra}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _options(pairs: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        options[key] = value
    return options


@click.command()
@click.argument("model")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--option", "-o", "pairs", multiple=True, metavar="KEY=VALUE",
              help="launch options of the vllm adapter (preset, served_name, launcher, env.NAME, args, max_images, "
              "max_model_len, tp, dp, ...); `medmim-eval list adapters --options` shows them all.")
@click.pass_context
def serve(ctx: click.Context, model: str, port: int, bind: str, pairs: tuple[str, ...]) -> None:
    """Run a vLLM server for MODEL until Ctrl-C, and print the base_url to give runs.

    MODEL is a registered model name (InternVL2-8B, Med-Mantis...), a checkpoint folder or a hub id,
    optionally with ,key=value options. Runs attach with
    --models 'vllm:SERVED_NAME,base_url=URL'; several servers: base_url=URL1|URL2.
    """
    from medmim_eval.adapter_options import options_problem
    from medmim_eval.adapters.vllm.adapter import default_served_name, is_local_target, target_problem
    from medmim_eval.adapters.vllm.model_registry import engine_settings, server_args
    from medmim_eval.adapters.vllm.options import SERVE_OPTIONS
    from medmim_eval.adapters.vllm.server import (DEFAULT_STARTUP_TIMEOUT_S, LaunchSpec, extra_args, launch,
                                                  launch_env, launcher_python, vllm_missing)

    target, options = resolve_target(model, _options(pairs), get_host(ctx))
    reason = options_problem("serve", SERVE_OPTIONS, options) or target_problem(target) or vllm_missing(options)
    if reason:
        raise MedmimError(reason)
    settings = engine_settings(target, options)
    checkpoint = str(Path(target).expanduser().resolve()) if is_local_target(target) else target
    served = default_served_name(target, options)
    spec = LaunchSpec(model=checkpoint, served_name=served, python=launcher_python(options), host=bind, port=port,
                      args=server_args(settings) + extra_args(options), env=launch_env(options),
                      log_path=Path(options["log"]).expanduser() if options.get("log") else None,
                      startup_timeout=float(options.get("startup_timeout") or DEFAULT_STARTUP_TIMEOUT_S))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops the server like Ctrl-C does
    server = launch(spec, announce=lambda s: click.echo(
        f"starting vLLM for {checkpoint} as '{served}' (pid {s.pid}); log: {s.log_path}", err=True))
    try:
        click.echo(f"base_url: {server.base_url}")
        click.echo(f"model spec: vllm:{served},base_url={server.base_url}")
        click.echo("serving; Ctrl-C stops the server", err=True)
        sys.stdout.flush()
        while server.alive():
            time.sleep(1.0)
        raise MedmimError(f"the vLLM server stopped on its own; last lines of {server.log_path}:\n{server.log_tail()}")
    except KeyboardInterrupt:
        click.echo("stopping the server", err=True)
    finally:
        server.stop()
