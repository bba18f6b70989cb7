"""What is timed: the data of one case, the contenders, and the thread settings.

A *contender* makes a *runner* for a case: everything the call needs is built there, outside
the timed region, and ``runner()`` is the timed call. The contenders:

* im2row's one-shot call, ``conv2d NCHW`` / ``conv2d NHWC``: ``im2row.conv2d(x, w, b, ...,
  out=out, num_threads=t)``, which packs the weights on every call (what a new user calls);
* an im2row plan, ``plan NCHW`` / ``plan NHWC``: an ``im2row.Conv2d`` built once, then called
  with ``out=`` (``plan <method> <layout>`` for a method other than "auto", --methods);
* the baseline, ``numpy im2col NCHW``: im2row's "im2col" method, a column matrix times the
  weights by NumPy's matmul (OpenBLAS);
* the peers, ``torch NCHW`` / ``torch channels_last`` (torch.nn.functional.conv2d) and
  ``onnxruntime NCHW`` (a one-node Conv model in an ONNX Runtime session). Every ratio is
  taken against the fastest peer of the case.
"""
import math
import tracemalloc
from contextlib import contextmanager

import numpy as np

import im2row

# "auto" is what users get by default: "i2r" or "im2row" chosen per layer (NumPy without the
# extension)
IM2ROW_METHODS = ("auto", "i2r", "im2row", "blocked", "im2col", "numpy")
COMPILED = ("i2r", "im2row", "blocked")
LAYOUTS = ("NHWC", "NCHW")
APIS = ("conv2d", "plan")       # im2row.conv2d per call, an im2row.Conv2d plan
BASELINE = ("im2col", "NCHW")   # (method, layout) of the NumPy im2col + matmul baseline
PEER_KINDS = ("torch", "onnxruntime")
ONNX_OPSET = 17
ONNX_IR_VERSION = 8             # what opset 17 needs; ONNX Runtime >= 1.10 loads it
CHECK_SAMPLES = 2048        # output elements checked against a float64 reference
CHECK_TOLERANCE = 1e-3      # max |error| / max |reference|


class Case:
    """One layer at one batch size: random float32 input, weights and bias in both layouts.

    Arrays are made on first use, so a large case only holds the layouts it runs. Contenders
    of the same layout share one output buffer (they run one after the other).
    """

    def __init__(self, layer, n, bias=True, seed=0):
        self.layer, self.n = layer, n
        self.rng = np.random.default_rng(seed)
        fan_in = layer.c // layer.groups * layer.kh * layer.kw
        self._weight_nchw = self.rng.standard_normal(layer.weight_shape("NCHW"),
                                                     dtype=np.float32)
        self._weight_nchw *= np.float32(1 / math.sqrt(fan_in))
        self.bias = self.rng.standard_normal(layer.oc, dtype=np.float32) if bias else None
        self._x, self._out, self._weight_hwio = {}, {}, None
        self._check_index = None
        self._reference = None

    @property
    def flops(self):
        return self.layer.flops(self.n)

    @property
    def input_bytes(self):
        return 4 * math.prod(self.layer.input_shape(self.n, "NCHW"))

    @property
    def output_bytes(self):
        return 4 * math.prod(self.layer.output_shape(self.n, "NCHW"))

    def x(self, layout):
        """The input in a layout (C-contiguous); both layouts hold the same values."""
        if layout not in self._x:
            other = "NCHW" if layout == "NHWC" else "NHWC"
            if other in self._x:
                order = (0, 2, 3, 1) if layout == "NHWC" else (0, 3, 1, 2)
                self._x[layout] = np.ascontiguousarray(self._x[other].transpose(order))
            else:
                self._x[layout] = self.rng.standard_normal(
                    self.layer.input_shape(self.n, layout), dtype=np.float32)
        return self._x[layout]

    def weight(self, layout):
        """(OC, C/g, KH, KW) for NCHW, (KH, KW, C/g, OC) for NHWC."""
        if layout == "NCHW":
            return self._weight_nchw
        if self._weight_hwio is None:
            self._weight_hwio = np.ascontiguousarray(self._weight_nchw.transpose(2, 3, 1, 0))
        return self._weight_hwio

    def out_buffer(self, layout):
        """The shared output of a layout, NaN-filled when made: its pages are touched before
        any contender runs (so the first one does not pay their page faults), and an element
        a contender fails to write shows in the check."""
        if layout not in self._out:
            self._out[layout] = np.full(self.layer.output_shape(self.n, layout), np.nan,
                                        np.float32)
        return self._out[layout]

    def x_nchw_view(self):
        """The input as an (N, C, H, W) array (a view if only NHWC exists)."""
        if "NCHW" in self._x:
            return self._x["NCHW"]
        return self.x("NHWC").transpose(0, 3, 1, 2)

    def check(self, result_nchw):
        """max |result - reference| / max |reference| over sampled output elements, where the
        reference is computed here in float64 from the definition of the convolution."""
        if self._reference is None:
            self._check_index = self._sample_index()
            self._reference = reference_outputs(self, self._check_index)
        got = result_nchw[self._check_index].astype(np.float64)
        if not np.isfinite(got).all():       # NaN: an element was not written
            return math.inf
        scale = max(float(np.abs(self._reference).max()), 1e-30)
        return float(np.abs(got - self._reference).max()) / scale

    def poison_outputs(self):
        """Refill the shared outputs with NaN, so the next contender's result is its own."""
        for out in self._out.values():
            out.fill(np.nan)

    def _sample_index(self):
        shape = self.layer.output_shape(self.n, "NCHW")
        total = math.prod(shape)
        flat = (np.arange(total) if total <= CHECK_SAMPLES
                else self.rng.choice(total, CHECK_SAMPLES, replace=False))
        return np.unravel_index(flat, shape)


