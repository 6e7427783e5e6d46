"""Turning arrays into pictures: contrast, tiles, sheets, heat maps, PNG files.

Conventions: arrays are (C, H, W) with C = 1 (grey) or 3 (RGB); other channel
counts are shown as their mean. Signed signals (projections, gradients, filters)
are contrast-normalised one by one, centred at grey:

    u8 = 128 + 127 * a / max|a|

Images are stretched to [0, 255] by a range shared by all tiles of a figure, so
the tiles stay comparable. Figures with axes use matplotlib's object-oriented API
(no pyplot, no global backend switch).
"""
import base64
import io

import numpy as np

from ._common import to_numpy


# ---------------------------------------------------------------------- arrays -> uint8

def contrast(a):
    """Signed (C, H, W) -> uint8, zero at 128, the largest magnitude at 1 or 255."""
    a = np.asarray(to_numpy(a), dtype=np.float64)
    peak = np.abs(a).max(initial=0.0)
    if peak == 0:
        return np.full(a.shape, 128, dtype=np.uint8)
    return np.clip(np.round(128 + 127 * a / peak), 0, 255).astype(np.uint8)


def stretch(a, lo=None, hi=None):
    """(C, H, W) -> uint8 by the linear map [lo, hi] -> [0, 255] (default: a's range)."""
    a = np.asarray(to_numpy(a), dtype=np.float64)
    lo = a.min(initial=np.inf) if lo is None else lo
    hi = a.max(initial=-np.inf) if hi is None else hi
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip(np.round(255 * (a - lo) / (hi - lo)), 0, 255).astype(np.uint8)


def to_pil(u8, zoom=1):
    """uint8 (C, H, W) or (H, W) -> a PIL image (L or RGB), enlarged ``zoom`` times."""
    from PIL import Image
    u8 = np.asarray(u8)
    if u8.ndim == 3:
        if u8.shape[0] == 3:
            img = Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB")
        else:
            img = Image.fromarray(np.ascontiguousarray(u8.mean(axis=0).astype(np.uint8)), "L")
    else:
        img = Image.fromarray(np.ascontiguousarray(u8), "L")
    if zoom != 1:
        img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
    return img


