#!/usr/bin/env bash
# The trainer's GPU check: one script, no internet, no installs (torch, transformers, tokenizers,
# numpy). From the repository root on the GPU host:
#
#     bash benchmarks/gpu_check.sh                 # < 6 minutes on one H100
#
# Prints, as each run finishes, for the 8M and 33M presets at their 512-token paper context:
# tokens/s, MFU, step time with torch.compile on and off, peak memory, and the validation loss
# after the same steps (compiled and eager must agree: the numerics check of the GPU path);
# then validation loss after a fixed token budget for 1M, 8M and 33M, with the share of the
# budget 8M and 33M need to reach 1M's final loss; then the test model on CPU, compile on/off.
# Data: 1,100 + 100 real TinyStories shipped in tests/trainer/data (a text-file export, so
# `datasets` is not needed). Writes gpu_check-MODE.log and gpu_check-MODE.json (every run's
# figures and metrics.csv) to $OUT when set.
# Without CUDA only the CPU part runs (that is how it is checked off the GPU host).
# `bash benchmarks/gpu_check.sh smoke`: versions and 12 compiled 33M steps only (~1-2 min); it
# also fills the compile cache the full check then reuses. `... mfu`: the flash sliding window
# checked against the band mask; compiled 33M: batch 128 with the fp32 and the bf16 residual
# stream, bf16 at batch 256, the bf16 one again with a CUDA-kernel profile; each stream over a
# 1.5M-token budget (validation curves compared); ~4 minutes on an H100. Each run prints as it
# ends, with its ratio to the first; none starts after GPU_CHECK_MFU_BUDGET_S (420) seconds.
# GPU_CHECK_MFU_ONLY=NAME,NAME runs only the runs so named; "33M-b128-tuned-residual-bf16"
# (`compile_mode=tuned`, whose compile took over 4.5 minutes on an H100) runs only when named.
# On CUDA every mode first trains 2 steps in a fresh process (a user's first CUDA call is
# training's own).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$(mktemp -d /tmp/gpu_check.XXXX)}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}." PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=true
echo "gpu_check: results to $OUT_DIR"
MODE="${1:-full}"
if [ "$MODE" = smoke ] && command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi
"${PYTHON:-python3}" - "$OUT_DIR" "$MODE" <<'PY' 2>&1 | tee "$OUT_DIR/gpu_check-$MODE.log"
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from trainer.config import TrainConfig
from trainer.train import train

out_dir, mode = Path(sys.argv[1]), sys.argv[2]
work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
results: dict = {"runs": {}}
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def save_results() -> None:
    (out_dir / f"gpu_check-{mode}.json").write_text(json.dumps(results, indent=2, default=str))


# A text-file export: the release format, 1,100 train / 100 validation stories.
stories = Path("tests/trainer/data/tinystories-1200.txt").read_text().split("<|endoftext|>")
stories = [s.strip() for s in stories if s.strip()]
export = work / "export"
export.mkdir()
(export / "train.txt").write_text("<|endoftext|>".join(stories[:1100]))
(export / "validation.txt").write_text("<|endoftext|>".join(stories[1100:]))
cuda = torch.cuda.is_available()  # NVML: CUDA itself is not initialised yet
if cuda:
    # A user's `tinystories train` starts in a fresh process, where training's first CUDA call
    # is also the process's first: the script's own calls below would mask a failure there
    # (one did: reset_peak_memory_stats before CUDA was initialised).
    import subprocess

    fresh = subprocess.run(
        [sys.executable, "-c", "import sys; from trainer.config import TrainConfig; "
         "from trainer.train import train; train(TrainConfig(data=sys.argv[1], "
         "out=sys.argv[2], preset='tiny', vocab_size=2048, seq_len=128, batch_size=4, "
         "max_steps=2, compile=False, resume=False))", str(export), str(work / "fresh")],
        capture_output=True, text=True,
    )
    results["fresh_process_train"] = fresh.returncode == 0
    say(f"fresh-process CUDA training (2 steps, device auto): "
        f"{'ok' if fresh.returncode == 0 else 'FAILED ' + fresh.stderr[-1500:]}")
results["env"] = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "cuda": torch.version.cuda,
    "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    "capability": torch.cuda.get_device_capability(0) if cuda else None,
    "cpu_threads": torch.get_num_threads(),
}
say(f"env {results['env']}")

cache = work / "cache"


