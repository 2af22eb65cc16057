"""Per-token generation latency of Quark's exports on CPU, against torch eager and llama.cpp.

One trained model (llama_tiny pretrained briefly on the default stdlib corpus, unless given),
exported by `launch.py step=optimize` as a user does (export=onnx, onnx_int8, and gguf f32 and
q8_0 when llama-cpp-python is installed; each validated, perplexity included), then timed in
one process on the same prompts with the same thread count, runtimes alternating round by
round so drift of a busy machine is shared:

    torch fp32 eager with a DynamicCache (the baseline), ONNX Runtime fp32, int8 (per-channel)
    and int8_block32 (MatMulNBits),
    llama.cpp f32 and q8_0 (llama-cpp-python).

Figure: milliseconds per generated token once the prompt is in the cache (greedy, one forward
pass per token; quark.export.decoding.decode_ms_per_token), median over prompts and rounds.

Targets (issue 6): ONNX int8 >= 3x faster than torch fp32 eager with perplexity within 2 %;
Quark's fastest path within 1.2x of llama.cpp at the same precision.

    .venv/bin/python bench/export_latency.py [--threads 2] [--rounds 5] [--steps 150]
    .venv/bin/python bench/export_latency.py --model-dir RUN_OR_HF_DIR --data-dir DATA_RUN
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def launch(outputs: Path, threads: int, *overrides: str) -> dict:
    """Run launch.py; return the manifest of the run it made."""
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs), "OMP_NUM_THREADS": str(threads)}
    before = set(outputs.rglob("manifest.json"))
    done = subprocess.run(
        [sys.executable, "launch.py", "experiment_name=bench", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"launch.py {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    [made] = set(outputs.rglob("manifest.json")) - before
    return json.loads(made.read_text())


def prepare(outputs: Path, steps: int, threads: int) -> tuple[Path, Path]:
    """A data run of the default corpus and llama_tiny pretrained on it for `steps` steps."""
    print("data step (stdlib corpus) ...", flush=True)
    data = launch(outputs, threads, "step=data")
    print(f"pretrain llama_tiny for {steps} steps ...", flush=True)
    pretrain = launch(
        outputs,
        threads,
        "step=pretrain",
        "model=llama_tiny",
        f"step.max_steps={steps}",
        f"step.val_every_n_steps={steps}",
        f"step.checkpoint_every_n_steps={steps}",
        "step.seq_len=256",
        "trainer.micro_batch_size=8",
    )
    print(f"  val_ppl {pretrain['metrics']['val_ppl']:.2f}", flush=True)
    return Path(pretrain["run_dir"]), Path(data["run_dir"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="pretrain/finetune run or HF model dir")
    parser.add_argument("--data-dir", type=Path, help="data run with token shards")
    parser.add_argument("--outputs", type=Path, help="run directories (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=150, help="pretrain steps when training")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()

    import torch

    from quark.export import quiet_exporters

    quiet_exporters()
    torch.set_num_threads(args.threads)
    outputs = args.outputs or Path(tempfile.mkdtemp(prefix="quark_bench_"))
    outputs.mkdir(parents=True, exist_ok=True)
    if args.model_dir and args.data_dir:
        model_source, data_dir = args.model_dir.resolve(), args.data_dir.resolve()
    else:
        model_source, data_dir = prepare(outputs, args.steps, args.threads)

    # runtime -> the export it runs (format, precision)
    exports = {
        "onnxruntime fp32": ("onnx", "fp32"),
        "onnxruntime int8": ("onnx_int8", "int8"),
        "onnxruntime int8_block32": ("onnx_int8", "int8_block32"),
    }
    try:
        import llama_cpp  # noqa: F401

        exports |= {"llama.cpp f32": ("gguf", "f32"), "llama.cpp q8_0": ("gguf", "q8_0")}
    except ImportError:
        print("llama-cpp-python not installed: no llama.cpp figures", flush=True)
    validated = {}
    for runtime, (name, precision) in exports.items():
        print(f"step=optimize export={name} export.precision={precision} ...", flush=True)
        validated[runtime] = launch(
            outputs,
            args.threads,
            "step=optimize",
            f"export={name}",
            f"export.precision={precision}",
            f"step.model_dir={model_source}",
            f"step.data_dir={data_dir}",
            f"step.threads={args.threads}",
        )

    from transformers import AutoModelForCausalLM

    from quark.export.decoding import Decoder, TorchDecoder, decode_ms_per_token
    from quark.export.gguf_runtime import LlamaCppDecoder
    from quark.export.onnx import OnnxDecoder
    from quark.export.validation import validation_windows
    from quark.lineage.models import locate_model
    from quark.steps.optimize import MODEL_DIR_ALLOWED

    directory = locate_model(model_source, "--model-dir", MODEL_DIR_ALLOWED).directory
    source = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    runtimes: dict[str, Decoder] = {"torch fp32 eager": TorchDecoder(source)}
    for runtime, (name, precision) in exports.items():
        export_dir = Path(validated[runtime]["run_dir"]) / "exports" / name
        if name == "gguf":
            context = source.config.max_position_embeddings
            runtimes[runtime] = LlamaCppDecoder(
                export_dir / "model.gguf", args.threads, context, precision
            )
        else:
            runtimes[runtime] = OnnxDecoder(export_dir / "model.onnx", args.threads)

    windows = validation_windows(data_dir, args.prompt_tokens, args.prompts)
    prompts = [row[: args.prompt_tokens].tolist() for row in windows]
    timings: dict[str, list[float]] = {name: [] for name in runtimes}
    for round_number in range(args.rounds):
        for name, decoder in runtimes.items():
            for prompt in prompts:
                timings[name].append(decode_ms_per_token(decoder, prompt, args.new_tokens, 2))
        print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    for decoder in runtimes.values():
        decoder.close()

    ms = {name: statistics.median(values) for name, values in timings.items()}
    report(args, directory, ms, validated)


def report(
    args: argparse.Namespace, directory: Path, ms: dict[str, float], validated: dict
) -> None:
    import torch

    parameters = json.loads((directory / "config.json").read_text())
    print(
        f"\nmodel {directory} (hidden {parameters['hidden_size']}, "
        f"{parameters['num_hidden_layers']} layers, vocab {parameters['vocab_size']}); "
        f"threads {args.threads}, torch {torch.__version__}; {args.prompts} prompts of "
        f"{args.prompt_tokens} tokens, {args.new_tokens} new tokens, {args.rounds} rounds\n"
    )
    baseline = ms["torch fp32 eager"]
    print("| runtime | ms/token | speed-up vs torch fp32 eager |")
    print("|---|---|---|")
    for name, value in ms.items():
        print(f"| {name} | {value:.3f} | {baseline / value:.2f}x |")

    print()
    for runtime in ("onnxruntime int8", "onnxruntime int8_block32"):
        int8 = validated[runtime]["metrics"]
        speedup = baseline / ms[runtime]
        print(
            f"{runtime} vs torch fp32 eager: {speedup:.2f}x (target >= 3x: "
            f"{'met' if speedup >= 3 else 'MISSED'}); perplexity {int8['ppl_source']:.4f} -> "
            f"{int8['ppl_export']:.4f}, {int8['ppl_change_pct']:+.3f} % (target within 2 %: "
            f"{'met' if abs(int8['ppl_change_pct']) <= 2 else 'MISSED'})"
        )
    # Quark's fastest path at each precision against llama.cpp's
    pairs = (
        ("fp32", ["onnxruntime fp32"], "llama.cpp f32"),
        ("8-bit", ["onnxruntime int8", "onnxruntime int8_block32"], "llama.cpp q8_0"),
    )
    for precision, candidates, theirs in pairs:
        if theirs in ms:
            ours = min(candidates, key=lambda name: ms[name])
            ratio = ms[ours] / ms[theirs]
            print(
                f"{precision}: {ours} / {theirs} = {ratio:.2f}x the time (target <= 1.2x: "
                f"{'met' if ratio <= 1.2 else 'MISSED'})"
            )
    for runtime, manifest in validated.items():
        m = manifest["metrics"]
        print(
            f"validation of {runtime}'s export: max_logit_diff {m['max_logit_diff']:.3g}, top1 "
            f"{m['top1_agreement']:.4f}, ppl change {m['ppl_change_pct']:+.3f} %, "
            f"{m['bytes'] / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
