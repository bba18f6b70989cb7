"""Unit tests of the benchmark's pieces (bench/): the layer suites, the ONNX Runtime peer, the
whole networks' BatchNorm folding, the headline's arithmetic, the run budget and the FMA probe.

Fast and timing-free: nothing here measures or asserts a speed. Expected values are computed
here independently (by hand or from published FLOP counts), not by the code under test.
"""
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parents[1] / "bench"
if not (BENCH / "run.py").is_file():
    pytest.skip("bench/ is not next to the tests", allow_module_level=True)
sys.path.insert(0, str(BENCH))

import contenders  # noqa: E402
import fma  # noqa: E402
import headline  # noqa: E402
import layers  # noqa: E402
import networks  # noqa: E402
from timing import RunBudget  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


# --- the layer suites ---------------------------------------------------------------------------

def test_network_suite_layers_are_valid_and_distinct():
    suite = layers.NETWORK_SUITE
    assert len(suite) >= 100
    assert len({layer.name for layer in suite}) == len(suite)
    assert len({layers.geometry(layer) for layer in suite}) == len(suite)
    for layer in suite:
        assert layers.parse_layer_spec(layer.spec()) == layer, layer.name
        assert min(layer.out_hw) >= 1
        assert layer.name.split("_")[0] in {"rn50", "mnv2", "effb0", "vgg16", "unet", "yolo",
                                            "dl", "inc", "alex", "sr"}
    # every network's convolution is in the suite, under its own or an earlier name
    geometries = {layers.geometry(layer) for layer in suite}
    for convs in layers.NETWORK_CONVS.values():
        assert {layers.geometry(layer) for layer in convs} <= geometries
    for kept, others in layers.ALSO_IN.items():
        assert kept in {layer.name for layer in suite} and others


@pytest.mark.parametrize("name, geometry, flops", [
    # (C, H, W, OC, KH, KW, stride, padding, groups, dilation), 2*OH*OW*OC*C/g*KH*KW by hand
    ("rn50_l3_3x3_256_14", (256, 14, 14, 256, 3, 3, (1, 1), (1, 1), 1, (1, 1)),
     2 * 14 * 14 * 256 * 256 * 9),
    ("rn50_stem_7x7s2_3_64_224", (3, 224, 224, 64, 7, 7, (2, 2), (3, 3), 1, (1, 1)),
     2 * 112 * 112 * 64 * 3 * 49),
    ("rn50_l2_1x1s2_256_512_56", (256, 56, 56, 512, 1, 1, (2, 2), (0, 0), 1, (1, 1)),
     2 * 28 * 28 * 512 * 256),
    ("mnv2_b2_3x3_dw_144_56", (144, 56, 56, 144, 3, 3, (1, 1), (1, 1), 144, (1, 1)),
     2 * 56 * 56 * 144 * 9),
    ("effb0_b6_5x5s2_dw_672_14", (672, 14, 14, 672, 5, 5, (2, 2), (2, 2), 672, (1, 1)),
     2 * 7 * 7 * 672 * 25),
    ("dl_aspp_3x3_d12_512_256_28", (512, 28, 28, 256, 3, 3, (1, 1), (12, 12), 1, (12, 12)),
     2 * 28 * 28 * 256 * 512 * 9),
    ("inc_6b_7x1_128_192_17", (128, 17, 17, 192, 7, 1, (1, 1), (3, 0), 1, (1, 1)),
     2 * 17 * 17 * 192 * 128 * 7),
    ("alex_c1_11x11s4_3_64_224", (3, 224, 224, 64, 11, 11, (4, 4), (2, 2), 1, (1, 1)),
     2 * 55 * 55 * 64 * 3 * 121),
    ("unet_e1_3x3_64_570", (64, 570, 570, 64, 3, 3, (1, 1), (0, 0), 1, (1, 1)),
     2 * 568 * 568 * 64 * 64 * 9),
    ("sr_espcn_5x5_1_64_360x640", (1, 360, 640, 64, 5, 5, (1, 1), (2, 2), 1, (1, 1)),
     2 * 360 * 640 * 64 * 25),
])
def test_suite_layer_geometry_and_flops(name, geometry, flops):
    layer = layers.select_layers(layers.NETWORK_SUITE, name)[0]
    assert layers.geometry(layer) == geometry
    assert layer.flops(1) == flops
    assert layer.flops(8) == 8 * flops


