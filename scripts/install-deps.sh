#!/usr/bin/env bash
# Installs, only when missing, the Debian packages that the build and the tests need.
set -euo pipefail
# python3-venv, python3-dev: the .venv/ and the extension (scripts/setup-python.sh).
# clang, libomp and clang's runtimes: the fuzz and ThreadSanitizer builds (fuzz/README.md).
# libopenmpi-dev, openmpi-bin: context-parallel attention over MPI (src/distributed/, mpirun tests).
packages=(g++ cmake make libhwy-dev libgtest-dev libgmock-dev unzip python3-pip python3-venv python3-dev
          clang libomp-14-dev libclang-rt-14-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
