"""Training throughput: the suite's step vs a plain jax.jit step vs PyTorch eager.

For model sizes ~100K, 1M and 10M parameters on CPU (byte vocabulary, batch 16 x 256, f32)
and 124M and 350M on accelerators (GPT-2 small/medium: vocabulary 50,304, batch 32 x 1024,
bf16 compute), all SwiGLU, RoPE, tied embeddings, AdamW, this measures side by side in one
process:

- "suite k=N":  scaling.train_step's jitted step (the real training code path) with the N
  steps per dispatch the trainer picks for the size (scaling.dispatch);
- "suite k=1":  the same, 1 step per dispatch (variant suite-k1);
- "plain jit":  a minimal hand-written jax.jit step of the same model (layers in lax.scan,
  float32, jax.nn.dot_product_attention; variant plain);
- "torch eager": the same model in PyTorch eager mode on CPU, if /tmp/torchvenv/bin/python (or
  $TORCH_PYTHON) has torch; it runs in that interpreter as a subprocess kept warm between
  rounds (variant torch).
On CPU the default is suite and torch, measured in interleaved rounds (suite, torch, suite,
torch, ...), and each row reports the spread of its rounds; elsewhere suite-k1, suite, plain.

All of them run in the process environment `scaling train` sets up on CPU (scaling.host_env:
glibc's huge-page malloc tunable; torch's subprocess inherits it), so the plain reference
isolates what the suite's model and loop add or cost, not the setting.

It prints tokens/s, step time, compile time, achieved FLOP/s of 6N work and its fraction of
a measured bare f32 matmul peak (and MFU against the datasheet peak on known accelerators),
and appends a dated section to BENCHMARKS.md. Usage:
    .venv/bin/python bench/train_throughput.py [--sizes 100K,1M,10M] [--batch 16 --seq 256]
        [--seconds 3 --rounds 5] [--variants suite,torch] [--no-write]
    (defaults depend on the backend, see above)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling.host_env import reexec_tuned  # noqa: E402

reexec_tuned()  # as `scaling train` does: glibc's huge-page malloc tunable

from scaling import mesh as mesh_lib  # noqa: E402
from scaling.config import OptimConfig, RunConfig, ScheduleConfig  # noqa: E402
from scaling.dispatch import auto_steps_per_dispatch  # noqa: E402
from scaling.flops import param_counts  # noqa: E402
from scaling.shapes import ModelConfig  # noqa: E402
from scaling.train import device_peak_flops  # noqa: E402
from scaling.train_step import TrainState, compute_dtype_for, make_step_fn  # noqa: E402

SIZES = {  # name -> (n_layers, d_model, n_heads, head_dim, d_ff, vocab)
    "100K": (2, 64, 4, 16, 192, 256),
    "1M": (4, 128, 4, 32, 448, 256),
    "10M": (8, 320, 5, 64, 864, 256),
    "124M": (12, 768, 12, 64, 2048, 50304),
    "350M": (24, 1024, 16, 64, 2816, 50304),
}
DEFAULTS = {  # backend -> (sizes, batch, seq)
    "cpu": ("100K,1M,10M", 16, 256),
    "accelerator": ("124M,350M", 32, 1024),
}


def model_config(size: str, seq: int) -> ModelConfig:
    n_layers, d, h, k, f, vocab = SIZES[size]
    return ModelConfig(vocab_size=vocab, seq_len=seq, n_layers=n_layers, d_model=d, n_heads=h,
                       head_dim=k, d_ff=f)


def batches(cfg: ModelConfig, k: int, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, cfg.vocab_size, size=(k, 1, batch, cfg.seq_len + 1), dtype=np.int32)


class Timed:
    """A compiled step: `measure(seconds)` -> tokens/s of one measuring round."""

    def __init__(self, call, tokens_per_call: int, k: int) -> None:
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        self.compile_s = time.perf_counter() - t0
        jax.block_until_ready(call())  # one warm call
        self.call, self.tokens_per_call, self.k = call, tokens_per_call, k

    def measure(self, seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            out = self.call()
            n += 1
            if n >= 2 and time.perf_counter() - t0 >= seconds:
                break
        jax.block_until_ready(out)
        return n * self.tokens_per_call / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- suite step


def bench_suite(cfg: ModelConfig, k: int, batch: int) -> Timed:
    """The trainer's own step with its defaults for this backend (dtype, unrolling)."""
    run = RunConfig(model=cfg, optim=OptimConfig(lr=1e-3), schedule=ScheduleConfig(kind="constant"),
                    batch_size=batch, n_steps=10**6)
    ts = TrainState(run, mesh_lib.make_mesh())
    step_fn = make_step_fn(ts)
    state = ts.init()
    holder = {"p": state["params"], "o": state["opt_state"]}
    data = jax.device_put(batches(cfg, k, batch))
    step0, step1, scalars = jnp.asarray(0, jnp.int32), jnp.asarray(k, jnp.int32), ts.scalars()

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, step1, data,
                                                   scalars)
        return ce

    return Timed(call, k * batch * cfg.seq_len, k)


