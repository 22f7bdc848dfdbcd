#!/usr/bin/env bash
# Steps 1-2 of README.md in one go: cut the fragments, standardise and tokenise the three corpora
# once, and pack them with the validation sets into data/ for train_gpu.py. Needs RDKit and ../shared.
# Usage: [WORK=DIR] [WORKERS=2] [KEEP_OUT_EVALUATION=1] bash scripts/bundled_models/prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=../shared/data
WORK=${WORK:-/tmp/bundled-prepare}
mkdir -p "$WORK"
MOSES=$SHARED/moses/train.csv.gz
BROAD=$SHARED/pretrain/broad.csv.gz
# Every MoleculeNet file but HIV, whose molecules are part of the broad corpus.
EXCLUDE=()
for name in bace.csv bbbp.csv clintox.csv delaney.csv freesolv.csv lipo.csv sider.csv tox21.csv; do
    EXCLUDE+=("$SHARED/moleculenet/$name")
done

if [ ! -s "$WORK/fragments.smi" ]; then
    python -m sklearn_cmim.chem.fragments "$BROAD" "$MOSES" --sample 40000 --exclude "${EXCLUDE[@]}" \
        --output "$WORK/fragments.smi"
fi
# A one-step run of a tiny model writes the prepared arrays; only they are kept. The vocabulary is
# the bundled models' own, so that their ids stay valid for a continuation. By default the corpora
# are prepared as the shipped twins read them, which the benchmarks need (README.md, step 1);
# KEEP_OUT_EVALUATION=1 keeps the evaluation sets' molecules out of every corpus, under whatever
# salt or stereo mark a corpus writes them, for twins trained from scratch.
KEEP_OUT=()
if [ "${KEEP_OUT_EVALUATION:-0}" = 1 ]; then KEEP_OUT=(--exclude "${EXCLUDE[@]}"); fi
rm -rf "$WORK/run" "$WORK"/mix*.npz
cmim pretrain "$MOSES" "$BROAD" "$WORK/fragments.smi" --prepared "$WORK/mix.npz" ${KEEP_OUT[@]+"${KEEP_OUT[@]}"} \
    --vocab-from cmim-broad --max-length 256 --holdout-every 250 --data-workers "${WORKERS:-2}" \
    --d-model 16 --n-heads 2 --d-ff 32 --n-encoder-layers 1 --n-decoder-layers 1 --n-latents 1 \
    --latent-dim 8 --batch-size 8 --max-steps 1 --validation-size 8 --device cpu --precision fp32 \
    --output "$WORK/run"
python scripts/bundled_models/pack.py "$WORK/mix.npz" "$MOSES" "$BROAD" "$WORK/fragments.smi"
ls -la scripts/bundled_models/data