def reference_outputs(case, index, chunk=256):
    """float64 convolution outputs at the (n, oc, oh, ow) positions in ``index``."""
    parts = [_reference_chunk(case, tuple(np.asarray(i)[s:s + chunk] for i in index))
             for s in range(0, len(index[0]), chunk)]
    return np.concatenate(parts)


def _reference_chunk(case, index):
    layer = case.layer
    n, oc, oh, ow = index
    cg = layer.c // layer.groups
    group = oc // (layer.oc // layer.groups)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    ih = oh[:, None] * sh - ph + np.arange(layer.kh)[None, :] * dh          # (S, KH)
    iw = ow[:, None] * sw - pw + np.arange(layer.kw)[None, :] * dw          # (S, KW)
    ch = group[:, None] * cg + np.arange(cg)[None, :]                       # (S, Cg)
    valid = (((ih >= 0) & (ih < layer.h))[:, None, :, None]
             & ((iw >= 0) & (iw < layer.w))[:, None, None, :])
    taps = case.x_nchw_view()[n[:, None, None, None], ch[:, :, None, None],
                              np.clip(ih, 0, layer.h - 1)[:, None, :, None],
                              np.clip(iw, 0, layer.w - 1)[:, None, None, :]]
    w = case.weight("NCHW")[oc]                                             # (S, Cg, KH, KW)
    result = np.einsum("scij,scij->s", np.where(valid, taps, 0).astype(np.float64),
                       w.astype(np.float64))
    if case.bias is not None:
        result += case.bias[oc]
    return result


def nchw_view(array, layout):
    """An (N, C, H, W)-indexed view of a 4-D result in either layout."""
    return array if layout == "NCHW" else array.transpose(0, 3, 1, 2)


# --- runners: one timed call each -------------------------------------------------------------

class Im2rowRunner:
    """A call of an im2row.Conv2d plan built once, writing into a preallocated output."""
    api = "plan"

    def __init__(self, method, layout, case, threads):
        layer = case.layer
        self.method, self.layout, self.threads = method, layout, threads
        self.plan = im2row.Conv2d(case.weight(layout), case.bias, layout=layout, method=method,
                                  **layer.conv_kwargs())
        self.x, self.out = case.x(layout), case.out_buffer(layout)

    def __call__(self):
        self.plan(self.x, out=self.out, num_threads=self.threads)

    def first_call(self, measure_memory):
        """The first, untimed-for-results call; returns its memory use if asked, else None."""
        if not measure_memory:
            self()
            return None
        return self._measure_call()

    def take_result_nchw(self):
        return nchw_view(self.out, self.layout)

    def _measure_call(self):
        """One call that also measures its scratch memory: the extension's own accounting for
        the compiled methods, the tracemalloc peak (NumPy's allocations) for the others."""
        if self.method in COMPILED or self.method == "auto":
            _, info = self.plan.measure(self.x, out=self.out, num_threads=self.threads)
            if "workspace" in info:    # it ran compiled kernels
                return {"peak": info["workspace"], "copied": info["copied"],
                        "source": "extension", "threads": info["threads"]}
        tracemalloc.start()
        try:
            self()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return {"peak": peak, "copied": None, "source": "tracemalloc", "threads": None}


