#!/usr/bin/env bash
# luarocks make builds nnr with CMake and installs it into a fresh Lua tree: then `require "nnr"` works
# from plain luajit (the package finds libnnr beside it, and libnnr its plugins), with no NNR_* variable,
# and the tree's nnrun runs. The build runs on a copy of the source (luarocks builds in the checkout).
#   luarocks_test.sh SOURCE_DIR
set -eu
SRC=$1
command -v luarocks >/dev/null || { echo "SKIP: luarocks is not installed (apt-get install luarocks)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
tar -C "$SRC" --exclude=./.git --exclude='./build*' -cf - . | tar -C "$tmp/src" -xf -
if ! (cd "$tmp/src" && NNR_CUDA=OFF CMAKE_BUILD_PARALLEL_LEVEL=2 luarocks --lua-version=5.1 make --tree "$tmp/tree" nnr-scm-1.rockspec \
        >"$tmp/build.log" 2>&1); then
  tail -40 "$tmp/build.log"; echo "FAIL: luarocks make"; exit 1
fi
grep -F "nnr scm-1 is now installed in $tmp/tree" "$tmp/build.log"
test -f "$tmp/tree/lib/lua/5.1/libnnr.so"
test -f "$tmp/tree/lib/lua/5.1/nnr/libnnr_cpu.so"
# plain luajit, found through the tree's Lua path (what `luarocks path` prints) and nothing else
out=$(cd "$tmp" && env -i PATH="$PATH" HOME="$tmp" LUA_PATH="$tmp/tree/share/lua/5.1/?.lua;$tmp/tree/share/lua/5.1/?/init.lua;;" \
      luajit -e 'local nnr = require "nnr"
                 local x = nnr.randn(4, 3)
                 assert(math.abs((x:matmul(nnr.eye(3)) - x):abs():max():item()) == 0)
                 local q = false
                 for _, p in ipairs(nnr.backends.list()) do if p.name == "quant" and p.loaded then q = true end end
                 print("plain luajit:", nnr.ones(2, 3):sum():item(), nnr.backends.cpu.isa ~= nil, q)')
echo "$out"
test "$out" = "plain luajit:	6	true	true"
out=$(env -i PATH="$PATH" HOME="$tmp" "$tmp/tree/bin/nnrun" -e 'print((nnr.ones(3) * 2):sum():item())')
test "$out" = "6"
echo "the tree's nnrun runs"
# the Lua package and the library it loads are the tree's
out=$(cd "$tmp" && env -i PATH="$PATH" LUA_PATH="$tmp/tree/share/lua/5.1/?.lua;$tmp/tree/share/lua/5.1/?/init.lua;;" \
      luajit -e 'require "nnr"; for l in io.lines("/proc/self/maps") do if l:match("libnnr%.so") then print(l:match("(/%S+)$")) break end end')
test "$out" = "$tmp/tree/lib/lua/5.1/libnnr.so"
echo "luarocks make: passed"
