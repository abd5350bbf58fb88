#!/usr/bin/env bash
# cmake --install gives a working prefix (bin, lib, lib/nnr, include/nnr, share/lua, pkg-config, CMake
# config). The example plugin builds against the installed headers alone, as a vendor would: with the
# CMake package (nnr::plugin), installed under its own prefix and found through a registration file,
# and with pkg-config (nnr-plugin), found through NNR_PLUGIN_PATH.
set -eu
BUILD=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$BUILD" --prefix "$tmp/prefix" >/dev/null
"$tmp/prefix/bin/nnrun" -e 'assert(nnr.ones(2):sum():item() == 2); print("installed nnrun works")'
# plain luajit: the package finds the installed libnnr beside it (no NNR_LIB), and libnnr its plugins
# (not in the sanitizer build: an ASan library cannot load into a luajit built without it)
if [ "${NNR_MEMCHECK:-}" != asan ]; then
  out=$(env -i PATH="$PATH" LUA_PATH="$tmp/prefix/share/lua/5.1/?.lua;$tmp/prefix/share/lua/5.1/?/init.lua;;" \
        luajit -e 'local nnr = require "nnr"; print(nnr.ones(2):sum():item(), nnr.backends.cpu.isa ~= nil)')
  test "$out" = "2	true"
  echo "plain luajit finds the installed library"
fi
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs nnr
test -z "$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --libs nnr-plugin)"   # headers only
for h in plugin.h dtype.h philox.h nnr.h base.h tensor.h ops.h; do test -f "$tmp/prefix/include/nnr/$h"; done
test -f "$tmp/prefix/lib/cmake/nnr/nnrConfig.cmake"

# the vendor's way: CMake package, its own prefix, a registration file
cmake -S "$SRC/examples/plugin" -B "$tmp/plugin" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_INSTALL_PREFIX="$tmp/vendor" \
      -DNNR_PLUGIN_CONF_DIR="$tmp/conf" >/dev/null
cmake --build "$tmp/plugin" >/dev/null
cmake --install "$tmp/plugin" >/dev/null
test -f "$tmp/vendor/lib/nnr/libnnr_testdev.so"
if readelf -d "$tmp/vendor/lib/nnr/libnnr_testdev.so" | grep -q "libnnr.so"; then echo "the plugin links libnnr"; exit 1; fi
out=$(NNR_PLUGIN_CONF_DIR="$tmp/conf" "$tmp/prefix/bin/nnrun" -e 'print((nnr.ones(3, {device = "testdev:0"}) * 2):sum():item())' 2>/dev/null)
test "$out" = "6"
echo "out-of-tree plugin installed under its own prefix, found through its registration file"

# pkg-config's way, found through NNR_PLUGIN_PATH
# shellcheck disable=SC2046
cc -shared -fPIC -fvisibility=hidden -Wall -Wextra -Werror $(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags nnr-plugin) \
   "$SRC/examples/plugin/testdev.c" -o "$tmp/libnnr_testdev_pc.so"
out=$(NNR_PLUGIN_PATH="$tmp/libnnr_testdev_pc.so" "$tmp/prefix/bin/nnrun" -e 'print((nnr.ones(3, {device = "testdev:1"}) * 2):sum():item())' 2>/dev/null)
test "$out" = "6"
echo "out-of-tree plugin built with pkg-config works"
