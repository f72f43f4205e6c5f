#!/usr/bin/env bash
# CPU-side preparation for a time-budgeted ("crammed") GPU pretraining run on the 159 MB Korean corpus:
# a 32k WordPiece vocab and uint16 shards, packed into one xz archive small enough to travel with the repository
# to a GPU machine (ignored folder bench/_work/cram/).
#
#   bash bench/cram_prepare.sh                       # corpus from ../shared/data/korean_corpus
#   CORPUS_DIR=/data/korean_corpus bash bench/cram_prepare.sh
#   MORPH=kiwi bash bench/cram_prepare.sh            # words split into morphemes first (kiwipiepy), vocab and
#                                                    # shards alike, in bench/_work/cram_kiwi/ (~25 min on 2 cores)
#
# bench/cram.py unpacks the archive itself (--archive; the MORPH=kiwi one with --archive
# bench/_work/cram_kiwi/cram_shards.tar.xz and a --work_dir of its own); by hand: tar -xJf ARCHIVE -C DIR, then
# run_pretraining.py --input_dir DIR/shards --config_file models/configs/small.json (vocab_size 32000 matches).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CORPUS_DIR=${CORPUS_DIR:-../shared/data/korean_corpus}
MORPH=${MORPH:-}
OUT=bench/_work/cram${MORPH:+_$MORPH}
MORPH_FLAGS=(${MORPH:+--morph_analyzer "$MORPH"})
mkdir -p "$OUT"
shopt -s nullglob
FILES=("$CORPUS_DIR"/*.txt)
[ ${#FILES[@]} -gt 0 ] || { echo "error: no .txt files in $CORPUS_DIR (set CORPUS_DIR)" >&2; exit 2; }
t0=$(date +%s)
[ -f "$OUT/vocab.txt" ] || "$PY" tokenization.py build-vocab --corpus "${FILES[@]}" --vocab_size 32000 \
    "${MORPH_FLAGS[@]}" --output "$OUT/vocab.txt"
t1=$(date +%s)
# shards from before per-document sources (needed by --source_weights) are made again
[ -f "$OUT/shards/meta.json" ] && [ -f "$OUT/shards/shard_00000.sources.npy" ] || "$PY" create_pretraining_data.py \
    --input_files "${FILES[@]}" --vocab_file "$OUT/vocab.txt" --output_dir "$OUT/shards" --overwrite "${MORPH_FLAGS[@]}"
t2=$(date +%s)
tar -cJf "$OUT/cram_shards.tar.xz.tmp" -C "$OUT" shards  # renamed when complete: never a half-written archive
mv "$OUT/cram_shards.tar.xz.tmp" "$OUT/cram_shards.tar.xz"
t3=$(date +%s)
echo "vocab $((t1 - t0)) s, shards $((t2 - t1)) s, xz $((t3 - t2)) s"
du -sh "$OUT/shards" "$OUT/cram_shards.tar.xz"
