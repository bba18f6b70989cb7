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


# --- the classic suite: twelve layers, one per kind (--suite classic) ---------------------------

CLASSIC_SPECS = (
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
CLASSIC_SUITE = tuple(parse_layer_spec(s) for s in CLASSIC_SPECS)


# --- the network suite: every distinct convolution of real networks (the default) ------------
#
# ResNet-50, MobileNetV2, EfficientNet-B0 and VGG-16 at their standard 224x224 input, as in
# torchvision (ResNet-50 v1.5: the stride on the 3x3; EfficientNet's squeeze-and-excitation
# 1x1 convolutions on 1x1 maps are matrix-vector products and left out), then layers from
# UNet, YOLO, DeepLab, Inception-v3, AlexNet and super-resolution networks. A convolution is
# listed once, under the first network that has it (ALSO_IN names the others).

def conv(net, stage, c, h, oc, k, stride=1, padding=None, groups=1, dilation=1, w=None):
    """A network's convolution, named net_stage_KxK[sS][_dD][_dw]_C[_OC]_H[xW], e.g.
    rn50_l3_3x3_256_14. ``k`` is an int or (kh, kw); ``padding`` defaults to "same" for odd
    kernels (k // 2 * dilation), an int or (ph, pw)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    if padding is None:
        padding = (kh // 2 * dilation, kw // 2 * dilation)
    elif isinstance(padding, int):
        padding = (padding, padding)
    w = w or h
    name = f"{net}_{stage}_{kh}x{kw}"
    name += f"s{stride}" if stride > 1 else ""
    name += f"_d{dilation}" if dilation > 1 else ""
    depthwise = groups > 1 and groups == c == oc
    name += "_dw" if depthwise else f"_g{groups}" if groups > 1 else ""
    name += f"_{c}" + ("" if oc == c else f"_{oc}") + f"_{h}" + ("" if w == h else f"x{w}")
    layer = Layer(name, c, h, w, oc, kh, kw, (stride, stride), padding, groups,
                  (dilation, dilation))
    _check_geometry(layer, name)
    return layer


def resnet50_convs(size=224):
    """ResNet-50 v1.5: stem, then [3, 4, 6, 3] bottlenecks (1x1, 3x3 with the stride, 1x1,
    x4 expansion; a 1x1 strided projection on each stage's first block)."""
    h = size // 4                              # after the stride-2 stem and max pool
    yield conv("rn50", "stem", 3, size, 64, 7, stride=2)
    c = 64
    for stage, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                     (512, 3, 2)), 1):
        for b in range(blocks):
            s = stride if b == 0 else 1
            yield conv("rn50", f"l{stage}", c, h, width, 1)
            yield conv("rn50", f"l{stage}", width, h, width, 3, stride=s)
            if b == 0:
                yield conv("rn50", f"l{stage}", c, h, width * 4, 1, stride=s, padding=0)
            h = (h - 1) // s + 1
            yield conv("rn50", f"l{stage}", width, h, width * 4, 1)
            c = width * 4


