#!/usr/bin/env bash
# One command that sets torchcls up on a fresh machine:
#   a virtual environment in .venv, the package with its dev and export extras at the exact versions it is
#   tested with (constraints.txt: torch 2.14.1, torchvision 0.29.1, ...), and Fashion-MNIST from
#   the system package where apt-get exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev,export]'
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
.venv/bin/torchcls --version
