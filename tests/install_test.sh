#!/usr/bin/env bash
# cmake --install gives a working prefix (bin, lib, lib/nnr, include/nnr,
# share/lua, pkg-config, CMake config), and the example plugin builds against
# the installed headers alone and loads into the installed nnrun.
set -eu
BUILD=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$BUILD" --prefix "$tmp/prefix" >/dev/null
"$tmp/prefix/bin/nnrun" -e 'assert(nnr.ones(2):sum():item() == 2); print("installed nnrun works")'
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs nnr
test -f "$tmp/prefix/include/nnr/plugin.h"
test -f "$tmp/prefix/lib/cmake/nnr/nnrConfig.cmake"
cmake -S "$SRC/examples/plugin" -B "$tmp/plugin" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/plugin" >/dev/null
out=$(NNR_PLUGIN_PATH="$tmp/plugin" "$tmp/prefix/bin/nnrun" -e 'print((nnr.ones(3, {device = "testdev:0"}) * 2):sum():item())' 2>/dev/null)
test "$out" = "6"
echo "out-of-tree plugin works"