class Conv2dCallRunner:
    """One im2row.conv2d call (the plan built and the weights packed inside every call),
    writing into a preallocated output. Its memory is the plan's: not measured again."""
    api = "conv2d"

    def __init__(self, method, layout, case, threads):
        self.layout = layout
        self.x, self.weight, self.bias = case.x(layout), case.weight(layout), case.bias
        self.out = case.out_buffer(layout)
        self.kwargs = dict(case.layer.conv_kwargs(), layout=layout, method=method,
                           out=self.out, num_threads=threads)

    def __call__(self):
        im2row.conv2d(self.x, self.weight, self.bias, **self.kwargs)

    def first_call(self, measure_memory):
        self()
        return None

    def take_result_nchw(self):
        return nchw_view(self.out, self.layout)


def onnx_conv_model(onnx, layer, n, weight, bias):
    """A one-node ONNX model: Conv of an (n, C, H, W) float32 input "x" to "y", the weights
    (OC, C/g, KH, KW) and bias as initializers, the layer's strides, pads, dilations, group."""
    helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    (ph, pw), oshape = layer.padding, layer.output_shape(n, "NCHW")
    inputs, initializers = ["x", "w"], [numpy_helper.from_array(weight, "w")]
    if bias is not None:
        inputs.append("b")
        initializers.append(numpy_helper.from_array(bias, "b"))
    node = helper.make_node("Conv", inputs, ["y"], kernel_shape=[layer.kh, layer.kw],
                            strides=list(layer.stride), pads=[ph, pw, ph, pw],
                            dilations=list(layer.dilation), group=layer.groups)
    graph = helper.make_graph(
        [node], layer.name, [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, list(layer.input_shape(n, "NCHW")))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(oshape))], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="im2row-bench")
    model.ir_version = ONNX_IR_VERSION
    return model


def onnx_session(ort, model_bytes, threads):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, every
    graph optimisation on (ORT_ENABLE_ALL: its NCHWc layout transformation included).

    Its workers do not spin between runs: a spinning ONNX Runtime pool keeps a core busy after
    each run and slows whatever is timed next in the round. Measured on a 2-core EPYC at 2
    threads (3x3 64->64, 56x56, interleaved rounds): im2row.conv2d 2.6-2.9 ms with a spinning
    session in the rounds, 1.36-1.43 ms without it or with a non-spinning one, whose own time
    was the same (1.50 vs 1.53 ms)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3          # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """session.run_with_iobinding on the case's NCHW input, into a preallocated output bound
    once (no allocation and no Python-side conversion per call)."""

    def __init__(self, ort, onnx, case, threads):
        model = onnx_conv_model(onnx, case.layer, case.n, case.weight("NCHW"), case.bias)
        self.session = onnx_session(ort, model.SerializeToString(), threads)
        self.x, self.out = case.x("NCHW"), case.out_buffer("NCHW")
        self.binding = self.session.io_binding()
        self.binding.bind_cpu_input("x", self.x)
        self.binding.bind_output("y", "cpu", 0, np.float32, list(self.out.shape),
                                 self.out.ctypes.data)

    def __call__(self):
        self.session.run_with_iobinding(self.binding)

    def first_call(self, measure_memory):
        """ONNX Runtime's memory is not measured (its allocations are outside tracemalloc)."""
        self()
        return None

    def take_result_nchw(self):
        return self.out


