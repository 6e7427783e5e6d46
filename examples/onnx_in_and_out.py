"""A net from elsewhere, through minconv and back out, step by step.

    python examples/onnx_in_and_out.py --out onnx_demo/

1. Import one of the model-zoo graphs the ``onnx`` package ships (inception_v1, with its
   LRN and concatenations; ``--model`` picks another) as a minconv Graph and print its
   summary: every ONNX node is a named minconv layer.
2. Give it random weights (the shipped graph holds only constant fills), run the
   deconvnet from one of its layers down to the pixels, and save the projection.
3. Export the Graph with ``mc.io.save_onnx`` and check that onnxruntime computes the
   same output as minconv.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minconv as mc  # noqa: E402
from minconv.vis import render  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="inception_v1",
                   help="a light model of onnx/backend/test/data/light (bvlc_alexnet, ...)")
    p.add_argument("--layer", help="the layer to project from (default: the 10th conv)")
    p.add_argument("--out", default="onnx_demo")
    args = p.parse_args()
    import onnx
    os.makedirs(args.out, exist_ok=True)

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{args.model}.onnx")
    net = mc.io.load_onnx(path)                               # 1. a Graph of minconv layers
    mc.models.summary(net, (3, 224, 224))

    rng = np.random.default_rng(0)                            # 2. random weights
    for key, value in net.params.items():   # He-scaled filters, zero biases, unit BN scales
        if value.ndim > 1:
            value[...] = rng.standard_normal(value.shape) * np.sqrt(2.0 / value[0].size)
        else:
            value[...] = 1.0 if key.endswith(".gamma") else 0.0
    convs = [name for name in net.names if isinstance(net[name], mc.nn.Conv2D)]
    layer = args.layer or convs[min(9, len(convs) - 1)]
    x = rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    projection = mc.vis.DeconvNet(net).project(x, layer=layer, channel=0)
    render.save(render.to_pil(render.stretch(projection[0])),
                os.path.join(args.out, f"deconv_{layer}.png"))
    print(f"deconvnet projection of {layer}, channel 0: {args.out}/deconv_{layer}.png")

    exported = os.path.join(args.out, f"{args.model}.onnx")   # 3. out again
    mc.io.save_onnx(net, exported, (1, 3, 224, 224))
    import onnxruntime as ort
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x})[0]
    ours = net.forward(x)
    print(f"onnxruntime vs minconv on {exported}: max difference "
          f"{np.abs(theirs - ours).max():.2e} (outputs up to {np.abs(ours).max():.2e})")


if __name__ == "__main__":
    main()
