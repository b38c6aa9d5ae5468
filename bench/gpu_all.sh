#!/usr/bin/env bash
# One GPU slot, every device check: run on a lent CUDA machine from the repository root, with the
# wheels the machine lacks in .whl/ (pycocotools, webdataset, braceexpand). Each check has its own
# time limit; its output goes to $OUT/<name>.log (JSON lines where the script prints them).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/env.log" 2>&1
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())" >> "$OUT/env.log" 2>&1
nproc >> "$OUT/env.log"
run() { local name=$1 limit=$2; shift 2; echo "== $name ($*)" >> "$OUT/$name.log"; timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1; echo "rc=$?" >> "$OUT/$name.log"; }
run tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_generators_stylegan2.py tests/test_torch_compositor.py tests/test_redo.py
run paste 170 python3 bench/gpu_paste.py --budget-s 130
run generators 90 python3 bench/gpu_generators.py --seconds 1
run generators_sg1_dmgan 45 python3 bench/gpu_generators_sg1_dmgan.py
run redo 45 python3 bench/gpu_redo.py
run detectorgan 60 python3 bench/gpu_detectorgan.py