class TorchRunner:
    """torch.nn.functional.conv2d on tensors sharing the case's memory (no copy for NCHW and
    channels_last). PyTorch allocates its output on every call: it has no out= here."""

    def __init__(self, torch, memory_format, case):
        layer = case.layer
        self.torch = torch
        if memory_format == "channels_last":
            # an NHWC array seen as (N, C, H, W) is exactly a channels_last tensor
            self.x = torch.from_numpy(case.x("NHWC")).permute(0, 3, 1, 2)
            self.weight = torch.from_numpy(case.weight("NCHW")).contiguous(
                memory_format=torch.channels_last)
        else:
            self.x = torch.from_numpy(case.x("NCHW"))
            self.weight = torch.from_numpy(case.weight("NCHW"))
        self.bias = None if case.bias is None else torch.from_numpy(case.bias)
        self.kwargs = layer.conv_kwargs()
        self.conv2d = torch.nn.functional.conv2d
        self.last = None

    def __call__(self):
        self.conv2d(self.x, self.weight, self.bias, **self.kwargs)   # result freed at once

    def first_call(self, measure_memory):
        """Keeps the result for the check; PyTorch's memory is not measured (its allocations
        are outside tracemalloc)."""
        self.last = self.conv2d(self.x, self.weight, self.bias, **self.kwargs)
        return None

    def take_result_nchw(self):
        result, self.last = self.last, None      # do not hold a large output during the rounds
        return result.numpy()


class MatmulRunner:
    """numpy float32 matmul a @ b into a preallocated c (the SGEMM probe, and the reference
    side of the GEMM study). ``result_nchw``, if given, returns c seen as a convolution."""

    def __init__(self, a, b, out, result_nchw=None):
        self.a, self.b, self.out = a, b, out
        self._result_nchw = result_nchw

    def __call__(self):
        np.matmul(self.a, self.b, out=self.out)

    def first_call(self, measure_memory):
        self()
        return None

    def take_result_nchw(self):
        return self._result_nchw() if self._result_nchw else None


def sgemm_probe(size, seed=1):
    """The machine's SGEMM rate probe: a size^3 float32 matmul (2*size^3 flops)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return MatmulRunner(a, b, np.empty((size, size), np.float32))


# --- contenders -------------------------------------------------------------------------------

class Im2rowContender:
    """im2row in one layout: ``api`` "plan" (an im2row.Conv2d built once) or "conv2d" (the
    one-shot im2row.conv2d). Named 'plan NHWC', 'conv2d NCHW', 'plan i2r NHWC', and the
    baseline 'numpy im2col NCHW'."""
    kind = "im2row"

    def __init__(self, method, layout, api="plan"):
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        self.method, self.layout, self.api = method, layout, api
        self.baseline = (method, layout) == BASELINE and api == "plan"
        if self.baseline:
            self.name = f"numpy {method} {layout}"
        else:
            self.name = f"{api} {layout}" if method == "auto" else f"{api} {method} {layout}"

    def runner(self, case, threads):
        runner_class = Im2rowRunner if self.api == "plan" else Conv2dCallRunner
        return runner_class(self.method, self.layout, case, threads)

    def predicted_memory(self, case, threads):
        """im2row.workspace_bytes for this case (computed, nothing allocated)."""
        layer = case.layer
        return im2row.workspace_bytes(layer.input_shape(case.n, self.layout),
                                      layer.weight_shape(self.layout), layout=self.layout,
                                      method=self.method, num_threads=threads,
                                      **layer.conv_kwargs())


class OnnxContender:
    """ONNX Runtime (CPU provider) running a one-node Conv model, NCHW."""
    kind = "onnxruntime"
    layout = "NCHW"
    name = "onnxruntime NCHW"

    def __init__(self, ort, onnx):
        self.ort, self.onnx = ort, onnx

    def runner(self, case, threads):
        return OnnxRunner(self.ort, self.onnx, case, threads)

    def predicted_memory(self, case, threads):
        return None


class TorchContender:
    kind = "torch"

    def __init__(self, torch, memory_format):
        self.torch, self.memory_format = torch, memory_format
        self.layout = "NHWC" if memory_format == "channels_last" else "NCHW"
        self.name = f"torch {memory_format}"

    def runner(self, case, threads):
        return TorchRunner(self.torch, self.memory_format, case)

    def predicted_memory(self, case, threads):
        return None


class MatmulContender:
    """The GEMM that a 1x1 stride-1 NHWC convolution is, (N*H*W, C) @ (C, OC), done by numpy
    matmul (OpenBLAS) into a preallocated output: the GEMM study's reference."""
    kind = "numpy"
    layout = "NHWC"
    name = "numpy matmul"

    def runner(self, case, threads):
        layer = case.layer
        if (layer.kh, layer.kw, layer.stride, layer.padding, layer.groups) != (1, 1, (1, 1),
                                                                                (0, 0), 1):
            raise ValueError(f"{layer.name} is not a 1x1 stride-1 convolution")
        m = case.n * layer.h * layer.w
        out = case.out_buffer("NHWC")
        return MatmulRunner(case.x("NHWC").reshape(m, layer.c),
                            case.weight("NHWC").reshape(layer.c, layer.oc),
                            out.reshape(m, layer.oc), lambda: nchw_view(out, "NHWC"))

    def predicted_memory(self, case, threads):
        return None


