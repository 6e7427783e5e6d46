"""A static HTML report of every visualisation for one trained net.

``write_report`` writes ``index.html`` and its PNGs into one folder (relative
links, or everything inlined as base64 data URIs with ``embed=True``): no server
and no external assets. Sections follow the paper: architecture and receptive
fields, first-layer filters (Fig. 6), top-9 activations with their deconvnet
projections (Fig. 2), feature evolution (Fig. 4), invariance (Fig. 5), occlusion
(Fig. 7), then saliency, guided backpropagation, Grad-CAM, Guided Grad-CAM, Integrated
Gradients, SmoothGrad, nearest neighbours in fc7 space, class models, feature inversion,
Deep Dream and an adversarial example.
"""
import html
import os
import time

import numpy as np

from ..data import display_name
from ._common import (check_net, conv_layer_names, default_feature_layer, like_net, net_dtype,
                      pick_examples, take, to_numpy)
from . import render, report_sections
from .deconvnet import DeconvNet
from .evolution import evolution_figure, feature_evolution, first_filters
from .invariance import TRANSFORMS, invariance, plot_invariance
from .occlusion import occlusion
from .receptive import receptive_fields
from .saliency import guided_backprop, predict, saliency
from .synthesis import adversarial, class_model, deep_dream, invert_features
from .topk import project_top_k, top_k, top_k_patches

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}
img{max-width:100%;image-rendering:pixelated}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}p.note{color:#555;font-size:.9em}
figure{margin:1em 0}figcaption{font-size:.85em;color:#444}"""


class _Page:
    """Collects HTML fragments and the PNGs they point to.

    Every text that goes into the page is escaped here, whatever it holds (class
    names come from folder names, which anyone can choose): sections, notes,
    captions, table cells, attributes. There is no way to add raw HTML.
    """

    def __init__(self, out_dir, embed, writes=True):
        self.out_dir, self.embed, self.parts, self.writes = out_dir, embed, [], writes
        if writes:
            os.makedirs(out_dir, exist_ok=True)

    def section(self, title, text=None):
        self.parts.append(f"<h2>{_escape(title)}</h2>")
        if text:
            self.parts.append(f"<p class='note'>{_escape(text)}</p>")

    def text(self, text):
        self.parts.append(f"<p>{_escape(text)}</p>")

    def image(self, name, img=None, fig=None, caption=None):
        """Add a PIL image or a matplotlib figure, saved as ``name``.png."""
        if not self.writes:
            return
        path = os.path.join(self.out_dir, f"{name}.png")
        if fig is not None:
            fig.savefig(path, dpi=110)
        else:
            img.save(path)
        src = render.data_uri(path) if self.embed else f"{name}.png"
        cap = f"<figcaption>{_escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f"<figure><img src='{_escape(src)}' alt='{_escape(name)}'>{cap}"
                          "</figure>")
        if self.embed:
            os.remove(path)

    def table(self, header, rows):
        head = "".join(f"<th>{_escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_escape(c)}</td>" for c in row) + "</tr>"
                       for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def write(self, title):
        doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_escape(title)}"
               f"</title><style>{_CSS}</style></head><body><h1>{_escape(title)}</h1>"
               + "\n".join(self.parts) + "</body></html>")
        path = os.path.join(self.out_dir, "index.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)
        return path


def _escape(text):
    """Text as HTML: markup characters and quotes escaped, non-UTF-8 bytes as \\xNN."""
    return html.escape(display_name(str(text)), quote=True)


def write_report(net, images, labels, out_dir, layers=None, class_names=None, n_images=6,
                 preprocess=None, fill=0.0, snapshots=None, max_scan=None, maps_per_layer=16,
                 occlusion_size=None, occlusion_stride=None, synthesis_steps=150,
                 title="minconv: visualizing and understanding a convnet", embed=False,
                 show_progress=True, log=print, comm=None):
    """Write the report for ``net`` into ``out_dir``; returns the path of index.html.

    images : (N, C, H, W) as stored (e.g. uint8), shown as they are; ``preprocess`` maps a
        batch of them to the net's input (e.g. standardisation). labels : (N,) classes.
    layers : layers for the top-9 sheets (default: every Conv2D)
    fill : the occluder's grey in the net's input space (the dataset mean: 0 when
        standardised)
    snapshots : checkpoints or nets for the feature-evolution figure (optional)
    max_scan : scan only the first ``max_scan`` images for the top-9 (default: all)
    comm : a :mod:`minconv.distributed` communicator: the ranks share the top-9 scan, the
        occlusion maps and the invariance curves; rank 0 draws and writes the report (the
        other ranks return None)
    """
    check_net(net, "write_report")
    root = comm is None or comm.is_root
    log = (log if root else None) or (lambda *a, **k: None)
    start = time.perf_counter()
    images = images if hasattr(images, "shape") else np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    labels = np.asarray(labels, dtype=np.int64)
    prep = preprocess or (lambda b: np.asarray(b, dtype=net_dtype(net)))
    layers = list(layers) if layers is not None else conv_layer_names(net)
    n_classes = int(predict(net, like_net(prep(images[:1]), net)).shape[1])
    names = [display_name(n) for n in class_names] if class_names is not None else \
        [str(k) for k in range(n_classes)]
    page = _Page(out_dir, embed, writes=root)
    shape = tuple(images.shape[1:])

    # architecture ----------------------------------------------------------------
    page.section("Architecture and receptive fields",
                 "Output shape of every layer and the input region a unit sees: size, jump "
                 "(input pixels between neighbouring units) and start (first pixel seen by "
                 "unit (0, 0); negative where the field reaches into the padding).")
    fields = receptive_fields(net, shape)
    page.table(["layer", "type", "output", "params", "RF size", "jump", "start"],
               [(n, type(net[n]).__name__, "x".join(map(str, f.output_shape)),
                 sum(int(np.prod(v.shape)) for v in net[n].params.values()),
                 "-" if f.size is None else f.size[0], "-" if f.size is None else f.jump[0],
                 f.start[0]) for n, f in fields.items()])

    # filters --------------------------------------------------------------------
    page.section("First-layer filters (Fig. 6)", "Each filter contrast-normalised: grey is 0.")
    page.image("filters", render.filters_image(first_filters(net), zoom=6))

    # top-9 ------------------------------------------------------------------------
    scan = images if max_scan is None else images[:int(max_scan)]
    log(f"top-9: scanning {len(scan)} images for {', '.join(layers)}")
    best = top_k(net, scan, layers, k=9, preprocess=prep, show_progress=show_progress,
                 comm=comm)
    page.section("Top-9 activations and their deconvnet projections (Fig. 2)",
                 "For each feature map: the 9 strongest activations over the scanned images, "
                 "projected to pixel space with the deconvnet (left, each contrast-normalised) "
                 "and the receptive-field patches of the images (right).")
    head = to_numpy(images[:256])
    lo, hi = float(head.min()), float(head.max())
    for layer in layers if root else ():
        result = best[layer]
        maps = np.argsort(-result.values[:, 0], kind="stable")[:maps_per_layer]
        proj = project_top_k(net, scan, result, preprocess=prep, maps=maps)
        patches, crops = top_k_patches(net, scan, result, maps=maps, projections=proj,
                                       fill=lo)
        sheet = render.top_k_sheet(crops, patches, [f"{layer} #{m}" for m in maps], columns=4,
                                   lo=lo, hi=hi)
        f = fields[layer]
        page.image(f"top9_{layer}", sheet, caption=f"{layer}: {len(maps)} of {len(result)} maps "
                   f"(the strongest first); receptive field {f.size[0]}x{f.size[1]} pixels"
                   if f.size else layer)

    if root:
        report_sections.random_top9(page, net, scan, best, layers, prep, lo, hi,
                                    min(8, maps_per_layer))

    # evolution --------------------------------------------------------------------
    if snapshots and root:
        page.section("Feature evolution during training (Fig. 4)",
                     "For a few feature maps (rows), the strongest activation over a sample "
                     "of images, projected down, at each snapshot (columns).")
        log(f"feature evolution over {len(snapshots)} snapshots")
        sample = scan[:min(len(scan), 1000)]
        evolutions = feature_evolution(snapshots, sample, layers, maps=8, preprocess=prep)
        page.image("evolution", evolution_figure(evolutions),
                   caption=f"{', '.join(layers)}: the first 8 feature maps of each, over "
                           f"{len(sample)} test images")
        report_sections.snapshots_table(page, snapshots)

    # per-image experiments ---------------------------------------------------------
    pick = pick_examples(labels, n_images)
    raw = to_numpy(take(images, pick))
    x = like_net(prep(raw), net)
    y = labels[pick]
    probs = predict(net, x)
    page.section("Test images", "The images used below, with the net's prediction.")
    page.table(["image", "true class", "predicted", "P(predicted)"],
               [(int(i), names[int(t)], names[int(p.argmax())], f"{p.max():.3f}")
                for i, t, p in zip(pick, y, probs)])

    feat_layer = default_feature_layer(net)
    H = shape[-1]
    size = occlusion_size or max(2, H // 4)
    stride = occlusion_stride or max(1, H // 28)
    page.section("Occlusion sensitivity (Fig. 7)",
                 f"A grey {size}x{size} square (the dataset mean) slides over the image with "
                 f"stride {stride}. Heat maps: total activation of the strongest {feat_layer} "
                 "feature map, and the probability of the correct class, at each occluder "
                 "position; right: the most probable class there.")
    log("occlusion")
    xl, xh = float(to_numpy(x).min()), float(to_numpy(x).max())
    for j in range(len(pick)):
        occ = occlusion(net, x[j], int(y[j]), size=size, stride=stride, fill=fill,
                        layer=feat_layer, comm=comm)
        page.image(f"occlusion_{j}", fig=render.occlusion_figure(x[j], occ, names, lo=xl,
                                                                  hi=xh))

    page.section("Invariance (Fig. 5)",
                 "Euclidean distance between the feature vectors of the original and the "
                 "transformed image, and the probability of the true class, one line per "
                 "image: vertical translation, scale and rotation.")
    log("invariance")
    inv = [invariance(net, x, y, t, fill=fill, comm=comm) for t in TRANSFORMS]
    page.image("invariance", fig=plot_invariance(inv, class_names=names))
    if not root:
        return None  # the shared scans are done: rank 0 draws the rest
    if comm is not None:
        comm.take_all_cores()  # the other ranks are done

    log("saliency and guided backpropagation")
    page.section("Saliency, guided backpropagation and the deconvnet",
                 "Per image: the input; |d score / d x| (max over channels) for the true "
                 "class; guided backpropagation of that score; the deconvnet projection of "
                 f"the strongest {feat_layer} unit.")
    sal = to_numpy(saliency(net, x, y))
    gb = to_numpy(guided_backprop(net, x, y))
    dc = to_numpy(DeconvNet(net).project(x, feat_layer, _strongest_maps(net, x, feat_layer)))
    fig, axes = render.figure(len(pick), 4, (2.0, 2.0))
    for j in range(len(pick)):
        render.show_image(axes[j, 0], to_numpy(x[j]), names[int(y[j])], xl, xh)
        axes[j, 1].imshow(sal[j], cmap="hot")
        axes[j, 1].set_axis_off()
        render.show_signed(axes[j, 2], gb[j])
        render.show_signed(axes[j, 3], dc[j])
    for c, t in enumerate(("saliency", "guided backprop", f"deconvnet ({feat_layer})")):
        axes[0, c + 1].set_title(t, fontsize=8)
    fig.tight_layout()
    page.image("saliency", fig=fig)
    log("attributions and nearest neighbours")
    report_sections.attributions(page, net, x, y, names, feat_layer)
    report_sections.neighbours(page, net, images, pick, prep, names, labels)
    report_sections.unit_models(page, net, shape, feat_layer, synthesis_steps, xl, xh)

    _synthesis_sections(page, net, x, y, names, shape, feat_layer, synthesis_steps, log)
    page.text(f"Generated in {time.perf_counter() - start:.0f} s.")
    return page.write(title)


def _strongest_maps(net, x, layer):
    a = to_numpy(net.forward(x, train=False, until=layer))
    net.clear_cache()
    return a.reshape(a.shape[0], a.shape[1], -1).max(axis=2).argmax(axis=1)


def _synthesis_sections(page, net, x, y, names, shape, feat_layer, steps, log):
    xl, xh = float(to_numpy(x).min()), float(to_numpy(x).max())
    clip = (xl, xh)
    log("class models")
    K = len(names)
    page.section("Class models",
                 "Gradient ascent on the input for each class score with L2 and total-"
                 "variation penalties: argmax_x S_c(x) - lambda ||x||^2 - mu TV(x), from "
                 "faint noise.")
    shown = list(range(min(K, 10)))
    models = to_numpy(class_model(net, shown, shape, steps=steps, lr=0.01 * (xh - xl), l2=1e-3,
                                  tv=0.01, clip=clip))
    fig, axes = render.figure(1, len(shown), (1.5, 1.7))
    for c in shown:
        render.show_image(axes[0, c], models[c], names[c])
    fig.tight_layout()
    page.image("class_models", fig=fig)

    log("feature inversion")
    convs = conv_layer_names(net)
    inv_layers = [convs[0], convs[len(convs) // 2], net.names[-1]] if convs else [net.names[-1]]
    page.section("Feature inversion",
                 "An image reconstructed from the features of one layer, minimising "
                 "||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 plus L2 and total-variation penalties.")
    fig, axes = render.figure(1, len(inv_layers) + 1, (1.8, 2.0))
    render.show_image(axes[0, 0], to_numpy(x[0]), "original", xl, xh)
    for c, layer in enumerate(inv_layers):
        rec = invert_features(net, x[:1], layer, steps=steps * 2, lr=0.01 * (xh - xl),
                              tv=1e-3, clip=clip)
        render.show_image(axes[0, c + 1], to_numpy(rec[0]), f"from {layer}")
    fig.tight_layout()
    page.image("inversion", fig=fig)

    log("deep dream")
    page.section("Deep Dream", f"Gradient ascent on 1/2 ||A||^2 of {feat_layer}, starting "
                 "from the test images: the net amplifies what it sees.")
    dream = deep_dream(net, x, feat_layer, steps=max(10, steps // 5), lr=0.02, clip=clip)
    fig, axes = render.figure(2, len(x), (1.6, 1.7))
    for j in range(len(x)):
        render.show_image(axes[0, j], to_numpy(x[j]), "before", xl, xh)
        render.show_image(axes[1, j], to_numpy(dream[j]), "after", xl, xh)
    fig.tight_layout()
    page.image("deep_dream", fig=fig)

    log("adversarial example")
    probs = to_numpy(predict(net, x[:1]))[0]
    target = int(np.argsort(-probs, kind="stable")[1])      # the runner-up: the nearest class
    adv = adversarial(net, x[:1], target, steps=3 * steps + 50)
    outcome = (f"the net now says '{names[adv.label]}' with probability {adv.prob:.3f}"
               if adv.success else f"after {adv.steps} steps the net still says "
               f"'{names[adv.label]}'")
    page.section("Adversarial example",
                 f"Small L2-normalised gradient steps on log p('{names[target]}'), the "
                 f"runner-up class, from the first test image (the net said "
                 f"'{names[adv.original_label]}' with probability {adv.original_prob:.3f}). "
                 f"After {adv.steps} steps {outcome}; the image changed by "
                 f"{100 * adv.relative_change:.1f}% in L2 norm (largest pixel change "
                 f"{adv.max_change:.3f}; the image spans {xh - xl:.2f}).")
    fig, axes = render.figure(1, 3, (2.2, 2.4))
    render.show_image(axes[0, 0], to_numpy(x[0]), f"original: {names[adv.original_label]}",
                      xl, xh)
    render.show_image(axes[0, 1], adv.image[0], f"adversarial: {names[adv.label]}", xl, xh)
    render.show_signed(axes[0, 2], adv.image[0] - to_numpy(x[0]), "difference (magnified)")
    fig.tight_layout()
    page.image("adversarial", fig=fig)
