"""Smoke test of the benchmark tool, bench/run.py: a tiny run of every study, in seconds.

Checks that every contender produced numbers, that the whole networks ran and agreed, that the
headline is printed and saved, that the saved JSON round-trips (--load renders the same
tables, --compare of a run against itself gives ratios of 1), and that the layer-spec parser
refuses bad specs with a clear message. Timings themselves are never asserted. The bench's
pieces are unit-tested in test_bench_parts.py.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"
RUN = BENCH / "run.py"

pytestmark = pytest.mark.skipif(not RUN.is_file(),
                                reason="bench/ is not next to the tests")

IM2ROW_CONTENDERS = {f"{api} {lay}" for api in ("conv2d", "plan") for lay in ("NCHW", "NHWC")}
BASELINE = "numpy im2col NCHW"
TORCH_CONTENDERS = {"torch NCHW", "torch channels_last"}
ONNX_CONTENDERS = {"onnxruntime NCHW"}
NETWORK_VARIANTS = {"conv2d NCHW", "conv2d NHWC", "plan NCHW", "plan NHWC"}
TORCH_VARIANTS = {"torch F NCHW", "torch F channels_last", "torch.nn NCHW",
                  "torch.nn channels_last"}


def run_bench(*args, timeout=180):
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One --smoke run (suite, scaling and GEMM studies on tiny layers), saved as JSON."""
    path = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = run_bench("--smoke", "--quiet", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    with open(path) as f:
        return path, json.load(f), proc.stdout


def expected_contenders(run):
    """conv2d and plan ("auto" is NumPy without the extension), the baseline, the peers."""
    names = IM2ROW_CONTENDERS | {BASELINE}
    if run["machine"]["versions"]["torch"]:
        names |= TORCH_CONTENDERS
    if run["machine"]["onnx_note"] is None:
        names |= ONNX_CONTENDERS
    return names


def has_numbers(entry, rounds):
    times = entry["times_s"]
    return (len(times) == rounds and all(math.isfinite(t) and t > 0 for t in times)
            and entry["median_s"] > 0)


def test_every_contender_produced_numbers(smoke):
    _, run, _ = smoke
    suite = [b for b in run["blocks"] if b["study"] == "suite"]
    assert len(suite) == (len(run["config"]["layers"]) * len(run["config"]["batches"])
                          * len(run["config"]["threads"]))
    for block in suite:
        assert set(block["contenders"]) == expected_contenders(run), block["label"]
        for name, entry in block["contenders"].items():
            assert entry["skipped"] is None, (block["label"], name, entry["skipped"])
            assert has_numbers(entry, block["rounds"]), (block["label"], name)
            assert entry["check_error"] < 1e-3, (block["label"], name)
        assert has_numbers(block["sgemm"], block["rounds"])


def test_suite_records_memory_once_per_case(smoke):
    _, run, _ = smoke
    most = max(run["config"]["threads"])
    for block in run["blocks"]:
        if block["study"] == "suite" and block["threads"] == most:
            for entry in block["contenders"].values():
                if entry["kind"] == "im2row":
                    assert entry["predicted"]["workspace"] >= 0
                if entry["api"] == "plan":      # a conv2d call uses what its plan does
                    assert entry["memory"]["peak"] >= 0


def test_scaling_and_gemm_studies_ran(smoke):
    _, run, stdout = smoke
    scaling = [b for b in run["blocks"] if b["study"] == "scaling"]
    assert scaling
    for block in scaling:
        for name, entry in block["contenders"].items():
            if entry["skipped"]:
                assert entry["skipped"].startswith("would need"), entry["skipped"]
            else:
                assert has_numbers(entry, block["rounds"]), (block["label"], name)
    assert any(e["skipped"] for b in scaling for e in b["contenders"].values()), \
        "the smoke budget should make the scaling study refuse something"
    gemm = [b for b in run["blocks"] if b["study"] == "gemm"]
    assert gemm and all(has_numbers(b["contenders"]["numpy matmul"], b["rounds"]) for b in gemm)
    for section in ("## Layer suite", "## Memory", "## Scaling", "## GEMM alone", "## Network",
                    "## Headline"):
        assert section in stdout
    assert stdout.rindex("## Headline") > stdout.rindex("## Network")   # the headline ends it


def test_networks_ran_and_agree(smoke):
    _, run, _ = smoke
    records = run["networks"]
    assert {r["label"] for r in records} == {"resnet50", "mobilenet_v2"}
    expected = NETWORK_VARIANTS | (TORCH_VARIANTS if run["machine"]["versions"]["torch"]
                                   else set())
    for record in records:
        assert set(record["variants"]) == expected, record["label"]
        for name, v in record["variants"].items():
            assert v["skipped"] is None, (record["label"], name, v["skipped"])
            assert v["logit_error"] < 1e-3, (record["label"], name)
            assert has_numbers(v, record["rounds"]), (record["label"], name)


def test_headline_is_saved(smoke):
    _, run, stdout = smoke
    headline = run["headline"]
    cases = {(r["contender"], r["threads"], r["n"]) for r in headline["suite"]}
    if run["machine"]["versions"]["torch"] or run["machine"]["onnx_note"] is None:
        assert cases == {(name, t, n) for name in IM2ROW_CONTENDERS
                         for t in run["config"]["threads"] for n in run["config"]["batches"]}
    headline_text = stdout[stdout.rindex("## Headline"):]
    assert len(headline_text.splitlines()) <= 30
    fma = run["fma"]
    if fma["error"] is None:
        assert {p["threads"] for p in fma["peak"]} == set(run["config"]["threads"])
        assert "% peak" in stdout
    else:
        assert "% peak" not in stdout


def test_machine_description(smoke):
    _, run, _ = smoke
    machine = run["machine"]
    for key in ("cpu_model", "im2row_backend", "versions", "openblas_kernel", "date"):
        assert machine[key]
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:       # run.py must have removed it before numpy loaded
            assert machine["openblas_env_unset"][name] == os.environ[name]


def test_json_round_trips(smoke):
    path, run, stdout = smoke
    assert json.loads(json.dumps(run)) == run
    proc = run_bench("--load", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == stdout


def test_compare_with_itself_gives_ratio_one(smoke):
    path, _, _ = smoke
    proc = run_bench("--compare", str(path), str(path))
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| study")]
    assert rows
    assert {cells[-1].strip() for cells in rows} == {"1.000"}


def load_layers_module():
    spec = importlib.util.spec_from_file_location("bench_layers", BENCH / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spec, why", [
    ("r3x3:64,56,64,3x3,1,1,groups=3", "groups=3 must divide"),
    ("no_colon_64,56,64,3x3,1,1", "missing 'name:'"),
    ("short:64,56,64,3x3,1", "expected 6 comma-separated numbers"),
    ("zero:0,56,64,3x3,1,1", "C (input channels) must be >= 1"),
    ("kernel:64,56,64,3y3,1,1", "KHxKW (kernel) must be an int, AxB or (A,B)"),
    ("pad:64,56,64,3x3,1,-1", "pad must be an int, AxB or (A,B)"),
    ("stride:64,56,64,3x3,0,1", "stride must be >= 1"),
    ("big:64,4,64,7x7,1,0", "does not fit"),
    ("opt:64,56,64,3x3,1,1,stride=2", "unknown option 'stride'"),
    ("1bad:64,56,64,3x3,1,1", "the name must start with a letter"),
])
def test_layer_spec_parser_rejects_bad_specs(spec, why):
    layers = load_layers_module()
    with pytest.raises(ValueError) as info:
        layers.parse_layer_spec(spec)
    message = str(info.value)
    assert why in message
    assert layers.SPEC_FORM in message        # every error shows the expected form


def test_layer_spec_parser_and_suite():
    layers = load_layers_module()
    layer = layers.parse_layer_spec("k1x7:128,17,128,1x7,1,(0, 3)")
    assert (layer.kh, layer.kw, layer.padding, layer.out_hw) == (1, 7, (0, 3), (17, 17))
    dw = layers.parse_layer_spec("dw:128,56,128,3x3,1,1,groups=128,dilation=2")
    assert (dw.groups, dw.dilation, dw.out_hw) == (128, (2, 2), (54, 54))
    for suite_layer in layers.SUITE + layers.CLASSIC_SUITE:
        assert layers.parse_layer_spec(suite_layer.spec()) == suite_layer
    assert [x.name for x in layers.CLASSIC_SUITE] == [
        "stem7x7", "r3x3_56", "r3x3_28", "r3x3_14", "r3x3_7", "r3x3_s2", "pw1x1_56",
        "vgg3x3_224", "k5x5_28", "k1x7_17", "dw3x3_56", "dil3x3_28"]
    assert layers.SUITES["classic"] == layers.CLASSIC_SUITE
    assert layers.SUITE is layers.NETWORK_SUITE
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        layers.select_layers(layers.CLASSIC_SUITE, "r3x3_7,nope")


def test_command_line_refuses_a_bad_layer():
    proc = run_bench("--smoke", "--layer", "mine:64,56,64,3x3")
    assert proc.returncode == 2
    assert "bad layer spec 'mine:64,56,64,3x3'" in proc.stderr


def test_winograd_benchmark_smoke():
    """bench/winograd.py --smoke: the error table, the per-layer table with every Winograd
    contender timed and checked, ResNet-50's Winograd variants with agreeing logits."""
    proc = subprocess.run([sys.executable, str(BENCH / "winograd.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "## Error" in out and "## Headline" in out
    rows = [line for line in out.splitlines() if line.startswith("| tiny3x3")]
    assert len(rows) == 4, out   # two layers in the error table and in the timed table
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        times = cells[2:5]                      # the three Winograd contenders
        assert all(float(t) > 0 for t in times), line
        max_err, rms_err = float(cells[-3]), float(cells[-2])
        assert 0 < rms_err <= max_err < 1e-4, line
    net = [line for line in out.splitlines()
           if line.startswith(("| conv2d+winograd ", "| plan+winograd "))]
    assert len(net) == 3, out
    for line in net:
        assert float(line.strip("|").split("|")[-1]) < 1e-3, line   # logit error
