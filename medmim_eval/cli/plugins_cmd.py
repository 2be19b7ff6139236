"""``medmim-eval plugins``: installed plugins, what they registered, and load failures."""
from __future__ import annotations

import json

import click

from medmim_eval.cli.context import get_host


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins: distribution and version, hooks implemented, names registered, failures."""
    host = get_host(ctx, warn=False)
    if as_json:
        payload = {
            "plugins": [
                {"name": p.name, "distribution": p.distribution, "version": p.version, "builtin": p.builtin,
                 "hooks": p.hooks, "registered": p.registered}
                for p in host.plugins.values()
            ],
            "failures": [{"name": f.name, "distribution": f.distribution, "error": f.error} for f in host.failures],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for info in host.plugins.values():
        origin = "built-in" if info.builtin else f"{info.distribution or '?'} {info.version or ''}".strip()
        click.echo(f"{info.name}  ({origin})")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
        for kind, names in sorted(info.registered.items()):
            click.echo(f"  {kind}: {', '.join(names)}")
    if host.failures:
        click.echo("failed to load:")
        for failure in host.failures:
            click.echo(f"  {failure.line()}")
