"""Everything written into the HTML report is escaped, and labels drawn by matplotlib are
plain text (no mathtext), whatever characters or bytes the class (folder) names hold."""
import os

import numpy as np

from minconv import data, models
from minconv.vis import render
from minconv.vis.occlusion import occlusion
from minconv.vis.report import write_report

HOSTILE = ['"><svg onload=alert(1)>', "a$^$b", "caf\udce9 <b>", "$\\frac{1}{0}$", "o'k&"]


def tiny_net(classes):
    return models.zfnet_mini(num_classes=classes, widths=(4, 6, 8, 8, 6), fc_width=16,
                             rng=np.random.default_rng(0))


def test_report_escapes_every_class_name_and_draws_them_as_plain_text(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 1, 28, 28)).astype(np.uint8)
    labels = np.arange(10) % len(HOSTILE)
    net = tiny_net(len(HOSTILE))
    path = write_report(net, images, labels, str(tmp_path), class_names=HOSTILE, n_images=5,
                        maps_per_layer=2, synthesis_steps=2, show_progress=False, log=None,
                        title="<title> & co")
    page = open(path, encoding="utf-8").read()
    assert "<svg" not in page and "onload=alert(1)>" not in page
    assert "&lt;svg onload=alert(1)&gt;" in page  # shown, as text
    assert "<b>" not in page and "caf\\xe9 &lt;b&gt;" in page
    assert "&lt;title&gt; &amp; co" in page
    assert os.path.exists(tmp_path / "adversarial.png") and os.path.exists(tmp_path / "saliency.png")


def test_plain_escapes_mathtext_and_undecodable_bytes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    assert render.plain("a$^$b") == r"a\$^\$b"
    assert render.plain("caf\udce9") == "caf\\xe9"
    assert data.display_name("caf\udce9") == "caf\\xe9"
    fig, axes = render.figure(1, len(HOSTILE))
    for ax, name in zip(axes[0], HOSTILE):
        render.show_image(ax, np.zeros((1, 4, 4), np.float32), name)
    FigureCanvasAgg(fig).draw()  # mathtext fails on "a$^$b"; surrogates fail to encode
    for ax, name in zip(axes[0], HOSTILE):
        shown, is_math = ax.title._preprocess_math(ax.title.get_text())
        assert not is_math and shown == data.display_name(name)


def test_occlusion_figure_with_hostile_names_renders(tmp_path):
    net = tiny_net(len(HOSTILE))
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    result = occlusion(net, x, 1, size=14, stride=14, fill=0.0)
    render.occlusion_figure(x[0], result, HOSTILE, path=str(tmp_path / "o.png"))
    assert os.path.getsize(tmp_path / "o.png") > 0
