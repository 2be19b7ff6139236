"""Shared CLI state: the plugin host, built once per invocation."""
from __future__ import annotations

import click

from medmim_eval.plugins import PluginHost, create_plugin_host


def get_host(ctx: click.Context, warn: bool = True) -> PluginHost:
    """The plugin host of this invocation; plugin load failures are warned about once."""
    root = ctx.find_root()
    root.ensure_object(dict)
    host = root.obj.get("host")
    if host is None:
        host = create_plugin_host(strict=bool(root.obj.get("strict_plugins") or root.params.get("strict_plugins")))
        root.obj["host"] = host
        root.obj["warned"] = False
    if warn and host.failures and not root.obj.get("warned") and root.obj.get("warn_plugins", True):
        for failure in host.failures:
            click.echo(f"warning: {failure.line()} (see `medmim-eval plugins`)", err=True)
        root.obj["warned"] = True
    return host
