"""`torchcls recipes`: the recipes shipped in the package, one line each (name and description)."""

from __future__ import annotations

import argparse

from torchcls.config import list_recipes


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(ns: argparse.Namespace) -> int:
    recipes = list_recipes()
    width = max((len(name) for name, _ in recipes), default=0)
    for name, description in recipes:
        print(f"{name:<{width}}  {description}")
    print("\nrun one with: torchcls train --recipe NAME (flags given with it still win)")
    return 0