@pytest.mark.parametrize("net, macs", [
    # published multiply-accumulates of the convolutions at 224x224 (torchvision's totals
    # minus the final linear layer: ResNet-50 4.089G - 2.048M, MobileNetV2 300.8M - 1.28M,
    # VGG-16 15.47G - 123.6M)
    ("rn50", 4.089e9 - 2.048e6), ("mnv2", 300.8e6 - 1.28e6), ("vgg16", 15.47e9 - 123.6e6),
])
def test_network_conv_flops_match_published_counts(net, macs):
    total = sum(layer.flops(1) for layer in layers.NETWORK_CONVS[net])
    assert total == pytest.approx(2 * macs, rel=0.01)


def test_quick_sample_covers_every_layer_class():
    quick = layers.quick_layers("nets")
    assert [layer.name for layer in quick] == list(layers.QUICK_NAMES)
    classes = {
        "stem": lambda x: x.c <= 3 and x.stride[0] > 1,
        "1x1": lambda x: (x.kh, x.kw) == (1, 1),
        "3x3 shallow": lambda x: (x.kh, x.kw) == (3, 3) and x.groups == 1 and x.c <= 64,
        "3x3 deep": lambda x: (x.kh, x.kw) == (3, 3) and x.groups == 1 and x.c >= 256,
        "depthwise": lambda x: x.groups > 1 and x.groups == x.c,
        "dilated": lambda x: x.dilation != (1, 1),
        "1x7": lambda x: (x.kh, x.kw) == (1, 7),
        "7x1": lambda x: (x.kh, x.kw) == (7, 1),
        "5x5": lambda x: (x.kh, x.kw) == (5, 5) and x.groups == 1,
        "11x11": lambda x: (x.kh, x.kw) == (11, 11),
        "wide map": lambda x: x.h * x.w >= 256 * 256,
    }
    for what, test in classes.items():
        assert any(test(layer) for layer in quick), what
    assert layers.quick_layers("classic") == list(layers.CLASSIC_SUITE)


def test_networks_convolutions_are_in_the_suite():
    """bench/networks.py builds the networks on its own; their convolutions at 224x224 must
    be the suite's (the two descriptions of ResNet-50 and MobileNetV2 agree)."""
    geometries = {layers.geometry(layer) for layer in layers.NETWORK_SUITE}
    for build, prefix in ((networks.resnet50, "rn50"), (networks.mobilenet_v2, "mnv2")):
        net = build()
        found = []
        for c, h, w in net.conv_inputs(224):
            found.append((c.c, h, w, c.oc, c.k, c.k, (c.stride,) * 2, (c.padding,) * 2,
                          c.groups, (1, 1)))
        assert set(found) <= geometries
        assert len(found) == len(layers.NETWORK_CONVS[prefix])
        assert net.conv_flops(1, 224) == sum(x.flops(1) for x in layers.NETWORK_CONVS[prefix])


# --- the ONNX Runtime peer ------------------------------------------------------------------

def onnx_or_skip():
    loaded, note = contenders.load_onnxruntime()
    if loaded is None:
        pytest.skip(note)
    return loaded


@pytest.mark.parametrize("spec, bias", [
    ("t3x3:8,10,16,3x3,1,1", True),
    ("odd:8,11x9,12,3x2,2x1,1x2,groups=4,dilation=2x1", True),
    ("dw:6,9,6,5x5,2,2,groups=6", False),
])
def test_onnx_contender_matches_a_float64_reference(spec, bias):
    loaded = onnx_or_skip()
    case = contenders.Case(layers.parse_layer_spec(spec), 2, bias=bias)
    contender = contenders.onnx_contenders(loaded)[0]
    assert (contender.name, contender.kind) == ("onnxruntime NCHW", "onnxruntime")
    for threads in (1, 2):
        runner = contender.runner(case, threads)
        runner.first_call(False)
        assert case.check(runner.take_result_nchw()) < 1e-5


def test_onnx_model_carries_the_layer(spec="m:8,11x9,12,3x2,2x1,1x2,groups=4,dilation=2x1"):
    _, onnx = onnx_or_skip()
    layer = layers.parse_layer_spec(spec)
    case = contenders.Case(layer, 1)
    model = contenders.onnx_conv_model(onnx, layer, 1, case.weight("NCHW"), case.bias)
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes == {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 2, 1, 2],
                          "dilations": [2, 1], "group": 4}
    assert sorted(i.name for i in model.graph.initializer) == ["b", "w"]


