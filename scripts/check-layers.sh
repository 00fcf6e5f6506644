#!/usr/bin/env bash
# Checks that every #include "..." in the library points down the layer table
# of docs/DESIGN.md section 1: a file may include its own folder, the public
# headers (include/) and the folders its layer lists below, nothing else.
# Also checks that the source root is not used as an include path by
# examples/ and bench/ (they see include/ only). Exit 0 when clean, 1 with
# one line per violation otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# folder -> folders it may include (besides itself and include/)
declare -A allowed=(
    [core]=""
    [profiling]="core"
    [memory]="core"
    [kernels]="core"
    [scheduler]="core memory profiling"
    [cpu]="core kernels"
    [cuda]="core kernels"
    [comm]="core"
    [runtime]="core profiling memory scheduler kernels cpu cuda comm"
    [tests]="core profiling memory scheduler kernels cpu cuda comm runtime tests"
    [examples]=""
    [bench]="examples"
)
public_headers=" $(cd include && ls | tr '\n' ' ')"

violations=0
for folder in "${!allowed[@]}"; do
    [ -d "$folder" ] || continue
    while IFS= read -r -d '' file; do
        while IFS= read -r line; do
            number=${line%%:*}
            target=$(sed -E 's/^[0-9]+:[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1/' <<<"$line")
            case "$target" in
            */*) target_folder=${target%%/*} ;;
            *)
                # A bare name: a public header, a file next to the includer,
                # or a header of a folder this one may use (on its include path).
                if [[ "$public_headers" == *" $target "* ]] || [ -e "$(dirname "$file")/$target" ]; then
                    continue
                fi
                target_folder="?"
                for a in ${allowed[$folder]}; do
                    [ -e "$a/$target" ] && target_folder=$a
                done
                ;;
            esac
            [ "$target_folder" = "$folder" ] && continue
            [ "$target_folder" = "nvtx3" ] && continue # the NVTX3 library's own headers
            ok=0
            for a in ${allowed[$folder]}; do
                [ "$a" = "$target_folder" ] && ok=1
            done
            if [ $ok = 0 ]; then
                echo "$file:$number: includes \"$target\": $folder/ may include only" \
                    "${allowed[$folder]:-nothing} besides itself and include/"
                violations=$((violations + 1))
            fi
        done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" || true)
    done < <(find "$folder" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) -print0)
done

if [ $violations -gt 0 ]; then
    echo "check-layers: $violations include(s) against the layer table in docs/DESIGN.md"
    exit 1
fi
echo "check-layers: every include points down the layer table"
