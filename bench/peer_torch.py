#!/usr/bin/python3
"""The PyTorch peer of bench/bench_clip.cpp: OpenAI's own CLIP model code (PyPI `openai-clip`)
on Debian's python3-torch, random weights of the real sizes, f32, 2 threads.

    /usr/bin/python3 bench/peer_torch.py --cache build-h4/clip_bench_cache [--models ViT-B/32,RN50] [--quick]

Prints one JSON object per line (figures), and diagnostics on stderr. Normally run by
bench/run_clip_bench.sh, which also runs our side and writes the comparison table.

PyTorch must be using the OpenMP build of OpenBLAS. Debian's torch calls whatever
libblas.so.3 / liblapack.so.3 / libopenblas.so.0 the alternatives system points at; with the
reference BLAS (`libblas3`) its matrix products run about 30x slower and a comparison would
be meaningless, so this script refuses to report one (exit code 3) unless OpenBLAS with
OpenMP threading is what the process actually mapped. To select it (as root):

    apt-get install libopenblas0-openmp
    update-alternatives --set libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
    update-alternatives --set liblapack.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3
    update-alternatives --set libopenblas.so.0-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0

(The third is needed too: numpy, imported by torch, loads libopenblas.so.0 by name, and if
that alternative still points at the pthreads build, the OpenMP libblas.so.3 ends up calling
into the pthreads OpenBLAS.)

What is measured, per model (each in a fresh process so that its peak RSS is its own):
  - encode_image at batch 1 and 16 (ViT-B/32, RN50; batch 1 only for the big models), and
    encode_text at batch 64 on real prompts ("a photo of a {class}." over bench/clip_classes.txt,
    tokenized with clip.tokenize): median seconds per call after warm-up;
  - load: torch.load of a saved f32 state dict + CLIP(...) construction + load_state_dict
    (what clip.load does for a state-dict checkpoint, minus the fp16 round trip), page cache
    warm (one untimed load first);
  - memory: in another fresh process, load + encode 1 image + encode 64 prompts, then
    ru_maxrss; also the RSS of the bare interpreter with torch imported, for reference.
"""
import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# OpenAI's CLIP constructor arguments (clip.md section 3 / build_model): embed_dim,
# image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
# vocab_size, transformer_width, transformer_heads, transformer_layers.
CONFIGS = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 77, 49408, 640, 10, 12),
    "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 77, 49408, 768, 12, 12),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 77, 49408, 1024, 16, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12),
}
# Models whose image tower is timed at batch 1 and 16; the others at batch 1 only.
FULL = ("ViT-B/32", "RN50")
TEXT_BATCH = 64
EXIT_BAD_BLAS = 3


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(**kv):
    kv = {"side": "torch", **kv}
    print(json.dumps(kv), flush=True)


def file_tag(name):
    return name.replace("/", "-").replace("@", "-")


def read_classes(path):
    with open(path, encoding="utf-8") as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def prompts(path, n=TEXT_BATCH):
    classes = read_classes(path)
    assert len(classes) >= n, f"{path}: need {n} classes, found {len(classes)}"
    return ["a photo of a %s." % c for c in classes[:n]]


# ---------------------------------------------------------------------------------------
# BLAS check

def mapped_libs():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/"):
                libs.add(parts[5])
    return sorted(libs)


def check_blas(torch):
    """Returns a dict describing the BLAS this process uses; raises SystemExit(3) if it is not
    OpenBLAS with OpenMP threading."""
    libs = [p for p in mapped_libs() if any(s in os.path.basename(p) for s in ("blas", "lapack"))]
    info = {"mapped": libs}
    problems = []
    ref = [p for p in libs if "/blas/" in p or "/lapack/" in p]  # Debian's reference libblas3 / liblapack3
    if ref:
        problems.append("the reference BLAS/LAPACK is mapped: " + ", ".join(ref))
    openblas = [p for p in libs if "libopenblas" in os.path.basename(p)]
    if not openblas:
        problems.append("no OpenBLAS is mapped into the torch process")
    else:
        if len(openblas) > 1:
            problems.append("two OpenBLAS builds are mapped: " + ", ".join(openblas))
        lib = ctypes.CDLL(openblas[0])
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        parallel = lib.openblas_get_parallel()  # 0 sequential, 1 pthreads, 2 OpenMP
        info.update(openblas=openblas[0], config=lib.openblas_get_config().decode(),
                    core=lib.openblas_get_corename().decode(),
                    parallel={0: "sequential", 1: "pthreads", 2: "openmp"}.get(parallel, str(parallel)))
        if parallel != 2:
            problems.append(f"OpenBLAS {openblas[0]} is the {info['parallel']} build, not the OpenMP one")
    for alt in ("libblas.so.3", "liblapack.so.3", "libopenblas.so.0"):
        try:
            q = subprocess.run(["update-alternatives", "--query", alt + "-x86_64-linux-gnu"],
                               capture_output=True, text=True).stdout
            info["alternative:" + alt] = next((l.split(":", 1)[1].strip() for l in q.splitlines()
                                               if l.startswith("Value:")), "?")
        except OSError:
            pass
    # A sanity figure: reference BLAS does ~5 GFLOP/s here, OpenBLAS 250+.
    a = torch.randn(1024, 1024)
    torch.mm(a, a)
    t0 = time.perf_counter()
    for _ in range(5):
        torch.mm(a, a)
    info["mm1024_gflops"] = round(5 * 2 * 1024 ** 3 / (time.perf_counter() - t0) * 1e-9, 1)
    if info["mm1024_gflops"] < 30:
        problems.append(f"torch.mm 1024x1024 runs at {info['mm1024_gflops']} GFLOP/s: that is reference BLAS speed")
    if problems:
        log("peer_torch.py: REFUSING to report a comparison against this PyTorch:")
        for p in problems:
            log("  - " + p)
        log(__doc__[__doc__.index("select it"):__doc__.index("What is measured")])
        raise SystemExit(EXIT_BAD_BLAS)
    return info