# ----------------------------------------------------------------------------- plain reference


def plain_init(cfg: ModelConfig, key) -> dict:
    nl, d, h, kd, f, v = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    ks = jax.random.split(key, 8)

    def normal(i, shape, std):
        return std * jax.random.normal(ks[i], shape, jnp.float32)

    return {
        "embed": normal(0, (v, d), 0.02), "final_norm": jnp.ones((d,)),
        "attn_norm": jnp.ones((nl, d)), "mlp_norm": jnp.ones((nl, d)),
        "wq": normal(1, (nl, d, h * kd), d ** -0.5), "wk": normal(2, (nl, d, h * kd), d ** -0.5),
        "wv": normal(3, (nl, d, h * kd), d ** -0.5), "wo": normal(4, (nl, h * kd, d), (h * kd) ** -0.5),
        "w_gate": normal(5, (nl, d, f), d ** -0.5), "w_up": normal(6, (nl, d, f), d ** -0.5),
        "w_down": normal(7, (nl, f, d), f ** -0.5),
    }


def plain_loss(params: dict, batch_BxL1, cfg: ModelConfig):
    h, kd = cfg.n_heads, cfg.head_dim
    x_BxL, y_BxL = batch_BxL1[:, :-1], batch_BxL1[:, 1:]
    b, seq = x_BxL.shape
    half = kd // 2
    inv = 1.0 / (10_000.0 ** (jnp.arange(half) * 2.0 / kd))
    ang = jnp.arange(seq)[:, None] * inv[None, :]
    cos, sin = jnp.cos(ang)[None, :, None, :], jnp.sin(ang)[None, :, None, :]

    def norm(x, s):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * s

    def rope(t):
        t1, t2 = t[..., :half], t[..., half:]
        return jnp.concatenate([t1 * cos - t2 * sin, t2 * cos + t1 * sin], -1)

    def layer(x, p):
        a = norm(x, p["attn_norm"])
        q = rope((a @ p["wq"]).reshape(b, seq, h, kd))
        k = rope((a @ p["wk"]).reshape(b, seq, h, kd))
        v = (a @ p["wv"]).reshape(b, seq, h, kd)
        att = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + att.reshape(b, seq, h * kd) @ p["wo"]
        m = norm(x, p["mlp_norm"])
        return x + (jax.nn.silu(m @ p["w_gate"]) * (m @ p["w_up"])) @ p["w_down"], None

    stacked = {n: params[n] for n in ("attn_norm", "mlp_norm", "wq", "wk", "wv", "wo", "w_gate",
                                      "w_up", "w_down")}
    x, _ = jax.lax.scan(layer, params["embed"][x_BxL], stacked)
    logits = norm(x, params["final_norm"]) @ params["embed"].T
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y_BxL[..., None], -1)[..., 0])


def bench_plain(cfg: ModelConfig, batch: int) -> Timed:
    params = plain_init(cfg, jax.random.key(0))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.1))
    opt = tx.init(params)

    def step(params, opt, batch):
        loss, grads = jax.value_and_grad(plain_loss)(params, batch, cfg)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    holder = {"p": params, "o": opt}
    data = jax.device_put(batches(cfg, 1, batch)[0, 0])

    def call():
        holder["p"], holder["o"], loss = step(holder["p"], holder["o"], data)
        return loss

    return Timed(call, batch * cfg.seq_len, 1)


