"""Synthetic scenes for the demo: coloured shapes on a coarse grid, sampled from a seed and drawn with PIL.

Objects sit on a `grid x grid` layout of cells (small objects fill one cell, large ones a 2x2 block) so a
tiny vision tower with a coarse token grid can see them, and boxes take few enough distinct values that a
tiny language model can learn to read them out. Each object's box is the tight box of its own rendered
mask, so a box always describes the pixels actually drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUND: tuple[int, int, int] = (245, 245, 245)


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are laid out and drawn; every field is recorded in the data set's meta.json."""

    image_size: int = 128
    grid: int = 4
    min_objects: int = 1
    max_objects: int = 3
    margin: float = 0.15  # fraction of a cell left empty around an object
    jitter: int = 0  # random shift in pixels (within the margin) of each object
    large_prob: float = 0.35
    # relative frequency of (colour, shape) categories, so POPE's "popular" negatives mean something
    category_skew: float = 0.08
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES

    def __post_init__(self) -> None:
        for name in self.colours:
            if name not in COLOURS:
                raise ValueError(f"SceneSpec.colours: unknown colour '{name}'; known: {', '.join(COLOURS)}")
        for name in self.shapes:
            if name not in SHAPES:
                raise ValueError(f"SceneSpec.shapes: unknown shape '{name}'; known: {', '.join(SHAPES)}")
        if self.grid < 2 or self.image_size % self.grid:
            raise ValueError(
                f"SceneSpec.image_size ({self.image_size}) must be a multiple of "
                f"SceneSpec.grid ({self.grid}), and grid >= 2"
            )
        if not 1 <= self.min_objects <= self.max_objects <= len(self.categories):
            raise ValueError(
                f"SceneSpec: need 1 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects}) "
                f"<= number of colour x shape categories ({len(self.categories)})"
            )
        if self.max_objects > self.grid * self.grid:
            raise ValueError(
                f"SceneSpec.max_objects ({self.max_objects}) exceeds the {self.grid}x{self.grid} cells"
            )
        max_jitter = int(self.cell_px * self.margin)
        if not 0 <= self.jitter <= max_jitter:
            raise ValueError(
                f"SceneSpec.jitter ({self.jitter}) must lie in [0, {max_jitter}] (the cell margin)"
            )

    @property
    def cell_px(self) -> int:
        """Side of one grid cell in pixels."""
        return self.image_size // self.grid

    @property
    def categories(self) -> list[tuple[str, str]]:
        """All (colour, shape) pairs, the unit POPE-style existence questions ask about."""
        return [(c, s) for c in self.colours for s in self.shapes]

    def category_weights(self) -> list[float]:
        """Sampling weight of each category: a mild, fixed skew (first categories are the most frequent)."""
        return [1.0 / (1.0 + self.category_skew * k) for k in range(len(self.categories))]


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape: attributes, grid cell, drawing rectangle, tight pixel box (right/bottom exclusive)."""

    colour: str
    shape: str
    size: str
    row: int
    col: int
    rect_px: tuple[int, int, int, int]
    box_px: tuple[int, int, int, int]

    @property
    def category(self) -> tuple[str, str]:
        """(colour, shape)."""
        return (self.colour, self.shape)

    @property
    def span(self) -> int:
        """Cells covered along each side (1 small, 2 large)."""
        return 2 if self.size == "large" else 1

    def phrase(self) -> str:
        """Referring expression without article, e.g. 'small red circle'."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass
class Scene:
    """An image's content; `signature` identifies scenes that would render to the same picture."""

    objects: list[SceneObject] = field(default_factory=list)

    @property
    def signature(self) -> tuple:
        """Hashable description of everything that determines the pixels."""
        return tuple(sorted((o.colour, o.shape, o.size, o.row, o.col, o.box_px) for o in self.objects))

    def reading_order(self) -> list[SceneObject]:
        """Objects from top-left to bottom-right."""
        return sorted(self.objects, key=lambda o: (o.row, o.col))