# ---------------------------------------------------------------------------------------
# Model, files, timing

def build(torch, name):
    try:
        import clip.model
    except ImportError as e:  # its package imports torchvision and PIL at import time
        raise SystemExit(f"peer_torch.py: cannot import OpenAI's clip package ({e}); install PyPI's "
                         "openai-clip, ftfy and regex, and Debian's python3-torchvision and python3-pil")
    return clip.model.CLIP(*CONFIGS[name]).float().eval()


def state_dict_path(cache, name):
    return os.path.join(cache, "torch_" + file_tag(name) + ".pt")


def ensure_state_dict(torch, cache, name):
    """Random weights of the real size, saved once (CLIP's own initialisation, seed 0)."""
    path = state_dict_path(cache, name)
    if not os.path.exists(path):
        torch.manual_seed(0)
        m = build(torch, name)
        tmp = path + ".tmp"
        torch.save(m.state_dict(), tmp)
        os.replace(tmp, path)
    return path


def load_model(torch, name, path):
    """What clip.load does for a non-JIT checkpoint, in f32: read the state dict, build the
    module, copy the weights in."""
    sd = torch.load(path, map_location="cpu")
    m = build(torch, name)
    m.load_state_dict(sd)
    del sd
    return m


def time_call(fn, min_time, min_iters, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def rss_now_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def weights_f32_bytes(torch, name):
    m = build(torch, name)
    return sum(p.numel() for p in m.state_dict().values() if p.is_floating_point()) * 4


# ---------------------------------------------------------------------------------------
# Workers (one fresh process each)

def worker(args):
    import torch
    torch.set_num_threads(args.threads)
    import clip

    name = args.worker
    R = CONFIGS[name][1]
    path = state_dict_path(args.cache, name)
    if args.task == "memory":
        base = rss_now_bytes()
        m = load_model(torch, name, path)
        with torch.no_grad():
            m.encode_image(torch.randn(1, 3, R, R))
            m.encode_text(clip.tokenize(prompts(args.classes)))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        wb = sum(p.numel() for p in m.state_dict().values() if p.is_floating_point()) * 4
        emit(model=name, metric="peak_rss", bytes=peak, baseline_bytes=base, weights_f32_bytes=wb,
             ratio=round(peak / wb, 3), ratio_minus_baseline=round((peak - base) / wb, 3),
             workload="load + encode_image(1) + encode_text(64)")
        return
    if args.task == "load":
        load_model(torch, name, path)  # warms the page cache
        times = []
        for _ in range(args.load_repeats):
            t0 = time.perf_counter()
            m = load_model(torch, name, path)
            times.append(time.perf_counter() - t0)
            del m
        emit(model=name, metric="load", seconds=statistics.median(times), min_seconds=min(times),
             repeats=len(times))
        return
    # speed
    torch.manual_seed(1)
    m = load_model(torch, name, path)
    batches = (1, 16) if name in FULL else (1,)
    if args.quick:
        batches = (1,)
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, 3, R, R)
            sec, n = time_call(lambda: m.encode_image(x), args.min_time, 3 if b == 1 else 2)
            emit(model=name, metric="encode_image", batch=b, seconds=sec, per_second=b / sec, iters=n)
        if name in FULL or args.text_all:
            tok = clip.tokenize(prompts(args.classes))
            sec, n = time_call(lambda: m.encode_text(tok), args.min_time, 2)
            emit(model=name, metric="encode_text", batch=TEXT_BATCH, seconds=sec, per_second=TEXT_BATCH / sec,
                 iters=n, max_eot=int(tok.argmax(-1).max()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True, help="directory for the saved random state dicts")
    ap.add_argument("--models", default="ViT-B/32,RN50,RN50x4,ViT-L/14@336px")
    ap.add_argument("--classes", default=os.path.join(HERE, "clip_classes.txt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per figure")
    ap.add_argument("--load-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="batch 1 only, short timings (a smoke test)")
    ap.add_argument("--text-all", action="store_true", help="also time encode_text for the big models")
    ap.add_argument("--tasks", default="speed,load,memory")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.min_time = min(args.min_time, 0.5)

    # Thread counts for every pool the process might start (torch's OpenMP, OpenBLAS).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    if args.worker:
        worker(args)
        return

    import torch
    torch.set_num_threads(args.threads)
    blas = check_blas(torch)
    emit(metric="environment", torch=torch.__version__, threads=torch.get_num_threads(),
         mkldnn=torch.backends.mkldnn.is_available(), python=sys.version.split()[0], **blas)
    os.makedirs(args.cache, exist_ok=True)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in models:
        if name not in CONFIGS:
            raise SystemExit(f"peer_torch.py: unknown model {name!r}; known: {', '.join(CONFIGS)}")
    for name in models:
        log(f"peer_torch.py: {name}: preparing the random f32 state dict")
        ensure_state_dict(torch, args.cache, name)
        for task in args.tasks.split(","):
            log(f"peer_torch.py: {name}: {task}")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--task", task,
                   "--cache", args.cache, "--classes", args.classes, "--threads", str(args.threads),
                   "--min-time", str(args.min_time), "--load-repeats", str(args.load_repeats)]
            if args.quick:
                cmd.append("--quick")
            if args.text_all:
                cmd.append("--text-all")
            r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            sys.stdout.write(r.stdout)
            sys.stdout.flush()
            if r.returncode != 0:
                raise SystemExit(f"peer_torch.py: worker {name} {task} failed with exit code {r.returncode}")


if __name__ == "__main__":
    main()
