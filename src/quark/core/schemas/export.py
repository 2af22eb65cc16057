"""Schema of the `export` group: which inference format step=optimize writes, in which
precision, and how close to the source model it must stay."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

# Each format's precisions, the first its default. Names are the ones each ecosystem uses.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "hf": ("fp32", "bf16", "fp16"),
    "onnx": ("fp32",),
    "onnx_int8": ("int8", "int8_block32"),
    "torchao": ("int8_weight_only", "int8_dynamic", "int4_weight_only"),
    "gguf": ("f32", "f16", "q8_0"),
}
FORMATS = tuple(PRECISIONS)


@dataclass
class ExportToleranceSchema:
    """How far the export may be from the source model on the validation windows (teacher
    forced). null: the format's default for its precision (docs/exports.md lists them)."""

    # largest absolute difference of any logit
    max_logit_diff: float | None = ranged(None, gt=0)
    # mean cosine similarity of the logit vectors, position by position
    min_logit_cosine: float | None = ranged(None, ge=-1, le=1)
    # share of positions whose most likely next token is the same
    min_top1_agreement: float | None = ranged(None, ge=0, le=1)
    # perplexity increase over the source's, in percent
    max_ppl_change_pct: float | None = ranged(None, ge=0)


@dataclass
class ExportSchema:
    name: str = choice("onnx_int8", FORMATS)
    # hf: fp32 | bf16 | fp16; onnx: fp32; onnx_int8: int8 | int8_block32;
    # torchao: int8_weight_only | int8_dynamic | int4_weight_only (CUDA); gguf: f32 | f16 | q8_0
    precision: str = "int8"
    tolerance: ExportToleranceSchema = field(default_factory=ExportToleranceSchema)

    def check(self) -> None:
        allowed = PRECISIONS[self.name]
        if self.precision not in allowed:
            raise ConfigError(
                "export.precision",
                f"'{self.precision}' is not a precision of export={self.name}",
                f"allowed: {', '.join(allowed)}",
            )