def _free_anchors(occupied: set[tuple[int, int]], grid: int, span: int) -> list[tuple[int, int]]:
    """Top-left cells where a `span x span` block fits without touching occupied cells."""
    anchors = []
    for r in range(grid - span + 1):
        for c in range(grid - span + 1):
            cells = {(r + i, c + j) for i in range(span) for j in range(span)}
            if not cells & occupied:
                anchors.append((r, c))
    return anchors


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, xy: tuple[int, int, int, int], fill) -> None:
    """Draw `shape` inscribed in the pixel rectangle `xy` (inclusive corners)."""
    x0, y0, x1, y1 = xy
    if shape == "circle":
        draw.ellipse(xy, fill=fill)
    elif shape == "square":
        draw.rectangle(xy, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:  # guarded by SceneSpec validation
        raise ValueError(f"unknown shape '{shape}'")


def _shape_rect(
    spec: SceneSpec, row: int, col: int, span: int, dx: int, dy: int
) -> tuple[int, int, int, int]:
    """Inclusive pixel rectangle the shape is inscribed in."""
    cell = spec.cell_px
    m = int(cell * spec.margin)
    x0, y0 = col * cell + m + dx, row * cell + m + dy
    side = span * cell - 2 * m
    return (x0, y0, x0 + side - 1, y0 + side - 1)


def _mask_box(spec: SceneSpec, shape: str, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Tight box of the pixels `shape` really covers when drawn in `rect`."""
    mask = Image.new("L", (spec.image_size, spec.image_size), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, rect, 255)
    box = mask.getbbox()
    assert box is not None, "a shape inside the image always covers pixels"
    return box


def sample_scene(spec: SceneSpec, rng: random.Random) -> Scene:
    """Draw the objects of one scene: distinct (colour, shape) per scene so descriptions are unambiguous."""
    n = rng.randint(spec.min_objects, spec.max_objects)
    categories = spec.categories
    weights = spec.category_weights()
    occupied: set[tuple[int, int]] = set()
    scene = Scene()
    used: set[tuple[str, str]] = set()
    for _ in range(n):
        size = "large" if rng.random() < spec.large_prob else "small"
        span = 2 if size == "large" else 1
        anchors = _free_anchors(occupied, spec.grid, span)
        if not anchors and span == 2:
            size, span = "small", 1
            anchors = _free_anchors(occupied, spec.grid, span)
        if not anchors:
            break
        row, col = rng.choice(anchors)
        free = [k for k, cat in enumerate(categories) if cat not in used]
        colour, shape = categories[rng.choices(free, weights=[weights[k] for k in free])[0]]
        used.add((colour, shape))
        occupied |= {(row + i, col + j) for i in range(span) for j in range(span)}
        dx = rng.randint(-spec.jitter, spec.jitter) if spec.jitter else 0
        dy = rng.randint(-spec.jitter, spec.jitter) if spec.jitter else 0
        rect = _shape_rect(spec, row, col, span, dx, dy)
        scene.objects.append(SceneObject(colour, shape, size, row, col, rect, _mask_box(spec, shape, rect)))
    return scene


def render_scene(spec: SceneSpec, scene: Scene) -> Image.Image:
    """The RGB picture of `scene` (no anti-aliasing, so every object pixel has exactly its colour)."""
    img = Image.new("RGB", (spec.image_size, spec.image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        _draw_shape(draw, obj.shape, obj.rect_px, COLOURS[obj.colour])
    return img


def normalised_box(spec: SceneSpec, obj: SceneObject) -> list[float]:
    """Box as [x1, y1, x2, y2] fractions of the image, rounded to 2 decimals (the REC answer format)."""
    s = spec.image_size
    return [round(v / s, 2) for v in obj.box_px]


def format_box(box: list[float]) -> str:
    """'[0.04, 0.04, 0.21, 0.21]': the text form used in questions and answers."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"
