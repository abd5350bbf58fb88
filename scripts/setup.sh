#!/usr/bin/env bash
# Installs what nnrun needs (Debian 12, as root or through sudo) and builds it
# into build/. fortunes is the text corpus of docs/sequence.md. Safe to repeat: apt runs only when a package is missing, and
# the build is incremental.
#   NNR_BUILD_DIR (default build), NNR_CMAKE_ARGS (extra cmake arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config git
          luajit libluajit-5.1-dev libopenblas-pthread-dev libdnnl-dev libedit-dev libuv1-dev
          libcmocka-dev lua-busted valgrind zlib1g-dev libcjson-dev libpng-dev libturbojpeg0-dev dataset-fashion-mnist
          clang libclang-rt-14-dev libopenmpi-dev openmpi-bin python3 python3-torch python3-venv fortunes luarocks gnuplot-nox
          libprotobuf-c-dev protobuf-c-compiler libisal-dev libsleef-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build=${NNR_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${NNR_CMAKE_ARGS:-} >/dev/null
cmake --build "$build"
