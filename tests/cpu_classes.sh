#!/usr/bin/env bash
# Every CPU class on any machine (issue 18): NNR_CPU_ISA runs the cpu and quant plugins at a class below
# the CPU's (plugins/cpu/isa.h), OpenBLAS's kernel family and oneDNN's dispatch capped with them. For each
# class this machine has, below its own (which every other test runs), check that the class took, then
# run the conformance kit on the cpu plugin and the whole Lua suite. On an AVX-512 machine this is
# what tests the AVX2 and baseline kernels.
#   cpu_classes.sh NNRUN CPU_PLUGIN BUSTED LUA_TEST_DIR
set -u
nnrun=$1 plugin=$2 busted=$3 tests=$4
classes=(c avx2 avx512 avx512_vnni avx512_bf16 amx)
own=$("$nnrun" -e 'io.write(nnr.backends.cpu.isa_cpu)') || { echo "cannot ask nnrun for the CPU class"; exit 1; }
echo "this CPU's class: $own"
fail=0 ran=0
for c in "${classes[@]}"; do
  [ "$c" = "$own" ] && break
  ran=$((ran + 1))
  got=$(NNR_CPU_ISA=$c "$nnrun" -e 'io.write(nnr.backends.cpu.isa)' 2>&1)
  if [ "$got" != "$c" ]; then echo "FAIL: NNR_CPU_ISA=$c ran class '$got'"; fail=1; continue; fi
  echo "== class $c: conformance kit"
  NNR_CPU_ISA=$c "$nnrun" --check-backend "$plugin" | tail -1
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAIL: conformance under $c"; fail=1; }
  echo "== class $c: Lua suite"
  NNR_CPU_ISA=$c "$nnrun" "$busted" --lpath="$tests/?.lua" -o "$tests/handler.lua" "$tests" | tail -1
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAIL: Lua suite under $c"; fail=1; }
done
# a class above the CPU's is capped, with a note naming both
if [ "$own" != amx ]; then
  note=$(NNR_CPU_ISA=amx "$nnrun" -e 'io.write(nnr.backends.cpu.isa)' 2>&1)
  case "$note" in *"this CPU's class is $own; running $own"*"$own") ;; *) echo "FAIL: NNR_CPU_ISA=amx above the CPU gave: $note"; fail=1 ;; esac
fi
bad=$(NNR_CPU_ISA=sse9 "$nnrun" -e 'io.write(nnr.backends.cpu.isa)' 2>&1)
case "$bad" in *"NNR_CPU_ISA=sse9 is not a class"*"$own") ;; *) echo "FAIL: NNR_CPU_ISA=sse9 gave: $bad"; fail=1 ;; esac
echo "$ran classes below $own run; $([ $fail = 0 ] && echo passed || echo FAILED)"
exit $fail
