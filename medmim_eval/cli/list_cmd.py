"""``medmim-eval list``: what is registered."""
from __future__ import annotations

import click

from medmim_eval.cli.context import get_host

WHAT = ("models", "adapters", "tasks", "builders", "recipes")


@click.command("list")
@click.argument("what", type=click.Choice(WHAT), required=False)
@click.option("--options", "show_options", is_flag=True,
              help="With adapters: each adapter's key=value options (name, type, default, help).")
@click.pass_context
def list_(ctx: click.Context, what: str | None, show_options: bool) -> None:
    """List named models (and whether they can run here), adapters, tasks, builders and recipes."""
    host = get_host(ctx)
    for kind in (what,) if what else WHAT:
        click.echo(f"{kind}:")
        if kind == "models":
            from medmim_eval.run_setup import route_for

            for name in host.models:
                entry = host.models.get(name)
                route, reason = route_for(entry, host)
                state = f"runs as {route}" if route else f"unavailable: {reason}"
                click.echo(f"  {name:<20} {entry.description}\n  {'':<20} {state}")
            if not host.models.names():
                click.echo("  (none registered; the baselines are adapters)")
        elif kind == "adapters":
            for name in host.adapters:
                entry = host.adapters.get(name)
                extras = f" [needs medmim-eval[{','.join(entry.extras)}]]" if entry.extras else ""
                click.echo(f"  {name:<18} {entry.description}{extras}  ({host.adapters.owners[name]})")
                if show_options:
                    _print_options(entry)
        elif kind == "tasks":
            for name in host.tasks:
                click.echo(f"  {name:<22} {host.tasks.get(name).description}  ({host.tasks.owners[name]})")
            for name in host.groups:
                group = host.groups.get(name)
                click.echo(f"  {name:<22} group: {', '.join(group.members)}")
            click.echo("  (append :closed or :open to select a subset; a path to a Med-MIM .json file also works)")
        elif kind == "builders":
            for name in host.builders:
                entry = host.builders.get(name)
                click.echo(f"  {name:<18} {entry.description} (v{entry.version})")
            if not host.builders.names():
                click.echo("  (none registered)")
        else:
            for name in host.recipes:
                click.echo(f"  {name:<18} {host.recipes.get(name).description}")
            if not host.recipes.names():
                click.echo("  (none registered)")


def _print_options(entry) -> None:  # type: ignore[no-untyped-def]
    from medmim_eval.adapter_options import describe

    if entry.options is None:
        click.echo(f"  {'':<18} options: not declared (the adapter validates its own; its docs list them)")
        return
    click.echo(f"  {'':<18} options (and label=NAME):" if entry.options else f"  {'':<18} options: label=NAME only")
    for line in describe(entry.options):
        click.echo(f"  {'':<20} {line}")
