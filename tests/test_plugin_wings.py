"""What the core used to import from the plugin wings now comes through the plugin host: the
``serve`` command (the vLLM plugin's), the tasks ``data status`` reports (any plugin's)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from conftest import run_cli
from test_plugins import fake_distribution

TASK_PLUGIN = """
from pathlib import Path

from medmim_eval.hookspecs import hookimpl
from medmim_eval.medmim_format import load_medmim_file
from medmim_eval.registry import TaskData, TaskEntry
from medmim_eval.tasks_api import LoadedTask

FOLDER = Path(__file__).parent / "scans"


def data_file(context):
    return FOLDER / "scans.json"


def load(context):
    path = data_file(context)
    return LoadedTask("scan-pairs", load_medmim_file(path, task="scan-pairs", ability="comparison",
                                                     image_root=lambda tag: FOLDER), [path])


@hookimpl
def register_tasks(register):
    register(TaskEntry(name="scan-pairs", description="a third-party task", loader=load,
                       data=TaskData(file=data_file, builder="scan-builder",
                                     access=(("scans", "the scans archive, from the lab's server"),))))
"""


def test_serve_is_a_command_the_vllm_plugin_adds() -> None:
    from medmim_eval.plugins import create_plugin_host

    host = create_plugin_host(autoload=False)
    group = click.Group("probe")
    host.add_commands(group)
    assert "serve" in group.commands
    assert group.commands["serve"].callback.__module__ == "medmim_eval.adapters.vllm.serve_cmd"
    impls = {i.plugin_name for i in host.pm.hook.register_commands.get_hookimpls()}
    assert "medmim_eval.adapters.vllm.plugin" in impls
    shown = run_cli("serve", "--help")
    assert shown.returncode == 0 and "Run a vLLM server for MODEL" in shown.stdout


def test_data_status_reports_a_plugin_task_and_where_its_images_come_from(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "scan-plugin", "scan_plugin", TASK_PLUGIN)
    item = {"id": "s1", "images": ["a.png", "b.png"], "source": "scans",
            "conversation": [{"role": "user", "content": "<image><image>Same?\nA: yes\nB: no\n"},
                             {"role": "assistant", "content": "A: yes"}]}
    (site / "scans").mkdir()
    (site / "scans" / "scans.json").write_text(json.dumps([item]))  # its images are missing
    result = run_cli("data", "status", "--data-dir", str(tmp_path / "data"), pythonpath=[site])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("scan-pairs") and "1 items; images 0/2 present -> not runnable" in line
               for line in lines), result.stdout
    assert "held-in-temporal" in result.stdout  # the built-in tasks are still reported

    (site / "scans" / "scans.json").unlink()
    result = run_cli("data", "status", "--data-dir", str(tmp_path / "data"), pythonpath=[site])
    assert f"scan-pairs             benchmark file missing: {site / 'scans' / 'scans.json'}" in result.stdout
    assert "scans: the scans archive, from the lab's server" in result.stdout
