"""The benchmark's convolution layers: the standard suite, the layer-spec parser, subsets.

A layer spec is ``name:C,H,OC,KHxKW,stride,pad[,groups=G][,dilation=D]`` where

* ``H`` is the input height and width (``HxW`` for a non-square input),
* ``KHxKW`` is the kernel (a single ``K`` means KxK),
* ``stride``, ``pad`` and ``D`` are an int or ``AxB`` (height x width); ``pad`` may also be
  written ``(A,B)``, as in the issue's ``(0, 3)``. Padding is symmetric, as in PyTorch.

Example: ``mylayer:64,56,128,3x3,1,1`` or ``k1x7:128,17,128,1x7,1,(0,3)``.
This module needs only the standard library, so the tests can import it on its own.
"""
import re
from dataclasses import asdict, dataclass

SPEC_FORM = "name:C,H,OC,KHxKW,stride,pad[,groups=G][,dilation=D]"


@dataclass(frozen=True)
class Layer:
    """One float32 convolution: input C x H x W, OC filters of KH x KW (batch size set apart)."""
    name: str
    c: int
    h: int
    w: int
    oc: int
    kh: int
    kw: int
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)        # (ph, pw), symmetric
    groups: int = 1
    dilation: tuple = (1, 1)

    @property
    def out_hw(self):
        """(OH, OW)."""
        return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                     for size, p, d, k, s in zip((self.h, self.w), self.padding, self.dilation,
                                                 (self.kh, self.kw), self.stride))

    def flops(self, n):
        """2*N*OC*OH*OW*C/groups*KH*KW."""
        oh, ow = self.out_hw
        return 2 * n * self.oc * oh * ow * (self.c // self.groups) * self.kh * self.kw

    def input_shape(self, n, layout):
        return (n, self.c, self.h, self.w) if layout == "NCHW" else (n, self.h, self.w, self.c)

    def output_shape(self, n, layout):
        oh, ow = self.out_hw
        return (n, self.oc, oh, ow) if layout == "NCHW" else (n, oh, ow, self.oc)

    def weight_shape(self, layout):
        cg = self.c // self.groups
        return (self.oc, cg, self.kh, self.kw) if layout == "NCHW" else (self.kh, self.kw, cg,
                                                                         self.oc)

    def conv_kwargs(self):
        """stride, padding, dilation, groups as im2row and PyTorch both take them."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def with_size(self, h, w=None, name=None):
        """The same layer on another input size."""
        return Layer(name or self.name, self.c, h, w or h, self.oc, self.kh, self.kw,
                     self.stride, self.padding, self.groups, self.dilation)

    def spec(self):
        """The layer written back as a spec string (parse_layer_spec(l.spec()) == l)."""
        def pair(p):
            return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"
        size = str(self.h) if self.h == self.w else f"{self.h}x{self.w}"
        text = (f"{self.name}:{self.c},{size},{self.oc},{self.kh}x{self.kw},"
                f"{pair(self.stride)},{pair(self.padding)}")
        if self.groups != 1:
            text += f",groups={self.groups}"
        if self.dilation != (1, 1):
            text += f",dilation={pair(self.dilation)}"
        return text

    def describe(self):
        """A short human description: 64x56x56 -> 64, 3x3 s1 p1."""
        text = (f"{self.c}x{self.h}x{self.w} -> {self.oc}, {self.kh}x{self.kw} "
                f"s{_pair_text(self.stride)} p{_pair_text(self.padding)}")
        if self.groups != 1:
            text += f" g{self.groups}"
        if self.dilation != (1, 1):
            text += f" d{_pair_text(self.dilation)}"
        return text

    def as_dict(self):
        return asdict(self)


def _pair_text(p):
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


class LayerSpecError(ValueError):
    """A layer spec that cannot be parsed or describes an impossible convolution."""


def _fail(spec, why):
    raise LayerSpecError(f"bad layer spec {spec!r}: {why}; expected {SPEC_FORM}, "
                         f"e.g. mylayer:64,56,64,3x3,1,1")


def _split_fields(body):
    """Split on commas that are not inside parentheses: '1,(0,3),groups=2' -> 3 fields."""
    fields, depth, current = [], 0, ""
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            fields.append(current.strip())
            current = ""
        else:
            current += ch
    fields.append(current.strip())
    return fields


def _parse_int(text, what, spec, minimum):
    if not re.fullmatch(r"\d+", text):
        _fail(spec, f"{what} must be a whole number, got {text!r}")
    value = int(text)
    if value < minimum:
        _fail(spec, f"{what} must be >= {minimum}, got {value}")
    return value


def _parse_pair(text, what, spec, minimum):
    """'3' -> (3, 3); '1x7' -> (1, 7); '(0, 3)' -> (0, 3)."""
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        parts = inner[1:-1].split(",")
    else:
        parts = inner.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(re.fullmatch(r"\d+", p.strip()) for p in parts):
        _fail(spec, f"{what} must be an int, AxB or (A,B) of whole numbers, got {text!r}")
    return tuple(_parse_int(p.strip(), what, spec, minimum) for p in parts)


def parse_layer_spec(spec):
    """``name:C,H,OC,KHxKW,stride,pad[,groups=G][,dilation=D]`` -> Layer.

    Raises LayerSpecError (a ValueError) that says what is wrong and shows the expected form.
    """
    if not isinstance(spec, str) or ":" not in spec:
        _fail(spec, "missing 'name:' before the numbers")
    name, body = (part.strip() for part in spec.split(":", 1))
    if not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
        _fail(spec, f"the name must start with a letter and use letters, digits, _ . -, "
                    f"got {name!r}")
    fields = _split_fields(body)
    positional = [f for f in fields if "=" not in f]
    options = [f for f in fields if "=" in f]
    if len(positional) != 6:
        _fail(spec, f"expected 6 comma-separated numbers before the options, got "
                    f"{len(positional)}")
    c = _parse_int(positional[0], "C (input channels)", spec, 1)
    h, w = _parse_pair(positional[1], "H (input size)", spec, 1)
    oc = _parse_int(positional[2], "OC (output channels)", spec, 1)
    kh, kw = _parse_pair(positional[3], "KHxKW (kernel)", spec, 1)
    stride = _parse_pair(positional[4], "stride", spec, 1)
    padding = _parse_pair(positional[5], "pad", spec, 0)
    extra = {"groups": 1, "dilation": (1, 1)}
    for option in options:
        key, _, value = (s.strip() for s in option.partition("="))
        if key == "groups":
            extra["groups"] = _parse_int(value, "groups", spec, 1)
        elif key == "dilation":
            extra["dilation"] = _parse_pair(value, "dilation", spec, 1)
        else:
            _fail(spec, f"unknown option {key!r} (known: groups, dilation)")
    layer = Layer(name, c, h, w, oc, kh, kw, stride, padding, extra["groups"],
                  extra["dilation"])
    _check_geometry(layer, spec)
    return layer


def _check_geometry(layer, spec):
    if layer.c % layer.groups or layer.oc % layer.groups:
        _fail(spec, f"groups={layer.groups} must divide both C={layer.c} and OC={layer.oc}")
    if min(layer.out_hw) < 1:
        _fail(spec, f"the kernel (dilated) does not fit in the padded {layer.h}x{layer.w} input: "
                    f"the output would be {layer.out_hw[0]}x{layer.out_hw[1]}")


SUITE_SPECS = (
    "stem7x7:3,224,64,7x7,2,3",
    "r3x3_56:64,56,64,3x3,1,1",
    "r3x3_28:128,28,128,3x3,1,1",
    "r3x3_14:256,14,256,3x3,1,1",
    "r3x3_7:512,7,512,3x3,1,1",
    "r3x3_s2:128,56,128,3x3,2,1",
    "pw1x1_56:256,56,64,1x1,1,0",
    "vgg3x3_224:64,224,64,3x3,1,1",
    "k5x5_28:32,28,64,5x5,1,2",
    "k1x7_17:128,17,128,1x7,1,(0,3)",
    "dw3x3_56:128,56,128,3x3,1,1,groups=128",
    "dil3x3_28:256,28,256,3x3,1,2,dilation=2",
)
SUITE = tuple(parse_layer_spec(s) for s in SUITE_SPECS)

# --smoke: the suite's kinds of layer (strided, grouped, dilated, rectangular), tiny; the
# GEMM study runs 1x1 convolutions.
SMOKE_SPECS = (
    "tiny3x3:8,10,16,3x3,1,1",
    "tiny_s2:8,11,8,3x3,2,1",
    "tiny_dw:8,8,8,3x3,1,1,groups=8",
    "tiny_dil1x3:8,9,8,1x3,1,(0,2),dilation=2",
)
SMOKE_SUITE = tuple(parse_layer_spec(s) for s in SMOKE_SPECS)


def read_layer_file(path):
    """Layer specs from a text file: one per line; blank lines and '#' comments ignored."""
    layers = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                layers.append(parse_layer_spec(text))
            except LayerSpecError as exc:
                raise LayerSpecError(f"{path}:{number}: {exc}") from None
    return layers


def select_layers(available, names):
    """The layers named in a comma-separated list (in that order), or all of them for None."""
    if not names:
        return list(available)
    by_name = {layer.name: layer for layer in available}
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in by_name:
            raise LayerSpecError(f"unknown layer {name!r}; known layers: "
                                 f"{', '.join(by_name)}")
        chosen.append(by_name[name])
    return chosen


def merge_layers(base, extra):
    """base + extra; a user layer with a suite layer's name is an error, not a silent override."""
    names = {layer.name for layer in base}
    for layer in extra:
        if layer.name in names:
            raise LayerSpecError(f"layer name {layer.name!r} is used twice")
        names.add(layer.name)
    return list(base) + list(extra)