def _inverted_residuals(net, size, stem_oc, settings, head_oc):
    """MobileNetV2 / EfficientNet-B0 bodies: stem 3x3 s2, then per stage (expansion t,
    kernel k, output channels, repeats, stride): 1x1 expansion (if t > 1), depthwise kxk
    (stride on the first repeat), 1x1 projection; then a 1x1 head."""
    h = (size - 1) // 2 + 1
    yield conv(net, "stem", 3, size, stem_oc, 3, stride=2)
    c = stem_oc
    for stage, (t, k, oc, repeats, stride) in enumerate(settings, 1):
        for r in range(repeats):
            s = stride if r == 0 else 1
            hidden = c * t
            if t != 1:
                yield conv(net, f"b{stage}", c, h, hidden, 1)
            yield conv(net, f"b{stage}", hidden, h, hidden, k, stride=s, groups=hidden)
            h = (h + 2 * (k // 2) - k) // s + 1
            yield conv(net, f"b{stage}", hidden, h, oc, 1)
            c = oc
    yield conv(net, "head", c, h, head_oc, 1)


def mobilenet_v2_convs(size=224):
    return _inverted_residuals("mnv2", size, 32, (
        (1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 3, 32, 3, 2), (6, 3, 64, 4, 2),
        (6, 3, 96, 3, 1), (6, 3, 160, 3, 2), (6, 3, 320, 1, 1)), 1280)


def efficientnet_b0_convs(size=224):
    return _inverted_residuals("effb0", size, 32, (
        (1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
        (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)), 1280)


def vgg16_convs(size=224):
    """VGG-16: 3x3 pad-1 convolutions in five blocks, a 2x2 max pool after each."""
    c, h = 3, size
    for block, (width, count) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
                                           1):
        for _ in range(count):
            yield conv("vgg16", f"b{block}", c, h, width, 3)
            c = width
        h //= 2


def other_network_convs():
    """Layer classes the four networks above lack, from other networks."""
    return [
        # UNet (Ronneberger et al.: unpadded 3x3 on a 572x572 tile), and a padded one at 256
        conv("unet", "e1", 1, 572, 64, 3, padding=0),
        conv("unet", "e1", 64, 570, 64, 3, padding=0),
        conv("unet", "e2", 64, 284, 128, 3, padding=0),
        conv("unet", "e2", 128, 282, 128, 3, padding=0),
        conv("unet", "pad", 64, 256, 64, 3),
        conv("unet", "pad", 128, 128, 128, 3),
        # YOLOv3-style (Darknet-53 at a 416x416 input): stem, 3x3/1x1 pairs and the heads at
        # 52, 26 and 13
        conv("yolo", "stem", 3, 416, 32, 3),
        conv("yolo", "p3", 128, 52, 256, 3),
        conv("yolo", "p3", 256, 52, 128, 1),
        conv("yolo", "p3", 256, 52, 255, 1),
        conv("yolo", "p4", 256, 26, 512, 3),
        conv("yolo", "p4", 512, 26, 256, 1),
        conv("yolo", "p5", 512, 13, 1024, 3),
        conv("yolo", "p5", 1024, 13, 512, 1),
        conv("yolo", "p5", 1024, 13, 255, 1),
        # DeepLab-style dilated 3x3 (a dilated backbone at output stride 8, ASPP branches)
        conv("dl", "os8", 128, 56, 128, 3, dilation=2),
        conv("dl", "os8", 256, 28, 256, 3, dilation=2),
        conv("dl", "os8", 512, 28, 512, 3, dilation=4),
        conv("dl", "aspp", 512, 28, 256, 3, dilation=6),
        conv("dl", "aspp", 512, 28, 256, 3, dilation=12),
        # Inception-v3 factorised 7x7 (Mixed_6b..6e, 17x17)
        conv("inc", "6b", 128, 17, 128, (1, 7)),
        conv("inc", "6b", 128, 17, 192, (7, 1)),
        conv("inc", "6b", 128, 17, 128, (7, 1)),
        conv("inc", "6b", 128, 17, 192, (1, 7)),
        conv("inc", "6c", 160, 17, 160, (1, 7)),
        conv("inc", "6c", 160, 17, 192, (7, 1)),
        conv("inc", "6e", 192, 17, 192, (1, 7)),
        conv("inc", "6e", 192, 17, 192, (7, 1)),
        # AlexNet (torchvision)
        conv("alex", "c1", 3, 224, 64, 11, stride=4, padding=2),
        conv("alex", "c2", 64, 27, 192, 5, padding=2),
        # super-resolution on wide maps: ESPCN (x3 to 1080p from 360x640), EDSR (its head and
        # 64-channel residual blocks on a 180x320 and a 270x480 input)
        conv("sr", "espcn", 1, 360, 64, 5, w=640),
        conv("sr", "espcn", 64, 360, 32, 3, w=640),
        conv("sr", "espcn", 32, 360, 9, 3, w=640),
        conv("sr", "edsr", 3, 180, 64, 3, w=320),
        conv("sr", "edsr", 64, 180, 64, 3, w=320),
        conv("sr", "edsr", 64, 270, 64, 3, w=480),
    ]


def geometry(layer):
    """Everything but the name: two layers with the same geometry are the same benchmark."""
    return (layer.c, layer.h, layer.w, layer.oc, layer.kh, layer.kw, layer.stride,
            layer.padding, layer.groups, layer.dilation)


def distinct(layers):
    """(the layers with each geometry once, first name kept; {kept name: [the others]})."""
    kept, also_in = {}, {}
    for layer in layers:
        key = geometry(layer)
        if key in kept:
            if layer.name != kept[key].name:
                also_in.setdefault(kept[key].name, [])
                if layer.name not in also_in[kept[key].name]:
                    also_in[kept[key].name].append(layer.name)
        else:
            kept[key] = layer
    return tuple(kept.values()), also_in


NETWORK_CONVS = {
    "rn50": tuple(resnet50_convs()),
    "mnv2": tuple(mobilenet_v2_convs()),
    "effb0": tuple(efficientnet_b0_convs()),
    "vgg16": tuple(vgg16_convs()),
}
NETWORK_SUITE, ALSO_IN = distinct([layer for convs in NETWORK_CONVS.values() for layer in convs]
                                  + other_network_convs())

# --quick: a sample with every layer class of the network suite
QUICK_NAMES = (
    "rn50_stem_7x7s2_3_64_224",      # stem, 3 input channels
    "mnv2_stem_3x3s2_3_32_224",      # 3x3 stem
    "rn50_l1_3x3_64_56",             # 3x3, shallow (64 channels)
    "rn50_l3_3x3_256_14",            # 3x3, deep
    "rn50_l4_3x3_512_7",             # 3x3, deepest, small map
    "rn50_l2_3x3s2_128_56",          # 3x3 stride 2
    "rn50_l1_1x1_256_64_56",         # 1x1 pointwise
    "mnv2_b2_1x1_24_144_56",         # 1x1 expansion, few input channels
    "mnv2_b2_3x3_dw_144_56",         # depthwise 3x3
    "mnv2_b3_3x3s2_dw_144_56",       # depthwise 3x3 stride 2
    "effb0_b3_5x5_dw_240_28",        # depthwise 5x5
    "dl_os8_3x3_d2_256_28",          # dilated
    "inc_6b_1x7_128_17",             # 1x7
    "inc_6b_7x1_128_192_17",         # 7x1
    "alex_c2_5x5_64_192_27",         # 5x5
    "alex_c1_11x11s4_3_64_224",      # 11x11 stride 4
    "sr_edsr_3x3_3_64_180x320",      # wide map, 3 input channels
    "unet_pad_3x3_64_256",           # wide map, 64 channels (N=8 is over --quick's size cap)
)

SUITES = {"nets": NETWORK_SUITE, "classic": CLASSIC_SUITE}
SUITE = NETWORK_SUITE


def all_named_layers():
    """Every suite's layers, each name once (for --layers)."""
    named = {}
    for suite in SUITES.values():
        for layer in suite:
            named.setdefault(layer.name, layer)
    return list(named.values())


def quick_layers(suite_name):
    """--quick's layers: QUICK_NAMES from the network suite; a smaller suite whole."""
    if suite_name != "nets":
        return list(SUITES[suite_name])
    return select_layers(NETWORK_SUITE, ",".join(QUICK_NAMES))


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
