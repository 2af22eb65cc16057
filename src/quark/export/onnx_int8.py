"""export=onnx_int8: the ONNX export (quark.export.onnx, same inputs and outputs) with its
matrix multiplications' weights in int8, activations quantized at run time, so no calibration
data is needed. Two schemes (export.precision):

    int8          ONNX Runtime's dynamic quantization (quantize_dynamic): one scale per output
                  channel, MatMulInteger; the embedding table too
    int8_block32  ONNX Runtime's MatMulNBits with 8 bits: one scale per block of 32 weights
                  (llama.cpp's q8_0 layout), int8 dot products (accuracy_level 4); faster
                  per token on CPU, the embedding table stays fp32

    exports/onnx_int8/  model.onnx, config.json, tokenizer files
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quark.export import copy_model_files, onnx, require
from quark.export.onnx import OnnxDecoder
from quark.export.validation import Tolerance

# int8 rounding moves logits by a few tenths: checked on what a user notices, the ranking of
# next tokens and the perplexity
INT8_TOLERANCE = Tolerance(min_logit_cosine=0.99, min_top1_agreement=0.95, max_ppl_change_pct=2.0)
DEFAULT_TOLERANCE = {"int8": INT8_TOLERANCE, "int8_block32": INT8_TOLERANCE}


def check(model_dir: Path, config: dict[str, Any], precision: str) -> None:
    onnx.check(model_dir, config, precision)
    require("onnxruntime.quantization", "onnx_int8")


def export(model: Any, model_dir: Path, out_dir: Path, precision: str, threads: int) -> OnnxDecoder:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        fp32 = Path(scratch) / "model.onnx"
        onnx.write_onnx(model, fp32)
        quantize_onnx(fp32, out_dir / "model.onnx", precision)
    copy_model_files(model_dir, out_dir)
    return OnnxDecoder(out_dir / "model.onnx", threads)


def quantize_onnx(fp32: Path, int8: Path, precision: str = "int8") -> None:
    """Write `fp32` (an ONNX model) quantized by `precision`'s scheme to `int8`."""
    external = fp32.with_name(fp32.name + ".data").exists()
    with root_logger_quiet():  # the quantizers log a line per tensor on the root logger
        if precision == "int8_block32":
            import onnx as onnx_proto
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(
                onnx_proto.load(str(fp32)),
                bits=8,
                block_size=32,
                is_symmetric=True,
                accuracy_level=4,  # int8 activations in the dot products
            )
            quantizer.process()
            quantizer.model.save_model_to_file(str(int8), use_external_data_format=external)
            return
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            fp32,
            int8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # the weight-bearing ops only: the quantizer would also rewrite ONNX's own
            # Attention (opset 23) as Microsoft's QAttention, which has other attributes
            op_types_to_quantize=["MatMul", "Gather"],
            use_external_data_format=external,
        )


@contextlib.contextmanager
def root_logger_quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
