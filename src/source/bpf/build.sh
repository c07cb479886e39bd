#!/usr/bin/env bash
# Rebuilds looptop.bpf.o from looptop.bpf.c (needs clang; Debian's package `clang`). The object is
# committed so that `cargo build` needs no clang; tests/bpf.rs checks it matches its source.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-looptop.bpf.o}
# -g: BTF for the maps (aya reads their definitions from it); -mcpu=v3: atomic fetch-and-add.
# The source's own path is not recorded (-fdebug-prefix-map), so the object is the same whoever builds it.
clang -O2 -g -mcpu=v3 -target bpf -fdebug-prefix-map="$PWD"=. -fno-ident -c looptop.bpf.c -o "$out"
