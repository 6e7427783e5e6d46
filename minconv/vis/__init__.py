"""Zeiler & Fergus's visualisations for any minconv :class:`~minconv.nn.Sequential` conv net.

    dn = mc.vis.DeconvNet(net)
    proj = dn.project(x, "conv5", channel=k)                 # (N, C, H, W), Sec. 2.1
    rf = mc.vis.receptive_field(net, "conv5", (3, 224, 224)) # size, jump, start
    best = mc.vis.top9(net, images, ["conv1", "conv2"])      # Fig. 2, one streamed pass
    occ = mc.vis.occlusion(net, image, label, size=8)        # Fig. 7
    inv = mc.vis.invariance(net, images, labels, "rotate")   # Fig. 5
    mc.vis.write_report(net, images, labels, "report/")      # all of it as one HTML page

Everything runs on the arrays' own device (NumPy or CuPy).
"""
from .deconvnet import DeconvNet, project
from .gradcam import grad_cam, guided_grad_cam, layer_gradient, upsample
from .integrated import input_x_gradient, integrated_gradients, quadrature
from .smoothgrad import smoothgrad
from .blur import gaussian_blur
from .heatmap import heatmap, overlay
from .maximise import maximise, unit_activation
from .neighbours import feature_vectors, nearest_neighbours, neighbours_sheet
from .evolution import (Evolution, evolution_figure, feature_evolution, first_filters,
                        run_snapshots)
from .invariance import (InvarianceResult, default_steps, invariance, plot_invariance,
                         transform_images)
from .occlusion import OcclusionResult, occluded_copies, occluder_positions, occlusion
from .receptive import ReceptiveField, crop, receptive_field, receptive_fields
from .render import (contrast, data_uri, filters_image, grid, occlusion_figure, stack,
                     stretch, to_pil, top_k_sheet)
from .saliency import guided_backprop, input_gradient, predict, saliency
from .synthesis import (Adversarial, adversarial, class_model, deep_dream, invert_features,
                        total_variation)
from .topk import TopK, choose_maps, project_top_k, top9, top_k, top_k_patches
from .report import write_report

__all__ = [
    "Adversarial", "DeconvNet", "Evolution", "InvarianceResult", "OcclusionResult",
    "ReceptiveField", "TopK", "adversarial", "choose_maps", "class_model", "contrast", "crop",
    "data_uri", "deep_dream", "default_steps", "evolution_figure", "feature_evolution",
    "feature_vectors", "filters_image", "first_filters", "gaussian_blur", "grad_cam", "grid",
    "guided_backprop", "guided_grad_cam", "heatmap", "input_gradient", "input_x_gradient",
    "integrated_gradients", "invariance", "invert_features", "layer_gradient", "maximise",
    "nearest_neighbours", "neighbours_sheet", "occluded_copies", "occluder_positions",
    "occlusion", "occlusion_figure", "overlay", "plot_invariance", "predict", "project",
    "project_top_k", "quadrature", "receptive_field", "receptive_fields", "run_snapshots",
    "saliency", "smoothgrad", "stack", "stretch", "to_pil", "top9", "top_k", "top_k_patches",
    "top_k_sheet", "total_variation", "transform_images", "unit_activation", "upsample",
    "write_report",
]