def grid(tiles, columns, pad=1, background=255, mode=None):
    """Paste PIL tiles (None leaves a blank) row by row on one canvas; tiles may differ in
    size (each cell takes the largest)."""
    from PIL import Image
    present = [t for t in tiles if t is not None]
    if not present:
        raise ValueError("grid: no tiles")
    mode = mode or ("RGB" if any(t.mode == "RGB" for t in present) else "L")
    th = max(t.height for t in present)
    tw = max(t.width for t in present)
    columns = max(1, min(int(columns), len(tiles)))
    rows = -(-len(tiles) // columns)
    fill = background if mode == "L" else (background,) * 3
    canvas = Image.new(mode, (columns * tw + (columns + 1) * pad, rows * th + (rows + 1) * pad),
                       fill)
    for i, tile in enumerate(tiles):
        if tile is None:
            continue
        r, c = divmod(i, columns)
        canvas.paste(tile.convert(mode), (pad + c * (tw + pad), pad + r * (th + pad)))
    return canvas


def stack(images, vertical=True, pad=6, background=255):
    """PIL images one under the other (or side by side), each at its own size."""
    from PIL import Image
    fill = (background,) * 3
    if vertical:
        size = (max(i.width for i in images) + 2 * pad,
                sum(i.height for i in images) + pad * (len(images) + 1))
    else:
        size = (sum(i.width for i in images) + pad * (len(images) + 1),
                max(i.height for i in images) + 2 * pad)
    canvas = Image.new("RGB", size, fill)
    offset = pad
    for img in images:
        canvas.paste(img.convert("RGB"), (pad, offset) if vertical else (offset, pad))
        offset += (img.height if vertical else img.width) + pad
    return canvas


def filters_image(W, columns=None, zoom=4):
    """First-layer filters W (F, C, kh, kw) as a grid, each contrast-normalised."""
    W = np.asarray(to_numpy(W))
    if W.ndim != 4:
        raise ValueError(f"filters_image: expected weights (F, C, kh, kw), got {W.shape}")
    columns = columns or int(np.ceil(np.sqrt(W.shape[0])))
    tiles = [to_pil(contrast(w if w.shape[0] in (1, 3) else w.mean(axis=0, keepdims=True)),
                    zoom) for w in W]
    return grid(tiles, columns, pad=2, background=255)


def top_k_sheet(projections, patches, labels=None, columns=4, zoom=None, lo=None, hi=None,
                min_tile=40):
    """The paper's Fig. 2 layout: for each feature map a 3x3 grid (k tiles) of
    projections beside a grid of the image patches, many maps per sheet.

    projections, patches : lists [map][rank] of (C, h, w) arrays or None; projections are
    contrast-normalised one by one, patches stretched by a shared [lo, hi].
    labels : one caption per map (drawn above its block).
    zoom : enlargement of every tile (default: the smallest that makes tiles at least
    ``min_tile`` pixels wide).
    """
    from PIL import ImageDraw
    vals = [p for row in patches for p in row if p is not None]
    if lo is None or hi is None:
        lo = min(float(np.min(p)) for p in vals) if lo is None else lo
        hi = max(float(np.max(p)) for p in vals) if hi is None else hi
    if zoom is None:
        zoom = max(1, -(-min_tile // max(p.shape[-1] for p in vals)))
    blocks = []
    for m, (prow, irow) in enumerate(zip(projections, patches)):
        k = len(prow)
        side = int(np.ceil(np.sqrt(k)))
        left = grid([None if p is None else to_pil(contrast(p), zoom) for p in prow], side,
                    pad=1, background=255)
        right = grid([None if p is None else to_pil(stretch(p, lo, hi), zoom) for p in irow],
                     side, pad=1, background=255)
        block = grid([left, right], 2, pad=2, background=255, mode="RGB")
        if labels is not None:
            from PIL import Image
            captioned = Image.new("RGB", (block.width, block.height + 12), (255, 255, 255))
            captioned.paste(block, (0, 12))
            ImageDraw.Draw(captioned).text((3, 0), str(labels[m]), fill=(0, 0, 0))
            block = captioned
        blocks.append(block)
    return grid(blocks, columns, pad=6, background=235, mode="RGB")


def evolution_image(crops, epochs, labels=None, zoom=3):
    """Rows = feature maps, columns = checkpoints: crops [checkpoint][map] of (C, h, w)."""
    from PIL import Image, ImageDraw
    n_ck, n_maps = len(crops), len(crops[0])
    tiles = []
    for m in range(n_maps):
        for c in range(n_ck):
            p = crops[c][m]
            tiles.append(None if p is None else to_pil(contrast(p), zoom))
    body = grid(tiles, n_ck, pad=2, background=255, mode="RGB")
    head = Image.new("RGB", (body.width, 14), (255, 255, 255))
    draw = ImageDraw.Draw(head)
    cell = (body.width - 2) / n_ck
    for c, e in enumerate(epochs):
        draw.text((2 + c * cell + 2, 1), str(e), fill=(0, 0, 0))
    out = Image.new("RGB", (body.width, body.height + 14), (255, 255, 255))
    out.paste(head, (0, 0))
    out.paste(body, (0, 14))
    return out


# ---------------------------------------------------------------------- files and figures

def save(img, path):
    """Save a PIL image (PNG by extension) and return the path."""
    img.save(path)
    return path


def data_uri(img_or_path):
    """A ``data:image/png;base64,...`` URI for a PIL image or a PNG file."""
    if isinstance(img_or_path, (str, bytes)) or hasattr(img_or_path, "__fspath__"):
        with open(img_or_path, "rb") as f:
            raw = f.read()
    else:
        buf = io.BytesIO()
        img_or_path.save(buf, format="PNG")
        raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def plain(text):
    """``text`` as matplotlib draws it literally: every ``$`` escaped (no mathtext, so a
    class called ``a$^$b`` is drawn as written) and bytes that are not UTF-8 shown as
    ``\\xNN`` (see :func:`minconv.data.display_name`)."""
    from ..data import display_name
    return display_name(str(text)).replace("$", r"\$")


def figure(rows, cols, size=(3.0, 3.0)):
    """A matplotlib Figure and its axes grid (rows, cols), without pyplot."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(size[0] * cols, size[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _draw(ax, u8, title):
    """Put a (C, H, W) uint8 image on an axis without ticks."""
    if u8.shape[0] == 3:
        ax.imshow(u8.transpose(1, 2, 0))
    else:
        ax.imshow(u8.mean(axis=0), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(plain(title), fontsize=8)


def show_image(ax, image, title=None, lo=None, hi=None):
    """Draw (C, H, W) on a matplotlib axis (grey or RGB), stretched to [lo, hi]."""
    _draw(ax, stretch(image, lo, hi), title)


def show_signed(ax, a, title=None):
    """Draw a signed (C, H, W) signal contrast-normalised (grey = 0)."""
    _draw(ax, contrast(a), title)


def occlusion_figure(image, result, class_names=None, path=None, lo=None, hi=None):
    """Fig. 7 for one image: the input, the projection of the tracked feature map, its total
    activation and P(correct class) as heat maps over the image, the most probable class."""
    from matplotlib.patches import Patch, Rectangle
    image = np.asarray(to_numpy(image))
    image = image[0] if image.ndim == 4 else image
    names = class_names or [str(k) for k in range(len(result.baseline["probs"]))]
    panels = 5 if result.projection is not None else 4
    fig, axes = figure(1, panels, (2.6, 2.8))
    ax = axes[0]
    show_image(ax[0], image, f"input: {names[result.label]}", lo, hi)
    sh, sw = result.size
    ax[0].add_patch(Rectangle((result.lefts[0] - 0.5, result.tops[0] - 0.5), sw, sh,
                              fill=True, color="0.5", alpha=0.8))
    i = 1
    if result.projection is not None:
        show_signed(ax[1], result.projection, f"{result.layer} map {result.channel} projection")
        i = 2
    extent = result.extent()
    for a, values, title, cmap in ((ax[i], result.feature, f"{result.layer} map "
                                    f"{result.channel}: total activation", "jet"),
                                   (ax[i + 1], result.prob, f"P({names[result.label]})", "jet")):
        show_image(a, image, None, lo, hi)
        im = a.imshow(values, cmap=cmap, alpha=0.6, extent=extent, interpolation="nearest")
        a.set_xlim(-0.5, image.shape[-1] - 0.5)
        a.set_ylim(image.shape[-2] - 0.5, -0.5)
        a.set_title(plain(title), fontsize=8)
        fig.colorbar(im, ax=a, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    a = ax[i + 2]
    classes = np.unique(result.top_class)
    from matplotlib.colors import ListedColormap
    from matplotlib import colormaps
    palette = colormaps["tab20"].colors
    lut = {int(c): palette[j % len(palette)] for j, c in enumerate(classes)}
    index = np.searchsorted(classes, result.top_class)
    a.imshow(index, cmap=ListedColormap([lut[int(c)] for c in classes]), extent=extent,
             interpolation="nearest", vmin=-0.5, vmax=len(classes) - 0.5)
    a.set_xlim(-0.5, image.shape[-1] - 0.5)
    a.set_ylim(image.shape[-2] - 0.5, -0.5)
    a.set_xticks([])
    a.set_yticks([])
    a.set_title("most probable class", fontsize=8)
    a.legend(handles=[Patch(color=lut[int(c)], label=plain(names[int(c)])) for c in classes],
             fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
