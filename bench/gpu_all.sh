#!/usr/bin/env bash
# One GPU slot, every device check: run on a lent CUDA machine from the repository root, with the
# wheels the machine lacks in .whl/ (pycocotools, webdataset, braceexpand). Each check has its own
# time limit; its output goes to $OUT/<name>.log (JSON lines where the script prints them).
#
#   bash bench/gpu_all.sh                      # the GPU slot: limits add up to about 12.5 minutes
#   DEVICE=cpu bash bench/gpu_all.sh           # every script on the CPU with tiny sizes: proves
#                                              # none crashes before a GPU is lent (not a measurement)
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; fi
export PYTHONPATH=$PWD:$PWD/bench:/tmp/site PYTHONUNBUFFERED=1
if [ "$DEVICE" = cpu ]; then
  SCALE=${SCALE:-6}  # the CPU (shared, small) is much slower than the GPU host these limits are for
  echo "cpu smoke run: $(nproc) cores" > "$OUT/env.log"
else
  SCALE=${SCALE:-1}
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/env.log" 2>&1
  $PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())" >> "$OUT/env.log" 2>&1
  nproc >> "$OUT/env.log"
fi
run() { local name=$1 limit=$(( $2 * SCALE )); shift 2; echo "== $name ($*)" >> "$OUT/$name.log"; timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1; echo "rc=$?" >> "$OUT/$name.log"; }
# A tiny object/background set for the torchrun check (the demo data has them too, but building
# its pools takes longer than the check).
$PY - "$OUT/inputs" <<'EOF'
import sys
from pathlib import Path
import cv2, numpy as np
root = Path(sys.argv[1]); rng = np.random.default_rng(0)
(root / "objects" / "thing").mkdir(parents=True, exist_ok=True); (root / "backgrounds").mkdir(exist_ok=True)
for k in range(4):
    rgba = np.zeros((48, 40, 4), np.uint8); cv2.ellipse(rgba, (20, 24), (14, 18), 0, 0, 360, (40 * k, 200, 90, 255), -1)
    cv2.imwrite(str(root / "objects" / "thing" / f"o{k}.png"), rgba)
    cv2.imwrite(str(root / "backgrounds" / f"b{k}.jpg"), cv2.GaussianBlur(rng.integers(0, 255, (200, 260, 3), dtype=np.uint8), (0, 0), 3))
EOF
IN="$OUT/inputs"
if [ "$DEVICE" = cpu ]; then
  run tests 200 $PY -m pytest -q -p no:cacheprovider tests/test_torch_compositor.py
  run paste 120 $PY bench/gpu_paste.py --device cpu --sizes 96x80 --counts 1,3 --batches 4,8 --n 16 --n-e2e 16 --n-cpu 32 --check 8 --workers 2
  run generator_paste 60 $PY bench/gpu_generator_paste.py --devices cpu --resolution 32 --n 40 --pool-size 16 --workers 1
  run train_feed 120 $PY bench/gpu_train_feed.py --device cpu --size 96x96 --image-size 96 --batch 4 --steps 8 --log-every 4 --feed-batches 3 --repeats 2 --workers 1 --threads 1
  run torchrun 60 $PY -m torch.distributed.run --standalone --nproc-per-node 2 -m synthgen paste --objects "$IN/objects" --backgrounds "$IN/backgrounds" --size 96x80 --format wds -n 24 --shard-size 4 --compositor torch --device cpu --batch-size 4 --quiet --out "$OUT/torchrun_out"
  run torchrun_verify 30 $PY -m synthgen verify "$OUT/torchrun_out" --n 24
  run generators 60 $PY bench/gpu_generators.py --device cpu --tiny --resolutions 16,32 --batches 1,2 --seconds 0.2
  run generators_sg1_dmgan 60 $PY bench/gpu_generators_sg1_dmgan.py --device cpu --tiny --batches 1,2 --reps 1
  run redo 60 $PY bench/gpu_redo.py --device cpu --batches 1,2 --train 64:4:2 --train-steps 1
  run detectorgan 60 $PY bench/gpu_detectorgan.py --device cpu --size 64 --ngf 8 --detector ssd-mobilenet --steps 1
else
  run tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_generators_stylegan2.py tests/test_torch_compositor.py tests/test_redo.py tests/test_generator_source.py::test_generator_objects_flow_to_the_torch_compositor_on_the_device
  run paste 170 $PY bench/gpu_paste.py --budget-s 130
  run generator_paste 60 $PY bench/gpu_generator_paste.py --devices cuda --n 400 --pool-size 64 --workers 4
  run train_feed 100 $PY bench/gpu_train_feed.py --device cuda --steps 40 --feed-batches 10
  run torchrun 40 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m synthgen paste --objects "$IN/objects" --backgrounds "$IN/backgrounds" --size 320x320 --format wds -n 256 --compositor torch --device cuda --batch-size 64 --quiet --out "$OUT/torchrun_out"
  run torchrun_verify 20 $PY -m synthgen verify "$OUT/torchrun_out" --n 256
  run generators 90 $PY bench/gpu_generators.py --seconds 1
  run generators_sg1_dmgan 45 $PY bench/gpu_generators_sg1_dmgan.py
  run redo 45 $PY bench/gpu_redo.py
  run detectorgan 60 $PY bench/gpu_detectorgan.py
fi
grep -H "^rc=" "$OUT"/*.log