# ----------------------------------------------------------------------------- torch eager

TORCH_SCRIPT = r"""
import json, sys, time, math
import torch, torch.nn as nn, torch.nn.functional as F
n_layers, d, h, k, f, V, B, L = json.loads(sys.argv[1])
torch.manual_seed(0)

class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.n1, s.n2 = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
        s.wq, s.wk, s.wv = (nn.Linear(d, h * k, bias=False) for _ in range(3))
        s.wo = nn.Linear(h * k, d, bias=False)
        s.gate, s.up = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        s.down = nn.Linear(f, d, bias=False)
    def forward(s, x, cos, sin):
        b = x.shape[0]
        a = s.n1(x)
        def rope(t):
            t1, t2 = t[..., : k // 2], t[..., k // 2:]
            return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], -1)
        q = rope(s.wq(a).view(b, L, h, k).transpose(1, 2))
        kk = rope(s.wk(a).view(b, L, h, k).transpose(1, 2))
        v = s.wv(a).view(b, L, h, k).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        x = x + s.wo(att.transpose(1, 2).reshape(b, L, h * k))
        m = s.n2(x)
        return x + s.down(F.silu(s.gate(m)) * s.up(m))

class Model(nn.Module):
    def __init__(s):
        super().__init__()
        s.embed = nn.Embedding(V, d)
        s.blocks = nn.ModuleList(Block() for _ in range(n_layers))
        s.norm = nn.RMSNorm(d, eps=1e-6)
        inv = 1.0 / (10000.0 ** (torch.arange(k // 2) * 2.0 / k))
        ang = torch.arange(L)[:, None] * inv[None, :]
        s.register_buffer("cos", ang.cos()[None, None]); s.register_buffer("sin", ang.sin()[None, None])
    def forward(s, x):
        x = s.embed(x)
        for blk in s.blocks:
            x = blk(x, s.cos, s.sin)
        return s.norm(x) @ s.embed.weight.T

model = Model()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
data = torch.randint(0, V, (B, L + 1))
def step():
    logits = model(data[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss
t0 = time.perf_counter(); step(); first = time.perf_counter() - t0
step()
print(json.dumps({"compile_s": first, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "n_params": sum(p.numel() for p in model.parameters())}), flush=True)
for line in sys.stdin:  # one measuring round per line: its length in seconds
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < float(line):
        step(); n += 1
    el = time.perf_counter() - t0
    print(json.dumps({"tokens_per_s": n * B * L / el, "step_s": el / n}), flush=True)
"""


def torch_python() -> str | None:
    for candidate in (os.environ.get("TORCH_PYTHON"), "/tmp/torchvenv/bin/python"):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import torch"], capture_output=True)
            if probe.returncode == 0:
                return candidate
    return None


