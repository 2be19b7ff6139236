"""Registers the built-in training recipes: ``sft-llava``, ``sft-idefics2`` and ``tiny``.

Registering imports nothing heavy; each recipe's module loads when ``medmim-eval train`` runs it.
"""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import RecipeEntry

SFT_VERSION = "1"
OPTION_HELP = "medmim_eval.training_recipes.options:option_help"
CONFIGS = "medmim_eval.training_recipes:configs"


@hookimpl
def register_training_recipes(register: Callable[[object], None]) -> None:
    register(RecipeEntry(
        name="sft-llava",
        description="fine-tune a LLaVA-architecture checkpoint (Mantis-8B-siglip-llama3, LLaVA-Med HF port) on "
                    "Med-MIM JSON; loss on response tokens only",
        recipe="medmim_eval.training_recipes.sft:sft_llava",
        version=SFT_VERSION,
        option_help=OPTION_HELP,
        configs=CONFIGS,
    ))
    register(RecipeEntry(
        name="sft-idefics2",
        description="fine-tune an Idefics2 checkpoint (Mantis-8B-Idefics2) on Med-MIM JSON; loss on response "
                    "tokens only",
        recipe="medmim_eval.training_recipes.sft:sft_idefics2",
        version=SFT_VERSION,
        option_help=OPTION_HELP,
        configs=CONFIGS,
    ))
    register(RecipeEntry(
        name="tiny",
        description="build a tiny LLaVA model from scratch and train it on the synthetic suite's train split "
                    "(CPU, minutes; the model behind `medmim-eval demo`)",
        recipe="medmim_eval.training_recipes.tiny:tiny_recipe",
        needs=(),
        version="1",
    ))