def im2row_contenders(methods=IM2ROW_METHODS, layouts=LAYOUTS, apis=("plan",)):
    """im2row's contenders: every (api, method, layout), the compiled methods only if the
    extension is there."""
    compiled = im2row.backend_info()["compiled"]
    return [Im2rowContender(m, lay, api) for api in apis for m in methods for lay in layouts
            if compiled or m not in COMPILED]


def suite_im2row_contenders(extra_methods=(), layouts=LAYOUTS, baseline=True):
    """The layer suite's: conv2d and plan ("auto") in both layouts, plans of
    ``extra_methods``, and the NumPy im2col + matmul baseline."""
    contenders = im2row_contenders(("auto",), layouts, APIS)
    contenders += im2row_contenders([m for m in extra_methods if m != "auto"], layouts)
    if baseline and not any(c.baseline for c in contenders):
        contenders.append(Im2rowContender(*BASELINE))
    return contenders


def onnx_contenders(loaded):
    """[the ONNX Runtime contender], or [] if ``loaded`` (from load_onnxruntime) is None."""
    return [] if loaded is None else [OnnxContender(*loaded)]


def load_onnxruntime():
    """((onnxruntime, onnx) or None, a note saying why not)."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        return None, (f"ONNX Runtime is not available ({exc.name or exc} missing): its contender "
                      f"is skipped (pip install .[bench])")
    except Exception as exc:   # a broken install must not stop the benchmark
        return None, f"ONNX Runtime failed to import ({exc!r}): its contender is skipped"
    if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
        return None, "ONNX Runtime has no CPUExecutionProvider: its contender is skipped"
    return (onnxruntime, onnx), None


def torch_contenders(torch, formats=("NCHW", "channels_last")):
    return [] if torch is None else [TorchContender(torch, f) for f in formats]


def load_torch():
    """(torch module or None, a note saying why not)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed: its contenders are skipped (pip install .[bench])"
    except Exception as exc:   # a broken install must not stop the benchmark
        return None, f"PyTorch failed to import ({exc!r}): its contenders are skipped"
    return torch, None


# --- threads ----------------------------------------------------------------------------------

class ThreadControl:
    """Sets every library's thread count for one case: OpenBLAS (numpy's matmul, so the
    "im2col"/"numpy" methods and the SGEMM probe) through threadpoolctl.threadpool_limits,
    PyTorch through torch.set_num_threads; the compiled methods get num_threads= per call."""

    def __init__(self, torch):
        self.torch = torch
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            threadpool_limits = None
        self.threadpool_limits = threadpool_limits

    @property
    def blas_controlled(self):
        return self.threadpool_limits is not None

    @contextmanager
    def use(self, threads):
        previous = self.torch.get_num_threads() if self.torch else None
        if self.torch:
            self.torch.set_num_threads(threads)
        try:
            if self.threadpool_limits is None:
                yield
            else:
                with self.threadpool_limits(limits=threads, user_api="blas"):
                    yield
        finally:
            if self.torch:
                self.torch.set_num_threads(previous)
