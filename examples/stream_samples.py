"""Use synthgen as a library: stream synthetic samples in-process and draw one.

    python examples/stream_samples.py            # built-in demo objects and scenes
    python examples/stream_samples.py OBJECTS_DIR BACKGROUNDS_DIR
"""

import sys

import cv2

from synthgen.compositor import CompositeConfig
from synthgen.engine import PasteSpec, iter_samples

objects, backgrounds = (sys.argv[1], sys.argv[2]) if len(sys.argv) == 3 else (None, None)
spec = PasteSpec(objects=objects, backgrounds=backgrounds, composite=CompositeConfig(width=512, height=384, objects_per_image=(2, 6)))
for sample in iter_samples(spec):
    image = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
    for ann in sample.annotations:
        x0, y0, x1, y1 = (int(v) for v in ann.xyxy)
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
    cv2.imwrite("sample.png", image)
    print(f"sample {sample.index}: {len(sample.annotations)} boxes -> sample.png")
    break
