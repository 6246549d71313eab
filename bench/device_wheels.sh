#!/usr/bin/env bash
# The wheels bench/device_check.sh needs on the GPU machine, for its Python 3.12 on x86-64 Linux.
#
#   bench/device_wheels.sh [DIR]        (make device-wheels; DIR defaults to .whl, which git ignores)
#
# PYVER=3.11 fetches them for another Python (to try the set on this machine, as the tests do).
#
# That machine has PyTorch, torchvision, numpy, pandas, pillow, timm, huggingface_hub,
# safetensors, regex, tqdm, httpx, anyio, h11, prometheus-client, PyYAML, MarkupSafe and
# pytorch-lightning's helpers, but none of the packages below, and it reaches no package index.
# The list is what the benches import (found by recording every process's modules during
# `bench/device_check.sh --smoke`), less what the machine has. Left out because the check does
# not import them: psycopg (PostgreSQL), greenlet (SQLAlchemy's asyncio), watchfiles (reload),
# hydra-core and pytorch-lightning (lightly needs them only for its own trainer).
# faiss-cpu stands in for faiss-gpu: PyPI's faiss-gpu-cu12 weighs far more than the 64 MiB that
# travel, and has no kernels for the H200 (compute capability 9.0) anyway.
#
# Each is pinned to the version in .venv (what the tests ran against) when .venv has it. The
# script fails when the wheels and the working tree that travels with them pass 64 MiB.
set -euo pipefail

DIR="${1:-.whl}"
PYVER="${PYVER:-3.12}"
LIMIT_MIB=64
PACKAGES=(
    open_clip_torch ftfy wcwidth   # CLIP models, trainer (open_clip_train) and tokenizer
    webdataset braceexpand         # imported by open_clip_train's data module
    lightly                        # the SimCLR step-time reference
    faiss-cpu                      # FAISS
    sqlalchemy alembic mako        # the catalog
    fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv annotated-types
    typing-inspection typing_extensions opentelemetry-api python-multipart uvicorn httptools  # the service
)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=python3
[[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
mapfile -t PINNED < <("$PYTHON" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
EOF
)
rm -rf "$DIR"
mkdir -p "$DIR"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$DIR" "${PINNED[@]}"

wheels=$(du -cb "$DIR"/*.whl | tail -n 1 | cut -f 1)
# what travels besides: the tracked files and the untracked ones git does not ignore
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
    | awk '{s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "$(ls "$DIR"/*.whl | wc -l) wheels in $DIR: $(mib "$wheels"); working tree: $(mib "$tree");" \
    "together $(mib $((wheels + tree))) of $LIMIT_MIB MiB"
ls -S "$DIR" | sed 's/^/  /'
if ((wheels + tree > LIMIT_MIB * 1048576)); then
    echo "too large to travel: leave something out, or ignore what need not travel" >&2
    exit 1
fi
