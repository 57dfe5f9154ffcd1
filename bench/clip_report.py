#!/usr/bin/python3
"""Turns one run of bench/run_clip_bench.sh into a Markdown report: ours vs PyTorch, the image
towers against the matrix-product ceiling, memory and load time, the goals of issue 3 point 8
with pass/miss, the load the machine was under, and the per-kernel profiles.

    /usr/bin/python3 bench/clip_report.py OUT_DIR > OUT_DIR/report.md

Reads OUT_DIR/{machine.txt, load.jsonl, torch.jsonl, ga_bench_*.json, ga_ceiling_*.json,
ga_tool.jsonl}.

The ceiling (per image tower and batch): at every matrix-product shape the tower performs
(bench/clip_bench_common.hpp: image_gemms, the nominal work of docs/clip.md's FLOP counts),
the faster of ours and OpenBLAS's sgemm; the ceiling rate is the total FLOPs over the summed
time those products would take at those rates. A tower's fraction of the ceiling is its
nominal GFLOP per image (ViT-B/32 8.8, RN50 12.2) times images/s over that rate.

Since the machine's speed drifts over minutes, the tower and its GEMMs are timed interleaved
(`bench_clip ceiling`, ga_ceiling_*.json): tower pass T0, ceiling pass C0, T1, C1, ..., T(R);
round r's fraction compares C(r) with the mean of T(r) and T(r+1), and the report gives the
median over rounds with the min and max. Two ceilings, each from its own pass in C(r): weights
cached (ga_s, openblas_s: each shape repeated on one weight, which then sits in cache) and
weights streamed (ga_streamed_s, openblas_streamed_s: the tower's products in forward order, each
on its own weight, as a forward pass reads them); files without the streamed fields (or without
the cached ones) give only the other. Older result directories (no ga_ceiling_*.json) had
the image towers' GEMMs in a separate phase (ga_bench_gemm.json); they are still read, and the
report says that their fraction mixes phases minutes apart.
"""
import json
import os
import statistics
import sys

GOAL_CEILING = 0.90
GOAL_TEXT = 4.0
GOAL_MEMORY = 1.3
GOAL_LOAD = 0.1
NOMINAL_GFLOPS = {"ViT-B/32": 8.8, "RN50": 12.2, "RN50x4": 42.6, "ViT-L/14@336px": 381.9, "RN101": 19.5,
                  "RN50x16": 149.4, "RN50x64": 529.1, "ViT-B/16": 35.1, "ViT-L/14": 162.0}


def tag(name):
    return name.replace("/", "-").replace("@", "-")


def untag(t):
    for n in NOMINAL_GFLOPS:
        if tag(n) == t:
            return n
    return t


def read_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def seconds(b):
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
    return b["real_time"] * unit


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def ratio(a, b, nd=2):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.{nd}f}x"


def mark(ok):
    return "-" if ok is None else ("**pass**" if ok else "**MISS**")


# The ceiling passes of bench_clip ceiling: key -> (round fields for ours and OpenBLAS, words).
CEILING_KINDS = {"cached": ("ga_s", "openblas_s", "weights cached"),
                 "streamed": ("ga_streamed_s", "openblas_streamed_s", "weights streamed")}