def test_onnx_contender_skips_cleanly_without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import onnxruntime fails
    loaded, note = contenders.load_onnxruntime()
    assert loaded is None
    assert "ONNX Runtime is not available" in note and "skipped" in note
    assert contenders.onnx_contenders(loaded) == []


def test_suite_contender_names():
    names = [c.name for c in contenders.suite_im2row_contenders()]
    assert names == ["conv2d NHWC", "conv2d NCHW", "plan NHWC", "plan NCHW",
                     "numpy im2col NCHW"]
    names = [c.name for c in contenders.suite_im2row_contenders(["i2r", "im2col"])]
    assert "plan i2r NHWC" in names and "plan im2col NHWC" in names
    assert names.count("numpy im2col NCHW") == 1


def test_conv2d_contender_is_checked_like_the_others():
    case = contenders.Case(layers.parse_layer_spec("t:8,10,16,3x3,2,1,dilation=2"), 2)
    for contender in contenders.suite_im2row_contenders():
        runner = contender.runner(case, 1)
        runner.first_call(False)
        assert case.check(runner.take_result_nchw()) < 1e-5, contender.name


def test_an_unwritten_output_fails_the_check():
    case = contenders.Case(layers.parse_layer_spec("t:4,6,4,3x3,1,1"), 1)
    out = case.out_buffer("NCHW")
    assert np.isnan(out).all()                      # made NaN-filled
    assert case.check(out) == math.inf
    out[...] = 0
    case.poison_outputs()
    assert np.isnan(out).all()


# --- the whole networks ------------------------------------------------------------------------

class UnfoldedNumpyConv:
    """conv(c, x): im2row.conv2d with the raw weights, then BatchNorm and the activation in
    float64 NumPy, unfolded (NCHW)."""

    def __init__(self):
        self.glue = networks.Glue("NCHW")

    def __call__(self, c, x):
        import im2row
        y = im2row.conv2d(x.astype(np.float64), c.weight.astype(np.float64), **c.conv_kwargs())
        shape = (1, -1, 1, 1)
        y = ((y - c.mean.reshape(shape)) / np.sqrt(c.var.reshape(shape) + networks.BN_EPS)
             * c.gamma.reshape(shape) + c.beta.reshape(shape))
        if c.act == "relu":
            y = np.maximum(y, 0)
        elif c.act == "relu6":
            y = np.clip(y, 0, 6)
        return y


@pytest.mark.parametrize("name", networks.NETWORK_NAMES)
def test_folded_network_matches_unfolded_numpy(name):
    net = networks.BUILDERS[name](width=0.125)
    x = networks.network_input(2, 32)
    reference = networks.forward(net, x.astype(np.float64), UnfoldedNumpyConv(),
                                 networks.Glue("NCHW"))
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for executor in (networks.Im2rowCalls(net, layout, 1),
                         networks.Im2rowPlans(net, layout, 1)):
            logits = networks.forward(net, xl, executor, executor.glue)
            assert logits.shape == (2, networks.CLASSES)
            assert networks.logit_error(logits, reference) < 1e-4, (layout, executor)