class TorchTimed:
    """PyTorch eager in its own interpreter, kept running between rounds (warm, like the JAX
    steps): each `measure` asks it for one measuring round over a pipe."""

    def __init__(self, python: str, cfg: ModelConfig, batch: int) -> None:
        self.k = 1
        args = json.dumps([cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff,
                           cfg.vocab_size, batch, cfg.seq_len])
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(TORCH_SCRIPT)
        self.script = f.name
        self.proc = subprocess.Popen([python, self.script, args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = self._reply()
        self.compile_s = self.info["compile_s"]  # first eager step (allocations, no compile)

    def _reply(self) -> dict:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"torch failed (exit {self.proc.wait()})")
        return json.loads(line)

    def measure(self, seconds: float) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        return self._reply()["tokens_per_s"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()
        os.unlink(self.script)


# ----------------------------------------------------------------------------- peak


def matmul_peak(n: int = 1024, seconds: float = 2.0) -> float:
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(mm(a, b))
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        rates.append(2 * n ** 3 / (time.perf_counter() - t0))
    return float(np.median(rates))


# ----------------------------------------------------------------------------- main


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return (f"{jax.default_backend()} ({dev.device_kind}), host {cpu}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}")


def markdown_table(rows: list[dict]) -> str:
    header = ("| size | N | variant | tokens/s | rounds spread | step ms | compile s | "
              "GFLOP/s (6N) | of matmul peak | MFU | vs plain jit | vs torch eager (per round) |")
    lines = [header, "|" + "---|" * 12]

    def opt(x, fmt, suffix=""):
        return "n/a" if x is None else format(x, fmt) + suffix

    for r in rows:
        vs_torch = opt(r["vs_torch"], ".2f", "x")
        if r.get("round_ratios"):
            vs_torch += f" ({min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f})"
        lines.append(
            f"| {r['size']} | {r['n_params']:,} | {r['variant']} | {r['tokens_per_s']:,.0f} | "
            f"{r['spread']:.0%} | {r['step_s'] * 1e3:.1f} | {r['compile_s']:.1f} | "
            f"{r['achieved_flops'] / 1e9:.1f} | {r['frac_matmul_peak']:.0%} | "
            f"{opt(r['mfu'], '.1%')} | {opt(r['vs_plain'], '.2f', 'x')} | {vs_torch} |")
    return "\n".join(lines)


VARIANTS = ("suite", "suite-k1", "plain", "torch")
DEFAULT_VARIANTS = {"cpu": "suite,torch", "accelerator": "suite-k1,suite,plain"}


def size_variants(cfg: ModelConfig, batch: int, backend: str, wanted: list[str],
                  tpy: str | None) -> list[tuple[str, Callable[[], Timed | TorchTimed]]]:
    """(row name, constructor) of the variants asked for, suite first: 'suite' is the
    trainer's step with the steps per dispatch it picks for this size."""
    k_auto = auto_steps_per_dispatch(6 * param_counts(cfg)["total"] * batch * cfg.seq_len,
                                     backend)
    out: list[tuple[str, Callable[[], Timed | TorchTimed]]] = []
    if "suite-k1" in wanted and k_auto > 1:
        out.append(("suite k=1", partial(bench_suite, cfg, 1, batch)))
    if "suite" in wanted or ("suite-k1" in wanted and k_auto == 1):
        out.append((f"suite k={k_auto}", partial(bench_suite, cfg, k_auto, batch)))
    if "plain" in wanted:
        out.append(("plain jit", partial(bench_plain, cfg, batch)))
    if "torch" in wanted and tpy:
        out.append(("torch eager", partial(TorchTimed, tpy, cfg, batch)))
    return out


def measure_size(size: str, cfg: ModelConfig, batch: int, variants, rounds: int,
                 seconds: float) -> list[dict]:
    """Rounds interleave the variants (suite, torch, suite, torch, ...), so load from other
    jobs and the machine's drift hit them alike; each row reports the median round, the
    spread of its rounds, and against torch the ratio of the rounds taken side by side."""
    n_params = param_counts(cfg)["total"]
    timers = {name: make() for name, make in variants}
    for timer in timers.values():  # an unrecorded round: caches, allocator and threads warm
        timer.measure(min(seconds, 1.0))
    rates: dict[str, list[float]] = {name: [] for name in timers}
    for i in range(rounds):
        for name, timer in timers.items():
            rates[name].append(timer.measure(seconds))
        print(f"{size:>5} round {i + 1}/{rounds}: " + ", ".join(
            f"{name} {rates[name][-1]:,.0f}" for name in timers) + " tok/s", flush=True)
    rows = []
    for name, timer in timers.items():
        tps = float(np.median(rates[name]))
        r = {"size": size, "n_params": n_params, "variant": name, "tokens_per_s": tps,
             "step_s": batch * cfg.seq_len / tps, "compile_s": timer.compile_s, "k": timer.k,
             "achieved_flops": tps * 6 * n_params,
             "spread": (max(rates[name]) - min(rates[name])) / tps, "rounds": rates[name]}
        if isinstance(timer, TorchTimed):
            r["torch"] = timer.info["torch"]
            timer.close()
        rows.append(r)
    torch_rates = rates.get("torch eager")
    plain = next((r["tokens_per_s"] for r in rows if r["variant"] == "plain jit"), None)
    for r in rows:
        r["vs_plain"] = r["tokens_per_s"] / plain if plain else None
        r["vs_torch"] = r["tokens_per_s"] / float(np.median(torch_rates)) if torch_rates else None
        r["round_ratios"] = ([a / b for a, b in zip(r["rounds"], torch_rates, strict=True)]
                             if torch_rates and r["variant"] != "torch eager" else None)
        print(f"{size:>5} {n_params:>10,} {r['variant']:<12} {r['tokens_per_s']:>10,.0f} tok/s  "
              f"step {r['step_s'] * 1e3:8.1f} ms  compile {r['compile_s']:6.1f} s  "
              f"rounds spread {r['spread']:.0%}"
              + (f"  vs torch {r['vs_torch']:.2f}x (rounds {min(r['round_ratios']):.2f}-"
                 f"{max(r['round_ratios']):.2f})" if r["round_ratios"] else ""), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="measuring time per variant per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measuring rounds")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: "
                             f"{DEFAULT_VARIANTS['cpu']} on CPU, {DEFAULT_VARIANTS['accelerator']} "
                             "elsewhere)")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    backend = jax.default_backend()
    kind = "cpu" if backend == "cpu" else "accelerator"
    sizes, batch, seq = DEFAULTS[kind]
    sizes, batch, seq = args.sizes or sizes, args.batch or batch, args.seq or seq
    wanted = (args.variants or DEFAULT_VARIANTS[kind]).split(",")
    unknown = sorted(set(wanted) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; expected some of "
                     f"{', '.join(VARIANTS)}")

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    peak_mm = matmul_peak()
    peak_dev = device_peak_flops()
    tpy = None if args.no_torch or backend != "cpu" else torch_python()
    print(f"machine: {machine()}\nbare f32 matmul (1024^3): {peak_mm / 1e9:.1f} GFLOP/s\n"
          f"load average: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          flush=True)
    rows = []
    for size in sizes.split(","):
        cfg = model_config(size, seq)
        rows += measure_size(size, cfg, batch, size_variants(cfg, batch, backend, wanted, tpy),
                             args.rounds, args.seconds)
    for r in rows:
        r["frac_matmul_peak"] = r["achieved_flops"] / peak_mm
        r["mfu"] = r["achieved_flops"] / peak_dev if peak_dev else None
    load_after = os.getloadavg()
    elapsed = time.perf_counter() - t_start

    table = markdown_table(rows)
    print(table)
    if args.no_write:
        return
    import flax

    torch_version = next((r.get("torch") for r in rows if r.get("torch")), None)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = [
        f"\n## Training throughput ({when})\n",
        f"`bench/train_throughput.py`: batch {batch} x {seq}, SwiGLU, RoPE, tied embeddings, "
        f"AdamW with clipping; the suite computes in {compute_dtype_for(backend).__name__}, the "
        "plain reference in float32; vocabularies as in SIZES. Machine: " + machine() + ". "
        "Versions: jax "
        f"{jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, torch "
        f"{torch_version or 'not installed'}, Python {platform.python_version()}. Bare f32 matmul "
        f"peak measured here: {peak_mm / 1e9:.1f} GFLOP/s. 'suite k=N' is scaling.train_step's step "
        "with N optimizer steps per dispatch; 'plain jit' a minimal hand-written jax.jit step "
        "of the same model; tokens/s are steady state (compile excluded), the median of "
        f"{args.rounds} rounds of {args.seconds:g} s that interleave the variants; 'rounds "
        "spread' is (max - min) / median of a variant's rounds, and the range after the ratio "
        "to torch that of the rounds' own ratios (each suite round against the torch round "
        "beside it). Process environment (all "
        f"variants, torch included): XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}. Load average (1/5/15 min) "
        f"before the run: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after: "
        f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (the benchmark itself keeps "
        f"~2 cores busy); the whole run took {elapsed / 60:.1f} min.\n",
        table + "\n",
    ]
    path = REPO / "BENCHMARKS.md"
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("# Benchmarks\n")
        f.write("\n".join(section))
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