def interleaved_rounds(c):
    """Per-round figures of one bench_clip ceiling case: round r pairs each ceiling pass of
    round r with the mean of tower passes r and r + 1 (the ones just before and after it).
    Returns per ceiling kind present ("cached", "streamed") the rounds, medians, min and max."""
    B, nominal = c["batch"], c["nominal_gflop_per_image"]
    flop = sum(sh["flop"] * sh["count"] for sh in c["shapes"])
    kinds = {}
    for kind, (f_ga, f_blas, _) in CEILING_KINDS.items():
        if not c["rounds"] or any(f_ga not in rd or f_blas not in rd for rd in c["rounds"]):
            continue
        rounds = []
        for r, rd in enumerate(c["rounds"]):
            tower_s = 0.5 * (c["tower_s"][r] + c["tower_s"][r + 1])
            best = ours = blas = 0.0
            for i, sh in enumerate(c["shapes"]):
                tg, tb = rd[f_ga][i], rd[f_blas][i]
                best += sh["count"] * min(tg, tb)
                ours += sh["count"] * tg
                blas += sh["count"] * tb
            tower_gflops = B * nominal / tower_s
            rounds.append({"tower_s": tower_s, "tower_gflops": tower_gflops, "ceiling": flop / best * 1e-9,
                           "ours_only": flop / ours * 1e-9, "openblas_only": flop / blas * 1e-9,
                           "fraction": tower_gflops / (flop / best * 1e-9)})
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        fr = [r["fraction"] for r in rounds]
        kinds[kind] = {"rounds": rounds, "median": med, "min": min(fr), "max": max(fr), "fields": (f_ga, f_blas)}
    ts = c["tower_s"]
    tower_gflops = [B * nominal / (0.5 * (ts[r] + ts[r + 1])) for r in range(len(c["rounds"]))]
    return {"kinds": kinds, "n": len(c["rounds"]), "tower_gflops": statistics.median(tower_gflops),
            "tower_ms_range": (1e3 * min(ts), 1e3 * max(ts)), "tower_reps": c.get("tower_reps"),
            "gemm_reps": c.get("gemm_reps"), "gemm_streamed_reps": c.get("gemm_streamed_reps"),
            "weight_mb": c.get("weight_mb_per_forward"), "wall_s": c.get("wall_s")}


