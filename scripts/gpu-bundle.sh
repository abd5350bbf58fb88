#!/usr/bin/env bash
# Builds nnrun here and packs what a lent GPU machine needs into bundle/ (git-ignored),
# for the device tool's `carry` (see DESIGN.md's GPU section and docs/cuda.md):
#   bundle/nnrun-gpu.tar.xz  the install prefix with every shared library it needs that
#                            is not part of glibc (OpenBLAS, LuaJIT, libuv, ...), busted
#                            and its Lua modules, the Lua specs and the cuBLAS benchmark
#   bundle/fashion-mnist/    the dataset (Debian's dataset-fashion-mnist), as shipped
# Then run scripts/gpu-check.sh there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-gpu
STAGE=$BUILD/stage
OUT=$ROOT/bundle
export PATH=/usr/local/cuda/bin:$PATH
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$STAGE" \
      -DCMAKE_CUDA_ARCHITECTURES="80;90" -DNNR_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
rm -rf "$STAGE" && cmake --install "$BUILD" >/dev/null
test -f "$STAGE/lib/nnr/libnnr_cuda.so" || { echo "gpu-bundle: the cuda plugin was not built (is nvcc in /usr/local/cuda/bin?)" >&2; exit 1; }
cp "$BUILD/bin/nnr_cublas_bench" "$STAGE/bin/"

# shared libraries the binaries need, except glibc's and the CUDA driver (the GPU machine has those)
libs() { ldd "$@" 2>/dev/null | awk '/=> \// {print $3}' | sort -u; }
skip='/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64|libcuda|libcublas|libcublasLt|libcudart|libstdc\+\+|libgcc_s)\.so'
bins=("$STAGE/bin/nnrun" "$STAGE"/lib/libnnr.so* "$STAGE"/lib/nnr/*.so "$STAGE/bin/nnr_cublas_bench")
for lib in $(libs "${bins[@]}"); do
  if [[ ! $lib =~ $skip ]] && [[ $(realpath "$lib") != "$STAGE"/* ]]; then cp -L "$lib" "$STAGE/lib/"; fi
done
# the copies' own dependencies (libgfortran's libquadmath, ...)
for lib in $(libs "$STAGE"/lib/*.so.*); do
  if [[ ! $lib =~ $skip ]] && [ ! -e "$STAGE/lib/$(basename "$lib")" ]; then cp -L "$lib" "$STAGE/lib/"; fi
done

# busted for the Lua specs: its Lua modules and C modules (dereferenced)
mkdir -p "$STAGE/busted/share" "$STAGE/busted/lib"
cp -rL /usr/share/lua/5.1/. "$STAGE/busted/share/"
cp -rL /usr/lib/x86_64-linux-gnu/lua/5.1/. "$STAGE/busted/lib/"
cp /usr/bin/busted "$STAGE/busted/busted"
for lib in $(libs "$STAGE"/busted/lib/*.so "$STAGE"/busted/lib/*/*.so); do
  if [[ ! $lib =~ $skip ]] && [ ! -e "$STAGE/lib/$(basename "$lib")" ]; then cp -L "$lib" "$STAGE/lib/"; fi
done

mkdir -p "$OUT"
XZ_OPT=-T0 tar -C "$STAGE" -cJf "$OUT/nnrun-gpu.tar.xz" .
mkdir -p "$OUT/fashion-mnist"
cp /usr/share/datasets/fashion-mnist/*.gz "$OUT/fashion-mnist/"
du -sh "$OUT"/* | sed 's/^/gpu-bundle: /'
echo "gpu-bundle: carry [\"bundle\"] and run scripts/gpu-check.sh on the GPU machine"