@pytest.fixture
def torch_one_thread():
    """PyTorch on one thread (its thread pool on a busy 2-core machine is slow to start)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@needs_torch
@pytest.mark.parametrize("name", networks.NETWORK_NAMES)
def test_folded_network_matches_the_unfolded_torch_model(name, torch_one_thread):
    net = networks.BUILDERS[name](width=0.125)
    x = networks.network_input(2, 32)
    with torch.no_grad():
        reference = torch_module_logits(net, x)
        runs = networks.variants(net, x, 1, torch)
        assert set(runs) == {"conv2d NCHW", "conv2d NHWC", "plan NCHW", "plan NHWC",
                             "torch F NCHW", "torch F channels_last", "torch.nn NCHW",
                             "torch.nn channels_last"}
        for variant, (_, _, fn) in runs.items():
            assert networks.logit_error(fn(), reference) < 1e-4, variant


def torch_module_logits(net, x):
    """The unfolded torch.nn model in float64: BatchNorm2d applied as a separate layer."""
    model = networks.torch_module(torch, net).double()
    for module in model.modules():
        assert not isinstance(module, torch.nn.BatchNorm2d) or not module.training
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    return model(torch.from_numpy(x.astype(np.float64))).numpy()


def test_batchnorm_folding_by_hand():
    """One channel, numbers worked out by hand: w' = w * g / sqrt(v + eps), b' = beta - m *
    g / sqrt(v + eps)."""
    one = np.ones(1, np.float32)
    c = networks.ConvBN(0, 1, 1, 1, 1, 0, 1, None, weight=np.full((1, 1, 1, 1), 2, np.float32),
                        gamma=3 * one, beta=0.5 * one, mean=1.5 * one,
                        var=(4 - networks.BN_EPS) * one)
    weight, bias = c.folded()
    assert weight.item() == pytest.approx(2 * 3 / 2)
    assert bias.item() == pytest.approx(0.5 - 1.5 * 3 / 2)


def test_network_ratios_against_the_faster_torch_layout():
    record = {"variants": {
        "plan NHWC": {"kind": "plan", "median_s": 0.5},
        "conv2d NCHW": {"kind": "conv2d", "median_s": 2.0},
        "conv2d NHWC": {"kind": "conv2d", "median_s": None},      # did not run
        "torch F NCHW": {"kind": "torch_functional", "median_s": 1.5},
        "torch F channels_last": {"kind": "torch_functional", "median_s": 1.0},
        "torch.nn NCHW": {"kind": "torch_nn", "median_s": 3.0},
        "torch.nn channels_last": {"kind": "torch_nn", "median_s": None}}}
    assert networks.network_ratios(record) == {"plan NHWC": (2.0, 6.0),
                                               "conv2d NCHW": (0.5, 1.5),
                                               "conv2d NHWC": (None, None)}


# --- the headline ------------------------------------------------------------------------------

def entry(kind, seconds, method=None, api=None, baseline=False):
    return {"kind": kind, "median_s": seconds, "method": method, "api": api,
            "baseline": baseline, "skipped": None, "check_error": 0.0, "reps": 1}


def synthetic_block(label, n, threads, plan_s, conv2d_s, peers_s, kernel=3, c=64,
                    flops=1e9):
    torch_nchw, torch_cl, ort = peers_s
    layer = {"kh": kernel, "kw": kernel, "groups": 1, "c": c}
    return {"study": "suite", "label": label, "n": n, "threads": threads, "layer": layer,
            "flops": flops, "contenders": {
        "conv2d NHWC": entry("im2row", conv2d_s, "auto", "conv2d"),
        "plan NHWC": entry("im2row", plan_s, "auto", "plan"),
        "plan i2r NHWC": entry("im2row", 0.001, "i2r", "plan"),          # not in the headline
        "numpy im2col NCHW": entry("im2row", 0.001, "im2col", "plan", True),
        "torch NCHW": entry("torch", torch_nchw),
        "torch channels_last": entry("torch", torch_cl),
        "onnxruntime NCHW": entry("onnxruntime", ort)}}


def test_headline_geomean_and_worst_layer():
    blocks = [
        # label, N, threads, plan s, conv2d s, (torch NCHW, torch channels_last, ORT) s
        synthetic_block("a", 1, 1, 1.0, 4.0, (2.0, 3.0, 5.0)),      # fastest peer 2.0
        synthetic_block("b", 1, 1, 4.0, 2.0, (9.0, 1.0, 6.0)),      # 1.0
        synthetic_block("c", 1, 1, 2.0, 2.0, (8.0, 7.0, 3.0)),      # 3.0
        synthetic_block("a", 8, 1, 1.0, None, (4.0, 5.0, 6.0)),     # conv2d did not run
        synthetic_block("d", 1, 2, 1.0, 1.0, (None, None, None)),   # no peer: left out
        {"study": "scaling", "label": "x", "n": 1, "threads": 1,
         "contenders": {"plan NHWC": entry("im2row", 9.0, "auto", "plan"),
                        "torch NCHW": entry("torch", 1.0)}},        # not the suite
    ]
    rows, fastest = headline.suite_summary(blocks)
    by_key = {(r["contender"], r["threads"], r["n"]): r for r in rows}
    assert set(by_key) == {("plan NHWC", 1, 1), ("conv2d NHWC", 1, 1), ("plan NHWC", 1, 8)}

    plan = by_key[("plan NHWC", 1, 1)]          # ratios 2/1, 1/4, 3/2
    assert plan["geomean"] == pytest.approx(statistics.geometric_mean([2.0, 0.25, 1.5]))
    assert plan["geomean"] == pytest.approx(0.75 ** (1 / 3))
    assert plan["worst"] == {"label": "b", "ratio": 0.25}
    assert (plan["layers"], plan["below_095"]) == (3, 1)

    conv2d = by_key[("conv2d NHWC", 1, 1)]      # ratios 2/4, 1/2, 3/2
    assert conv2d["geomean"] == pytest.approx((0.5 * 0.5 * 1.5) ** (1 / 3))
    assert conv2d["worst"]["ratio"] == 0.5 and conv2d["worst"]["label"] in ("a", "b")
    assert conv2d["below_095"] == 2

    assert by_key[("plan NHWC", 1, 8)]["geomean"] == pytest.approx(4.0)
    assert fastest == {"torch NCHW": 2, "torch channels_last": 1, "onnxruntime NCHW": 1}


def test_headline_percent_of_peak_on_gemm_bound_layers():
    blocks = [
        # 1 GFLOP each; peak 100 GFLOP/s: plan at 20, 40, 25 ms -> 50%, 25%, 40%
        synthetic_block("a", 1, 1, 0.020, 0.1, (1, 1, 1)),
        synthetic_block("b", 8, 1, 0.040, 0.1, (1, 1, 1)),
        synthetic_block("c", 1, 1, 0.025, 0.1, (1, 1, 1)),
        synthetic_block("one", 1, 1, 0.001, 0.1, (1, 1, 1), kernel=1),    # 1x1: not counted
        synthetic_block("few", 1, 1, 0.001, 0.1, (1, 1, 1), c=3),         # C < 64: not counted
    ]
    rows = headline.peak_summary(blocks, {1: 100.0})
    plan = next(r for r in rows if r["contender"] == "plan NHWC")
    assert plan["layers"] == 3
    assert plan["median_pct"] == pytest.approx(40.0)
    assert plan["worst_pct"] == pytest.approx(25.0) and plan["worst_label"] == "b N=8"
    conv2d = next(r for r in rows if r["contender"] == "conv2d NHWC")
    assert conv2d["median_pct"] == pytest.approx(10.0)
    assert headline.peak_summary(blocks, {}) == []          # no FMA peak, no % of it


def test_headline_warns_when_the_cores_were_busy():
    assert headline.busy_cores([{"threads": 1, "gflops": 100.0},
                                {"threads": 2, "gflops": 190.0}]) == []
    (warning,) = headline.busy_cores([{"threads": 1, "gflops": 100.0},
                                      {"threads": 2, "gflops": 110.0}])
    assert "2 threads reached only 1.1x" in warning


def test_headline_renders_briefly():
    blocks = [synthetic_block(f"layer{i}", n, t, 1.0, 2.0, (1.5, 1.2, 1.1))
              for i in range(50) for n in (1, 8) for t in (1, 2)]
    for block in blocks:
        block["contenders"]["conv2d NCHW"] = entry("im2row", 3.0, "auto", "conv2d")
        block["contenders"]["plan NCHW"] = entry("im2row", 1.1, "auto", "plan")
    record = {"label": "resnet50", "n": 1, "threads": 1, "variants": {
        "plan NHWC": {"kind": "plan", "median_s": 0.5},
        "torch F NCHW": {"kind": "torch_functional", "median_s": 1.0},
        "torch.nn NCHW": {"kind": "torch_nn", "median_s": 2.0}}}
    fma_record = {"error": None, "rates": [{"isa": "avx2", "threads": 1, "gflops": 115.0}],
                  "peak": [{"threads": 1, "gflops": 115.0, "isa": "avx2"},
                           {"threads": 2, "gflops": 229.0, "isa": "avx2"}]}
    summary = headline.summarise({"blocks": blocks, "networks": [record], "fma": fma_record})
    lines = headline.render_headline(summary)
    assert len(lines) <= 27
    text = "\n".join(lines)
    assert "| plan NHWC | 1 | 1.10x (50, 0 < 0.95) |" in text
    assert "| resnet50 | 1 | 1 | 2.00x / 4.00x |" in text
    assert "avx2 115 GFLOP/s per core; 2 threads 229" in text


# --- the run budget ------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_run_budget_cuts_rounds_then_stops():
    clock = FakeClock()
    budget = RunBudget(100.0, cases=10, clock=clock)
    assert budget.allowance() == pytest.approx(3 * 100 / 10)
    assert budget.rounds(7, 1.0) == 7                 # 7 s fit in 30 s
    assert budget.rounds(7, 6.0) == 5                 # 30 s / 6 s
    assert budget.rounds(7, 100.0) == 3               # never fewer than 3
    assert budget.rounds(2, 100.0) == 2
    clock.now = 50.0
    budget.case_done()
    assert budget.allowance() == pytest.approx(3 * 50 / 9)
    assert not budget.expired
    clock.now = 100.0
    assert budget.expired
    unlimited = RunBudget(None, cases=10, clock=clock)
    assert unlimited.rounds(7, 1e9) == 7 and not unlimited.expired


# --- the FMA probe -------------------------------------------------------------------------------

def test_fma_supported_isas():
    assert fma.supported_isas({"avx512f", "avx2", "fma"}) == ["avx512", "avx2"]
    assert fma.supported_isas({"avx2", "fma"}) == ["avx2"]
    assert fma.supported_isas({"avx2"}) == []          # AVX2 without FMA: no loop
    record = fma.measure_peak([1], cpu_flags=[])
    assert record["error"] and record["peak"] == [] and fma.peak_gflops(record, 1) is None


def test_fma_probe_builds_and_runs():
    """Compiles (or finds cached) and calls each supported loop briefly: a finite checksum
    and the FLOP count per iteration. Nothing is timed."""
    with open("/proc/cpuinfo") as f:
        flags = {word for line in f if line.startswith("flags") for word in line.split()}
    isas = fma.supported_isas(flags)
    path, error = fma.build_probe()
    if error:
        pytest.skip(error)
    loops = fma.FmaLoops(path)
    assert loops.flops_per_iteration == {"avx512": 2 * 16 * 16, "avx2": 2 * 12 * 8}
    for isa in isas:
        assert math.isfinite(loops.run(isa, 100))
        assert loops.flops(isa, 100) == 100 * loops.flops_per_iteration[isa]


def test_without_a_compiler_the_percent_of_peak_columns_go(monkeypatch):
    import report
    monkeypatch.setattr(fma, "find_compiler", lambda: None)
    record = fma.measure_peak([1, 2], cpu_flags=["avx2", "fma"])
    assert "no C compiler found" in record["error"] and record["peak"] == []
    block = synthetic_block("a", 1, 1, 1.0, 2.0, (1.5, 1.2, 1.1))
    result = {"blocks": [block], "fma": record}
    lines = report.suite_section([block], report.peaks_by_threads(result))
    assert lines and not any("% peak" in line for line in lines)
    assert "no C compiler found" in fma.describe(record)
    assert "not measured" in "\n".join(headline.render_headline(headline.summarise(result)))
    with_peak = {"blocks": [block], "fma": {"peak": [{"threads": 1, "gflops": 100.0}]}}
    assert any("% peak" in line
               for line in report.suite_section([block], report.peaks_by_threads(with_peak)))


def test_fma_combine_keeps_the_best_rate():
    start = {"error": None, "rates": [{"isa": "avx2", "threads": 1, "gflops": 100.0},
                                      {"isa": "avx2", "threads": 2, "gflops": 150.0},
                                      {"isa": "avx512", "threads": 2, "gflops": 120.0}]}
    end = {"error": None, "rates": [{"isa": "avx2", "threads": 1, "gflops": 90.0},
                                    {"isa": "avx2", "threads": 2, "gflops": 140.0},
                                    {"isa": "avx512", "threads": 2, "gflops": 210.0}]}
    combined = fma.combine([start, end])
    assert combined["peak"] == [{"threads": 1, "gflops": 100.0, "isa": "avx2"},
                                {"threads": 2, "gflops": 210.0, "isa": "avx512"}]
    assert fma.peak_gflops(combined, 2) == 210.0
    assert len(combined["measurements"]) == 2