def main():
    out_dir = sys.argv[1]
    machine = open(os.path.join(out_dir, "machine.txt")).read() if os.path.exists(
        os.path.join(out_dir, "machine.txt")) else ""
    load = read_jsonl(os.path.join(out_dir, "load.jsonl"))
    torch = read_jsonl(os.path.join(out_dir, "torch.jsonl"))
    tool = read_jsonl(os.path.join(out_dir, "ga_tool.jsonl"))
    bench = []
    for fn in sorted(os.listdir(out_dir)):
        if fn.startswith("ga_bench") and fn.endswith(".json"):
            bench += [b for b in json.load(open(os.path.join(out_dir, fn)))["benchmarks"]
                      if b.get("run_type", "iteration") == "iteration"]

    # ---- collect ----
    t_img, t_text, t_load, t_mem, env = {}, {}, {}, {}, {}
    for r in torch:
        if r.get("metric") == "environment":
            env = r
        elif r.get("metric") == "encode_image":
            t_img[(r["model"], r["batch"])] = r["per_second"]
        elif r.get("metric") == "encode_text":
            t_text[r["model"]] = r
        elif r.get("metric") == "load":
            t_load[r["model"]] = r["seconds"]
        elif r.get("metric") == "peak_rss":
            t_mem[r["model"]] = r
    g_img, g_text, g_text_full, g_load = {}, {}, {}, {}
    g_img_bf16, g_text_bf16, cos_bf16 = {}, {}, {}
    g_img_int8, g_text_int8, cos_int8 = {}, {}, {}
    gemm = {}  # tower -> shape index -> {"ga": rate, "openblas": rate, "flop", "count", "label"}
    for b in bench:
        parts = b["name"].split("/")
        kind = parts[0]
        if kind == "clip_image":
            g_img[(untag(parts[1]), int(parts[2]))] = int(parts[2]) / seconds(b)
        elif kind == "clip_text":
            g_text[untag(parts[1])] = 64 / seconds(b)
        elif kind == "clip_image_bf16":
            g_img_bf16[(untag(parts[1]), int(parts[2]))] = int(parts[2]) / seconds(b)
            cos_bf16[("image", untag(parts[1]), int(parts[2]))] = b.get("cos_vs_f32")
        elif kind == "clip_text_bf16":
            g_text_bf16[untag(parts[1])] = 64 / seconds(b)
            cos_bf16[("text", untag(parts[1]), 64)] = b.get("cos_vs_f32")
        elif kind == "clip_image_int8":
            g_img_int8[(untag(parts[1]), int(parts[2]))] = int(parts[2]) / seconds(b)
            cos_int8[("image", untag(parts[1]), int(parts[2]))] = b.get("cos_vs_f32")
        elif kind == "clip_text_int8":
            g_text_int8[untag(parts[1])] = 64 / seconds(b)
            cos_int8[("text", untag(parts[1]), 64)] = b.get("cos_vs_f32")
        elif kind == "clip_text_full":
            g_text_full[untag(parts[1])] = 64 / seconds(b)
        elif kind == "clip_load":
            g_load[untag(parts[1])] = seconds(b)
        elif kind == "gemm":
            tower, shape, impl = parts[1], parts[2], parts[3]
            e = gemm.setdefault(tower, {}).setdefault(shape, {"flop": b["flop"], "count": b["count"],
                                                              "label": b.get("label", "")})
            e[impl] = b["flop"] / seconds(b)
    # Interleaved tower / ceiling rounds (bench_clip ceiling): per (model, batch), the per-round
    # figures, and the per-shape rates (median time over rounds) for the shape table below.
    inter = {}
    for fn in sorted(os.listdir(out_dir)):
        if fn.startswith("ga_ceiling") and fn.endswith(".json"):
            for c in json.load(open(os.path.join(out_dir, fn)))["cases"]:
                x = interleaved_rounds(c)
                if not x["kinds"]:
                    continue
                inter[(c["model"], c["batch"])] = x
                # Per-shape rates from the cached pass where there is one, else the streamed one.
                f_ga, f_blas = (x["kinds"].get("cached") or x["kinds"]["streamed"])["fields"]
                shapes = gemm.setdefault(f"{tag(c['model'])}.image.b{c['batch']}", {})
                for i, sh in enumerate(c["shapes"]):
                    e = shapes.setdefault(f"{i}:{sh['label']}", {"flop": sh["flop"], "count": sh["count"], "label":
                                                                 f"batch={sh['batch']} M={sh['M']} K={sh['K']} N={sh['N']}"})
                    for impl, field in (("ga", f_ga), ("openblas", f_blas)):
                        e[impl] = sh["flop"] / statistics.median(r[field][i] for r in c["rounds"])
    g_mem = {r["model"]: r for r in tool if r.get("metric") == "peak_rss"}
    profiles = {}
    for r in tool:
        if r.get("metric") == "profile":
            profiles.setdefault((r["model"], r["what"], r["batch"]), []).append(r)

    def ceiling(tower):
        shapes = gemm.get(tower)
        if not shapes:
            return None
        total = t_best = t_ga = t_blas = 0.0
        for e in shapes.values():
            f = e["flop"] * e["count"]
            total += f
            rg, rb = e.get("ga"), e.get("openblas")
            best = max(x for x in (rg, rb) if x)
            t_best += f / best
            t_ga += f / rg if rg else float("inf")
            t_blas += f / rb if rb else float("inf")
        return {"best": total / t_best * 1e-9, "ga": total / t_ga * 1e-9, "openblas": total / t_blas * 1e-9,
                "gflop": total * 1e-9}

    L = []
    w = L.append
    w("# CLIP towers vs PyTorch: one run of bench/run_clip_bench.sh\n")
    w("```")
    w(machine.strip())
    if env:
        w(f"pytorch: {env.get('torch')} threads {env.get('threads')}, BLAS {env.get('config')} "
          f"({env.get('parallel')}), torch.mm 1024: {env.get('mm1024_gflops')} GFLOP/s")
    w("```\n")

    # ---- load conditions ----
    # Phases shorter than a second (writing the model files when they exist) divide a few
    # scheduler ticks by almost nothing: their foreign-core figure is noise, not load.
    worst = max((r["foreign_cores"] for r in load if float(r["wall_s"]) >= 1.0), default=0.0)
    worst_la = max((float(r["loadavg_before"].split()[0]) for r in load), default=0.0)
    high = "priority: high" in machine
    # Foreign cores are measured directly; the load average counts this run's own two threads
    # too (and lags by a minute), so it is shown but does not decide.
    prelim = worst > 0.1 or "quick: 1" in machine
    w("## Load during the run\n")
    w("Cores' worth of CPU used by other processes during each phase (all busy time minus this run's), and the "
      "1-minute load average when it started.")
    if prelim:
        w(f"\n**PRELIMINARY: other work used up to {worst:.2f} of the {os.cpu_count()} cores (load average up to "
          f"{worst_la:.1f})" + (", or --quick was given" if "quick: 1" in machine else "") +
          "; with 2 threads on 2 cores foreign load stalls OpenMP barriers and shares the caches, so these figures "
          "are low for both sides" + (" (this run had --priority high, which keeps most of the CPU for it, "
                                      "but not the caches)" if high else "") + ".**\n")
    w("\n| phase | wall s | own CPU s | foreign cores | loadavg before |\n|---|---|---|---|---|")
    for r in load:
        w(f"| {r['phase']} | {r['wall_s']} | {r['own_cpu_s']} | {r['foreign_cores']:.2f} | {r['loadavg_before']} |")
    w("")

    # ---- throughput ----
    w("## Throughput, f32, 2 threads\n")
    w("| what | ours /s | PyTorch /s | ours / PyTorch |\n|---|---|---|---|")
    for (m, b) in sorted(set(g_img) | set(t_img), key=lambda k: (list(NOMINAL_GFLOPS).index(k[0]), k[1])):
        gi, ti = g_img.get((m, b)), t_img.get((m, b))
        w(f"| {m} encode_image, batch {b} (images/s) | {fmt(gi, 2)} | {fmt(ti, 2)} | {ratio(gi, ti)} |")
    for m in sorted(set(g_text) | set(t_text)):
        tt = t_text.get(m, {}).get("per_second")
        w(f"| {m} encode_text, 64 prompts (texts/s) | {fmt(g_text.get(m))} | {fmt(tt)} | {ratio(g_text.get(m), tt)} |")
        if m in g_text_full:
            w(f"| {m} encode_text, 64 prompts, all 77 positions (texts/s) | {fmt(g_text_full.get(m))} | {fmt(tt)} | "
              f"{ratio(g_text_full.get(m), tt)} |")
    w("")
    if t_text:
        eot = next(iter(t_text.values())).get("max_eot")
        w(f"Prompts: \"a photo of a {{class}}.\" over the first 64 Food-101 classes (bench/clip_classes.txt); the "
          f"last EOT sits at position {eot}, so our default path computes {eot + 1 if eot is not None else '?'} of "
          "77 positions; PyTorch (OpenAI's code) computes all 77.\n")

    # ---- reduced precision ----
    for label, flag, desc, g_i, g_t, cs in [
            ("bf16", "WeightMode::Bf16 (`--bf16`)",
             "Product weights rounded to bf16 at load, inputs rounded to bf16 in each product, f32 accumulation "
             "(MixedPrecision::Medium).", g_img_bf16, g_text_bf16, cos_bf16),
            ("int8", "WeightMode::Int8 (`--int8`)",
             "Product weights quantized to 7-bit integers per output channel at load, inputs per row (per image "
             "for a convolution) to 7 bits in the image towers and 8 bits in the text tower, exact int32 sums.",
             g_img_int8, g_text_int8, cos_int8)]:
        if not (g_i or g_t):
            continue
        w(f"## Reduced precision: {flag}, 2 threads\n")
        w(desc + " The PyTorch column is its f32 run. cos_vs_f32: the smallest cosine between "
          f"a row of our {label} embeddings and our f32 ones on the same random input.\n")
        w(f"| what | ours {label} /s | ours f32 /s | PyTorch f32 /s | {label} / PyTorch | cos_vs_f32 |\n"
          "|---|---|---|---|---|---|")
        for (m, b) in sorted(g_i, key=lambda k: (list(NOMINAL_GFLOPS).index(k[0]), k[1])):
            gb, gi, ti = g_i[(m, b)], g_img.get((m, b)), t_img.get((m, b))
            c = cs.get(("image", m, b))
            w(f"| {m} encode_image, batch {b} (images/s) | {fmt(gb, 2)} | {fmt(gi, 2)} | {fmt(ti, 2)} | "
              f"{ratio(gb, ti)} | {fmt(c, 6)} |")
        for m in sorted(g_t):
            tt = t_text.get(m, {}).get("per_second")
            c = cs.get(("text", m, 64))
            w(f"| {m} encode_text, 64 prompts (texts/s) | {fmt(g_t[m])} | {fmt(g_text.get(m))} | {fmt(tt)} | "
              f"{ratio(g_t[m], tt)} | {fmt(c, 6)} |")
        w("")

    # ---- ceiling ----
    w("## Image towers against the matrix-product ceiling\n")
    w("Ceiling: at each GEMM shape of the tower, the faster of ours and OpenBLAS sgemm (FLOP-weighted "
      "harmonic mean). Tower GFLOP/s = nominal GFLOP per image x images/s.\n")
    ceil_res = {}  # (model, batch) -> (median, min, max) fraction, weights cached
    ceil_res_streamed = {}  # the same against the streamed-weight ceiling
    if inter:
        any_case = next(iter(inter.values()))
        kinds = [k for k in CEILING_KINDS if any(k in x["kinds"] for x in inter.values())]
        mb = {m: x["weight_mb"] for (m, b), x in inter.items() if x.get("weight_mb") and b == 1}
        w("Measured interleaved, so that the machine's drift (5-45% over minutes on this VM) cancels: "
          "`bench_clip ceiling` alternates a tower pass (encode_image, repeated to about a second) and the "
          "ceiling passes (every GEMM shape of the tower, ours then OpenBLAS, each pass about a second), "
          "T0 C0 T1 C1 ... T(R). Round r's fraction = tower GFLOP/s over the mean of the tower passes just "
          "before and after ceiling passes r, divided by that pass's ceiling GFLOP/s. The table gives the median "
          f"over the {any_case['n']} rounds and the smallest and largest round; the GFLOP/s columns are medians "
          "over rounds too. PyTorch's fraction = ours x (PyTorch images/s / ours images/s) from the throughput "
          "table, whose two figures were taken in adjacent phases.\n")
        if "cached" in kinds:
            w("- **Weights cached**: each shape's count x reps calls run in a row on one weight, which then sits "
              "in cache. A forward pass reads each of its weights once, so where reading the weight bounds a "
              "product (few activation rows: ViT at batch 1) this ceiling is above what a forward pass can reach.")
        if "streamed" in kinds:
            w("- **Weights streamed**: the tower's products in forward order (each shape's count calls in a row), "
              "every call on its own weight, so each weight is read once per pass, as a forward pass reads it" +
              (" (" + ", ".join(f"{m} {v:.0f} MB" for m, v in mb.items()) + " of weights per forward)" if mb else "") +
              "; all of ours, then all of OpenBLAS's.")
        w("")
        head = "| tower | batch |"
        rule = "|---|---|"
        for k in kinds:
            words = CEILING_KINDS[k][2]
            head += (f" ours % of ceiling, {words}, median (min-max) | ceiling GFLOP/s, {words} "
                     "(ours only / OpenBLAS only) |")
            rule += "---|---|"
        head += " ours GFLOP/s | tower ms per forward, passes min-max | PyTorch % of ceiling" + (
            " (" + " / ".join(CEILING_KINDS[k][2].split()[1] for k in kinds) + ")" if len(kinds) > 1 else "") + " |"
        rule += "---|---|---|"
        w(head)
        w(rule)
        for (m, b) in sorted(inter, key=lambda k: (list(NOMINAL_GFLOPS).index(k[0]), k[1])):
            x = inter[(m, b)]
            gi, ti = g_img.get((m, b)), t_img.get((m, b))
            row = f"| {m} | {b} |"
            torch_fr = []
            for k in kinds:
                y = x["kinds"].get(k)
                if not y:
                    row += " - | - |"
                    torch_fr.append("-")
                    continue
                md = y["median"]
                (ceil_res if k == "cached" else ceil_res_streamed)[(m, b)] = (md["fraction"], y["min"], y["max"])
                row += (f" **{100 * md['fraction']:.1f}%** ({100 * y['min']:.1f}-{100 * y['max']:.1f}) | "
                        f"{md['ceiling']:.1f} ({md['ours_only']:.1f} / {md['openblas_only']:.1f}) |")
                tf = md["fraction"] * ti / gi if gi and ti else None
                torch_fr.append(fmt(100 * tf) + "%" if tf else "-")
            row += (f" {x['tower_gflops']:.1f} | {x['tower_ms_range'][0]:.1f}-{x['tower_ms_range'][1]:.1f} | "
                    f"{' / '.join(torch_fr)} |")
            w(row)
        w("")
        w("Per round:\n")
        w("| tower | batch | round | tower ms | ours GFLOP/s |" +
          "".join(f" ceiling GFLOP/s, {CEILING_KINDS[k][2]} | % of ceiling, {CEILING_KINDS[k][2]} |" for k in kinds) +
          "\n|---|---|---|---|---|" + "---|---|" * len(kinds))
        for (m, b), x in sorted(inter.items(), key=lambda kv: (list(NOMINAL_GFLOPS).index(kv[0][0]), kv[0][1])):
            for r in range(x["n"]):
                rd0 = next(iter(x["kinds"].values()))["rounds"][r]
                row = f"| {m} | {b} | {r} | {1e3 * rd0['tower_s']:.1f} | {rd0['tower_gflops']:.1f} |"
                for k in kinds:
                    y = x["kinds"].get(k)
                    row += (f" {y['rounds'][r]['ceiling']:.1f} | {100 * y['rounds'][r]['fraction']:.1f}% |" if y
                            else " - | - |")
                w(row)
        w("")
    # Older result directories: the image towers' GEMMs in their own phase, minutes after the towers.
    old_rows = []
    for m in ("ViT-B/32", "RN50"):
        for b in (1, 16):
            if (m, b) in inter:
                continue
            c = ceiling(f"{tag(m)}.image.b{b}")
            if not c:
                continue
            gi, ti = g_img.get((m, b)), t_img.get((m, b))
            gg = gi * NOMINAL_GFLOPS[m] if gi else None
            tg = ti * NOMINAL_GFLOPS[m] if ti else None
            f = (gg / c["best"]) if gg else None
            ceil_res[(m, b)] = (f, None, None)
            old_rows.append(f"| {m} | {b} | {c['best']:.1f} | {c['ga']:.1f} / {c['openblas']:.1f} | {fmt(gg)} | "
                            f"{fmt(100 * f if f else None)}% | {fmt(tg)} | {fmt(100 * tg / c['best'] if tg else None)}% |")
    if old_rows:
        w("Not interleaved (a result directory from before `bench_clip ceiling`): the towers and their GEMMs "
          "were timed in phases minutes apart, so these fractions move with the machine's drift.\n")
        w("| tower | batch | ceiling GFLOP/s | (ours only / OpenBLAS only) | ours GFLOP/s | ours % of ceiling | "
          "PyTorch GFLOP/s | PyTorch % of ceiling |\n|---|---|---|---|---|---|---|---|")
        L.extend(old_rows)
        w("")
    text_ceilings = [(t, ceiling(t)) for t in sorted(gemm) if ".text." in t]
    if text_ceilings:
        w("Text tower GEMM ceilings (batch 64): " + "; ".join(
            f"{t.split('.text.')[1]}: {c['best']:.1f} GFLOP/s over {c['gflop']:.1f} GFLOP" for t, c in text_ceilings) + ".\n")
    # The worst shapes: where ours is slowest relative to OpenBLAS.
    rows = []
    for tower, shapes in gemm.items():
        for s, e in shapes.items():
            if e.get("ga") and e.get("openblas"):
                rows.append((e["ga"] / e["openblas"], tower, s, e))
    if rows:
        rows.sort(key=lambda r: -r[3]["flop"] * r[3]["count"] * (1 / r[3]["ga"] - 1 / max(r[3]["ga"], r[3]["openblas"])))
        w("GEMM shapes where ours loses most time to OpenBLAS (per forward" +
          ("; image towers' shapes: median time over the interleaved rounds" if inter else "") + "):\n")
        w("| tower | shape | ours GFLOP/s | OpenBLAS GFLOP/s | ours / OpenBLAS | x per forward |\n|---|---|---|---|---|---|")
        for r, tower, s, e in rows[:10]:
            w(f"| {tower} | {s} ({e['label']}) | {e['ga'] * 1e-9:.1f} | {e['openblas'] * 1e-9:.1f} | {r:.2f} | "
              f"{int(e['count'])} |")
        w("")

    # ---- memory and load ----
    w("## Peak memory and load time\n")
    w("Peak RSS (ru_maxrss) of a fresh process that loads the model, encodes 1 image and 64 prompts; "
      "weights = every tensor in f32. PyTorch's process includes the interpreter and torch itself "
      "(its RSS before loading is given).\n")
    w("| model | weights MB | ours peak MB | ours / weights | PyTorch peak MB (before load) | PyTorch / weights | "
      "ours load s | PyTorch load s |\n|---|---|---|---|---|---|---|---|")
    for m in NOMINAL_GFLOPS:
        if m not in g_mem and m not in t_mem:
            continue
        gm, tm = g_mem.get(m, {}), t_mem.get(m, {})
        wb = gm.get("weights_f32_bytes") or tm.get("weights_f32_bytes")
        w(f"| {m} | {wb / 1e6:.0f} | {fmt(gm.get('bytes', 0) / 1e6 if gm else None, 0)} | {fmt(gm.get('ratio'), 2)} | "
          f"{fmt(tm.get('bytes', 0) / 1e6 if tm else None, 0)} ({fmt(tm.get('baseline_bytes', 0) / 1e6 if tm else None, 0)}) | "
          f"{fmt(tm.get('ratio'), 2)} | {fmt(g_load.get(m), 3)} | {fmt(t_load.get(m), 2)} |")
    w("")

    # ---- goals ----
    w("## Goals (issue 3, point 8)\n")
    w("| goal | case | figure | result |\n|---|---|---|---|")
    for (m, b), (f, lo, hi) in sorted(ceil_res.items()):
        spread = f" (rounds {100 * lo:.1f}-{100 * hi:.1f}%)" if lo is not None else " (not interleaved)"
        w(f"| image tower >= 90% of ceiling | {m} batch {b} | {fmt(100 * f if f else None)}%{spread} | "
          f"{mark(f >= GOAL_CEILING if f else None)} |")
    for (m, b), (f, lo, hi) in sorted(ceil_res_streamed.items()):
        w(f"| image tower >= 90% of the streamed-weight ceiling | {m} batch {b} | {100 * f:.1f}% "
          f"(rounds {100 * lo:.1f}-{100 * hi:.1f}%) | {mark(f >= GOAL_CEILING)} |")
    for m in sorted(set(g_text) & set(t_text)):
        r = g_text[m] / t_text[m]["per_second"]
        w(f"| text >= 4x PyTorch | {m}, 64 prompts | {r:.2f}x | {mark(r >= GOAL_TEXT)} |")
    for m, gm in g_mem.items():
        w(f"| peak memory < 1.3x weights | {m} | {gm['ratio']:.2f}x | {mark(gm['ratio'] < GOAL_MEMORY)} |")
    for m, s in g_load.items():
        w(f"| load < 0.1 s (warm cache) | {m} | {s:.3f} s | {mark(s < GOAL_LOAD)} |")
    # The goal is met where the faster reduced-precision path reaches 2x.
    lowp_goal = []
    for k in sorted(set(g_img_bf16) | set(g_img_int8)):
        if k not in t_img:
            continue
        best = max(((g_img_bf16.get(k, 0), "bf16"), (g_img_int8.get(k, 0), "int8")))
        lowp_goal.append((k, best[0] / t_img[k], best[1]))
    for (m, b), r, label in lowp_goal:
        w(f"| reduced precision >= 2x PyTorch f32 | {m} batch {b}, {label} | {r:.2f}x | {mark(r >= 2.0)} |")
    if not lowp_goal:
        w("| reduced precision >= 2x PyTorch f32 | - | not measured | - |")
    w("")

    # ---- profiles ----
    if profiles:
        w("## Where our time goes (per-kernel profile, bench_clip_tool profile)\n")
        for (m, what, b), rs in profiles.items():
            rs = sorted(rs, key=lambda r: -r["seconds"])
            total = rs[0]["forward_seconds"]
            w(f"**{m} {what}, batch {b}: {total * 1e3:.1f} ms per forward**\n")
            w("| kernel | ms | share | GFLOP/s |\n|---|---|---|---|")
            for r in rs:
                if r["fraction"] < 0.005:
                    continue
                rate = r["gflops"] / r["seconds"] if r["gflops"] and r["seconds"] > 0 else None
                w(f"| {r['kernel']} | {r['seconds'] * 1e3:.2f} | {100 * r['fraction']:.1f}% | {fmt(rate)} |")
            w("")
    print("\n".join(L))


if __name__ == "__main__":
    main()