def run(name: str, on_step=None, **kw) -> dict:
    """One training run; its summary (from training.json) is printed and kept."""
    out = work / name
    base = dict(
        data=str(export), out=str(out), cache_dir=str(cache), vocab_size=10_000, seq_len=512,
        warmup_steps=10, lr=1e-3, eval_every=10**9, checkpoint_every=10**9, log_every=10,
        resume=False, seed=0,
    )
    base.update(kw)
    t = time.perf_counter()
    try:
        res = train(TrainConfig(**base), on_step=on_step)
    except Exception as exc:  # one failed configuration must not cost the others' figures
        say(f"{name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        results["runs"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        save_results()
        return {}
    info = json.loads((out / "training.json").read_text())
    tps = info["tokens_per_s_steady"] or info["tokens_per_s"]
    tokens_per_step = base["batch_size"] * base["seq_len"] * info["grad_accum"]
    row = {
        "preset": info["preset"], "device": info["device_name"], "compile": info["compile"],
        "compile_mode": info["config"]["compile_mode"],
        "residual": info["residual_dtype"],
        "attention": info["attention"], "bf16": info["bf16"], "steps": info["steps"],
        "batch": f"{base['batch_size']}x{base['seq_len']}", "params": info["params"],
        "vocab": info["tokenizer_vocab_size"], "tokens_per_s": tps, "mfu": info["mfu_steady"],
        "step_ms": 1000 * tokens_per_step / tps if tps else None,
        "peak_memory_gib": (info["peak_memory_bytes"] or 0) / 2**30,
        "val_loss": info["final_val_loss"], "bits_per_byte": info["bits_per_byte"],
        "wall_s": time.perf_counter() - t, "tokens_seen": info["tokens_seen"],
    }
    row["metrics_csv"] = (out / "metrics.csv").read_text()  # one file back, not one per run
    results["runs"][name] = row
    save_results()
    mfu = f"{row['mfu']:.1%}" if row["mfu"] else "n/a"
    say(
        f"{name}: {row['preset']} {row['params'] / 1e6:.1f}M params vocab {row['vocab']} "
        f"batch {row['batch']} compile={row['compile']} ({row['compile_mode']}) "
        f"residual={row['residual']} "
        f"attention={row['attention']} "
        f"bf16={row['bf16']} | tokens/s {tps:,.0f} | MFU {mfu} | step {row['step_ms']:.1f} ms | "
        f"peak mem {row['peak_memory_gib']:.2f} GiB | val loss {row['val_loss']:.4f} after "
        f"{row['tokens_seen']:,} tokens | wall {row['wall_s']:.0f}s"
    )
    if res.vocab_note and "vocab_note" not in results:
        results["vocab_note"] = res.vocab_note
        say(f"note: {res.vocab_note}")
    return row


if mode == "smoke":
    if cuda:
        run("smoke-33M", preset="33M", batch_size=64, max_steps=12, log_every=4, compile=True,
            device="cuda")
    else:
        run("smoke-tiny", preset="tiny", vocab_size=2048, seq_len=300, batch_size=8,
            max_steps=8, log_every=4, compile=True, device="cpu")
    say("smoke done")
    save_results()
    sys.exit(0)
if mode == "mfu":  # local-layer kernels and batch size against MFU, compiled, paper context
    dev = torch.device("cuda" if cuda else "cpu")
    if cuda:
        from trainer.attention import flash_matches_band_mask, flash_window_supported

        if flash_window_supported(dev):
            diffs = {w: flash_matches_band_mask(dev, w, 48) for w in (4, 256)}
            results["flash_vs_band_mask"] = diffs
            say(f"flash sliding window vs SDPA band mask (relative, window: diff): {diffs}")
        else:
            say(f"flash sliding window: not in torch {torch.__version__}")
    profile = {}

    def profiled(info) -> None:  # kernels of steps 21-25 of the profiled run
        if info.step == 20:
            kind = "CUDA" if cuda else "CPU"
            profile["p"] = torch.profiler.profile(
                activities=[getattr(torch.profiler.ProfilerActivity, kind)]
            )
            profile["p"].__enter__()
        elif info.step == 25 and "p" in profile:
            if cuda:
                torch.cuda.synchronize()
            profile["p"].__exit__(None, None, None)
            table = profile.pop("p").key_averages().table(
                sort_by="self_device_time_total", row_limit=24, max_name_column_width=70
            )
            results["profile_last_run"] = table
            print(table, flush=True)

    # Baseline in the same run: the default compile with the fp32 stream (35.9-36.8% on an H100).
    # (preset, batch, compile mode, residual stream dtype, variant). Cheap runs first; the
    # profiled repeat reuses the compiled graph (Inductor's on-disk cache).
    # "budget": each stream over the full check's fixed 1.5M-token budget at batch 16 (184
    # steps, ~6 epochs of the shipped stories), evaluated every 15 steps: does the bf16 stream
    # keep the fp32 stream's loss over more than 40 steps?
    runs = (("33M", 128, "default", "fp32", ""), ("33M", 128, "default", "bf16", ""),
            ("33M", 256, "default", "bf16", ""), ("33M", 128, "default", "bf16", "profiled"),
            ("33M", 16, "default", "fp32", "budget"), ("33M", 16, "default", "bf16", "budget"),
            ("33M", 128, "tuned", "bf16", ""))
    if not cuda:  # the same code path, sized for a CPU (no autocast there: fp32 stream)
        runs = (("tiny", 8, "default", "fp32", ""), ("tiny", 8, "tuned", "fp32", "profiled"))
    # No run starts after this many seconds, so the script ends (and saves) inside a device
    # call's limit.
    budget_s = float(os.environ.get("GPU_CHECK_MFU_BUDGET_S", "420"))
    only = [n for n in os.environ.get("GPU_CHECK_MFU_ONLY", "").split(",") if n]
    for preset, batch, compile_mode, residual, variant in runs:
        name = f"{preset}-b{batch}-{compile_mode}-residual-{residual}" + (variant and f"-{variant}")
        if (only and name not in only) or (cuda and compile_mode == "tuned" and not only):
            continue
        if time.perf_counter() - T0 > budget_s:
            say(f"time budget {budget_s:.0f}s spent: {name} not run")
            continue
        hook = {"on_step": profiled} if variant == "profiled" else {}
        size = {"max_steps": 40} if cuda else {"vocab_size": 2048, "seq_len": 256, "max_steps": 26}
        if variant == "budget":
            size = {"tokens": 1_500_000, "eval_every": 15, "eval_tokens": None}
        run(name, preset=preset, batch_size=batch, compile=True, compile_mode=compile_mode,
            residual_dtype=residual, device=dev.type, **hook, **size)
    rows = results["runs"]
    curves = {}
    for name, row in rows.items():
        if name.endswith("-budget") and row.get("metrics_csv"):
            import csv
            import io

            curves[name] = {int(r["tokens"]): float(r["val_loss"])
                            for r in csv.DictReader(io.StringIO(row["metrics_csv"]))
                            if r["val_loss"]}
    if len(curves) == 2:
        (a, ca), (b, cb) = curves.items()
        common = sorted(set(ca) & set(cb))
        gaps = [cb[t] - ca[t] for t in common]
        results["budget_curves"] = {"tokens": common, a: [ca[t] for t in common],
                                    b: [cb[t] for t in common]}
        if gaps:
            say(f"val loss {b} minus {a} over {len(common)} evaluations: final "
                f"{gaps[-1]:+.4f}, largest {max(gaps, key=abs):+.4f} "
                f"({ca[common[-1]]:.4f} vs {cb[common[-1]]:.4f} after {common[-1]:,} tokens)")
    base = rows.get("33M-b128-default-residual-fp32", {})
    pct = lambda v: f"{v:.1%}" if v else "n/a"  # noqa: E731
    for name, row in rows.items():
        if (name.startswith("33M-") and not name.endswith(("-profiled", "-budget"))
                and base.get("tokens_per_s") and row.get("tokens_per_s")):
            say(f"{name}: {row['tokens_per_s'] / base['tokens_per_s']:.3f}x the default "
                f"(MFU {pct(row['mfu'])} vs {pct(base['mfu'])}; val loss {row['val_loss']:.4f} "
                f"vs {base['val_loss']:.4f}, after {row['tokens_seen']:,} vs "
                f"{base['tokens_seen']:,} tokens)")
    save_results()
    sys.exit(0)

if cuda:
    # 1. Throughput at the paper context: same steps from the same start with and without
    # compile; the two validation losses must agree (compiled flex/bf16 path == eager SDPA).
    for preset in ("8M", "33M"):
        rows = {c: run(f"{preset}-compile-{c}", preset=preset, batch_size=64, max_steps=40,
                       compile=c, device="cuda")
                for c in (True, False)}
        if rows[True] and rows[False]:
            say(f"{preset}: compile speed-up {rows[True]['tokens_per_s'] / rows[False]['tokens_per_s']:.2f}x, "
                f"val loss compiled {rows[True]['val_loss']:.4f} vs eager {rows[False]['val_loss']:.4f}")

    # 2. Validation loss after a fixed budget (1.5M tokens, about 5 epochs of the shipped
    # stories; eager: the check above covers the compiled path's numerics).
    budget = 1_500_000
    curves = {}
    for preset in ("1M", "8M", "33M"):
        row = run(f"{preset}-budget", preset=preset, batch_size=16, tokens=budget,
                  eval_every=15, eval_tokens=None, compile=False, device="cuda",
                  time_limit_s=60)
        if row:
            with (work / f"{preset}-budget" / "metrics.csv").open() as fh:
                import csv

                curves[preset] = [(int(r["tokens"]), float(r["val_loss"]))
                                  for r in csv.DictReader(fh) if r["val_loss"]]
    if "1M" in curves:
        target = curves["1M"][-1][1]
        for preset in ("8M", "33M"):
            hit = next((t for t, v in curves.get(preset, []) if v <= target), None)
            share = f"{hit / curves['1M'][-1][0]:.0%} of its tokens" if hit else "not within budget"
            results.setdefault("reach_1M_final_loss", {})[preset] = hit
            say(f"{preset} reaches 1M's final val loss {target:.4f} at {hit} tokens: {share}")
        save_results()

# 3. The test model on CPU, compile on and off.
threads = torch.get_num_threads()
for c in (True, False):
    run(f"cpu-tiny-compile-{c}", preset="tiny", vocab_size=2048, seq_len=256, batch_size=8,
        max_steps=30, compile=c, device="cpu", threads=threads)
say(f"gpu_check done in {time.perf_counter() - T0:.0f}s")
save_results()
PY
