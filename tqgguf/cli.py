"""The `tqgguf` command line: one sub-command per verb; errors are one line on stderr, exit 1."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys

from pathlib import Path

import click

from . import assets, blocks, calibrate, codebook, metadata, prepare as prep
from .harness import bench as bn, compare as cmp, llama as ll, recall as rc
from .gguf_file import GGUFError, read_header


class UserError(click.ClickException):
    """Printed as `tqgguf: error: ...`, exit code 1."""

    def show(self, file=None):
        click.echo(f"tqgguf: error: {self.message}", err=True)


def one_line_errors(fn):
    """Turn the package's own refusals into one-line errors instead of tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (prep.PrepareError, GGUFError, metadata.MetadataError, ll.LlamaError, cmp.CompareError,
                assets.AssetError, calibrate.StatsError) as e:
            raise UserError(str(e)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tqgguf")
def main():
    """TurboQuant KV-cache compression for llama.cpp.

    \b
    tqgguf prepare MODEL.gguf     add TurboQuant metadata (rotation seeds, outliers, K centers)
    tqgguf calibrate MODEL.gguf   K/V/Q statistics from llama.cpp, for prepare --stats
    tqgguf inspect MODEL.gguf     show it, with the bits per value each TQ type costs
    tqgguf build [--cuda]         build the patched llama.cpp (cached)
    tqgguf compare MODEL.gguf     PPL / KLD / memory of every KV-cache type, side by side
    tqgguf recall MODEL.gguf      needle-in-a-haystack recall per KV-cache type (llama-passkey)
    """


# what a prepare stops on (with its temp file removed), as a shell would stop it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def temp_files_removed_on_signals(what: str):
    """While on, SIGINT, SIGTERM and SIGHUP remove the unfinished temp file, print one line
    and end the process by the same signal (exit status 128 + its number in a shell).
    Signals ignored at start (nohup) stay ignored."""

    def stop(signum, frame):
        calibrate.terminate_live()
        prep.remove_live_temps()
        with contextlib.suppress(Exception):
            click.echo(("\n" if sys.stderr.isatty() else "") +
                       f"tqgguf: error: interrupted by {signal.Signals(signum).name}; {what}", err=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # not reached

    old = {s: signal.signal(s, stop) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(),
              help="Where to write the prepared model [default: MODEL.tq.gguf beside the input]. If OUTPUT "
                   "is a symbolic link, the file it points to is replaced and the link kept.")
@click.option("--in-place", is_flag=True, help="Rewrite MODEL itself (atomically) instead of a copy. If MODEL "
                                               "is a symbolic link, the file it points to is rewritten and the "
                                               "link kept.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=prep.DEFAULT_SEED, show_default=True,
              help="Master seed of every rotation; per-layer K and V seeds derive from it.")
@click.option("--types", "types_text", default="tq2_5,tq3_5", show_default=True,
              help="Comma-separated TQ cache types to prepare codebooks for.")
@click.option("--center-k/--no-center-k", "center_k", default=True, show_default=True,
              help="Store each K head's mean row (turboquant.k.center) so the cache keeps k - mu, calibrated "
                   "through llama.cpp itself (llama-tq-calibrate, any architecture it runs). Without a built "
                   "llama-tq-calibrate (`tqgguf build`, ~10 minutes once on 2 cores), --llama-bin or --stats, "
                   "prepare says so in one line and writes data-free metadata. docs/calibration.md.")
@click.option("--precondition/--no-precondition", "precondition", default=True, show_default=True,
              help="Store per-head K and V preconditioners (turboquant.{k,v}.precond) from the same calibration "
                   "and the model's output projections: the cache's rounding goes where the queries and W_o "
                   "look least (tqgguf/precondition.py, docs/ablation.md).")
@click.option("--calibration", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Text for the K centers [default: the packaged 12 KB of Django's reference docs]; needs "
                   "llama-tq-calibrate (refused without it).")
@click.option("--calibration-tokens", type=click.IntRange(prep.MIN_CENTER_TOKENS), default=prep.CENTER_TOKENS,
              show_default=True, help="Tokens of the calibration text the K centers average over.")
@click.option("--calibration-positions", type=click.IntRange(0), default=prep.CALIBRATION_POSITIONS,
              show_default=True, help="Replay the calibration tokens at later start positions so that the statistics "
                                      "span this many positions (K is stored after RoPE: calibrate for the context "
                                      "you run; 0: the tokens once, from position 0).")
@click.option("--exact-tokens", type=click.IntRange(0, metadata.K_EXACT_MAX), default=prep.K_EXACT_TOKENS,
              show_default=True, help="Keep the K of each sequence's first tokens (the attention sink) unquantized "
                                      "beside the TQ cache (turboquant.k.exact_tokens; 0: none). docs/ablation.md.")
@click.option("--window", "window_tokens", type=click.IntRange(0, metadata.WINDOW_MAX), default=prep.WINDOW_TOKENS,
              show_default=True, help="Let each query read the K and V of its last this many tokens unquantized, from "
                                      "f16 rows kept beside the TQ cache (turboquant.window_tokens; 0: none; needs "
                                      "flash attention). docs/ablation.md.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Take the K centers from a statistics file made elsewhere (`tqgguf calibrate` or "
                   "llama-tq-calibrate, e.g. on a GPU machine) instead of running the model here.")
@click.option("--llama-bin", type=click.Path(file_okay=False), default=None,
              help="bin/ folder with llama-tq-calibrate [default: $TQGGUF_LLAMA_BIN, else the cached "
                   "scripts/build-llama.sh build].")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the calibration "
                                                                      "[default: llama.cpp's].")
@click.option("--ngl", type=click.IntRange(0), default=0, show_default=True,
              help="Layers on the GPU for the calibration (a GPU build of llama.cpp).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def prepare(model, output, in_place, seed, types_text, center_k, precondition, calibration, calibration_tokens,
            calibration_positions, exact_tokens, window_tokens, stats_file, llama_bin, threads, ngl, quiet):
    """Write a copy of MODEL with the TurboQuant metadata the patched llama.cpp needs.

    Tensors and all other keys are copied byte for byte; existing turboquant.* keys
    are replaced, so preparing twice gives the same bytes. Outlier channels are
    chosen data-free from the model's K/V projection weights (docs/metadata.md);
    the K centers come from running the model in llama.cpp over a calibration text
    (llama-tq-calibrate; --stats: from a file; --no-center-k: none).

    \b
    Where llama-tq-calibrate is not built yet and neither --calibration nor --stats
    is given, prepare writes data-free metadata and says so in one line: run
    `tqgguf build` once (about 10 minutes on 2 cores) and prepare again for the
    calibrated K centers (30-80% lower KLD, docs/ablation.md).

    \b
    The output appears only when complete: prepare writes a temp file beside it,
    .tqgguf-HOST-PID-XXXXXXXX.part, created before any work (so an output that
    cannot be written is refused at once), and renames it when done. SIGINT,
    SIGTERM and SIGHUP remove it; one that a killed prepare left is removed by
    the next prepare into the same folder.
    """
    types = prep.parse_types(types_text)
    if stats_file and calibration:
        raise UserError("--stats and --calibration both say where the K centers come from; give one")
    calibrated = center_k or precondition
    if not calibrated and (stats_file or calibration):
        raise UserError(f"--no-center-k --no-precondition use no statistics; drop {'--stats' if stats_file else '--calibration'}")
    dst = prep.resolve_output(model, output, in_place)
    prep.read_model_header(model)  # not a GGUF: refused before looking for llama.cpp
    tool = None
    if calibrated and not stats_file:
        tool = ll.find_built(calibrate.TOOL, llama_bin)
        if tool is None and calibration:
            raise UserError(f"--calibration needs {calibrate.TOOL}, which is not built: run `tqgguf build` "
                            "(once; about 10 minutes on 2 cores), or pass --llama-bin DIR or --stats FILE")

    @contextlib.contextmanager
    def bar(label, length):
        # the calibration can refuse (llama.cpp cannot run the model, the text is too short): off a
        # terminal its label, which a progress bar prints at once, stays out of a refusal's one line
        hidden = quiet or label.startswith("calibrating") and not sys.stderr.isatty()
        with click.progressbar(length=length, label=label, file=sys.stderr, hidden=hidden) as b:
            yield b.update

    # the temp file first: an output that cannot be written is refused before any work
    unchanged = f"{dst} is unchanged" if os.path.lexists(dst) else f"{dst} was not written"
    with temp_files_removed_on_signals(unchanged), prep.TempOutput(dst) as out:
        if out.removed and not quiet:
            mib = sum(n for _, n in out.removed) / 2**20
            click.echo(f"tqgguf: note: removed {len(out.removed)} temp file(s) that killed prepares left in "
                       f"{out.folder} ({mib:.1f} MiB)", err=True)
        cal = None
        if stats_file:
            cal = prep.Calibration(stats=stats_file)
        elif tool is not None:
            text = Path(calibration or prep.CALIBRATION_TEXT).read_text(errors="replace")
            cal = prep.Calibration(text=text, tool=tool, n_tokens=calibration_tokens, threads=threads, ngl=ngl,
                                   positions=calibration_positions)
        try:
            prep.prepare_file(model, out, seed, types, bar, calibration=cal, center=center_k, precondition=precondition,
                              exact_tokens=exact_tokens, window_tokens=window_tokens)
        except prep.CalibrationError as e:
            raise UserError(f"--stats: {e}" if stats_file else f"--calibration: {e}" if calibration else str(e)) from None
    if calibrated and cal is None:  # after the work: a refusal stays the only line
        click.echo(f"tqgguf: note: no K centering or preconditioning ({calibrate.TOOL} is not built: run `tqgguf build` once, "
                   "about 10 minutes on 2 cores, and prepare again; or pass --llama-bin DIR or --stats FILE); "
                   "the metadata stays data-free", err=True)
    click.echo(dst)


@main.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Statistics file to write.")
@click.option("--calibration", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Text to run [default: the packaged 12 KB of Django's reference docs].")
@click.option("--calibration-tokens", type=click.IntRange(prep.MIN_CENTER_TOKENS), default=prep.CENTER_TOKENS,
              show_default=True)
@click.option("--calibration-positions", type=click.IntRange(0), default=prep.CALIBRATION_POSITIONS,
              show_default=True, help="Positions the statistics span (the tokens replayed at later starts).")
@click.option("--llama-bin", type=click.Path(file_okay=False), default=None,
              help="bin/ folder with llama-tq-calibrate [default: $TQGGUF_LLAMA_BIN, else the cached build, "
                   "built if needed].")
@click.option("--threads", type=click.IntRange(1), default=None)
@click.option("--ngl", type=click.IntRange(0), default=0, show_default=True)
@one_line_errors
def calibrate_cmd(model, output, calibration, calibration_tokens, calibration_positions, llama_bin, threads, ngl):
    """Run MODEL in llama.cpp over a text and write its K, V and Q statistics (per layer and KV
    head: mean and covariance) to OUTPUT, for `tqgguf prepare --stats` (docs/calibration.md)."""
    prep.read_model_header(model)
    tool = ll.find_built(calibrate.TOOL, llama_bin) or ll.find_bin(calibrate.TOOL, None)
    text = Path(calibration or prep.CALIBRATION_TEXT)
    try:
        calibrate.run(tool, model, text, output, n_tokens=calibration_tokens, threads=threads, ngl=ngl,
                      min_tokens=prep.MIN_CENTER_TOKENS, positions=calibration_positions)
    except calibrate.ToolError as e:
        raise UserError(e.why) from None
    click.echo(output)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@click.option("--outliers", "show_outliers", is_flag=True, help="List every head's outlier channels.")
@one_line_errors
def inspect(model, as_json, show_outliers):
    """Print MODEL's TurboQuant metadata and what each TQ type costs for it."""
    hdr = read_header(model)
    meta = metadata.read(hdr)
    cost = {t: blocks.layout(t).bits_per_value for t in meta.types}
    dk, dv = meta.head_dim["k"], meta.head_dim["v"]
    # what llama.cpp allocates beside the cache for these transforms (per context): K's, Q's own
    # where K is preconditioned, V's and its inverse (f16), and K's centering offset (f32)
    side = meta.n_layer * meta.n_kv_head * (2 * (dk * dk * (2 if "k" in meta.precond else 1) + 2 * dv * dv)
                                            + 4 * (dk if meta.k_center is not None else 0))
    info = {
        "format_version": hdr.get(metadata.K_VERSION),
        "seed": meta.seed,
        "types": meta.types,
        "layers": meta.n_layer,
        "kv_heads": meta.n_kv_head,
        "head_dim": meta.head_dim,
        "outlier_method": meta.outlier_method,
        "bits_per_value": cost,
        "k_center": meta.k_center is not None,
        "preconditioners": sorted(meta.precond),
        "calibration_positions": meta.calibration_positions,
        "k_exact_tokens": meta.k_exact_tokens,
        "window_tokens": meta.window_tokens,
        "transforms_mib": round(side / 2**20, 3),
        "checksum": f"{hdr.get(metadata.K_CHECKSUM):#018x}",
        # fixed by the block layout (ggml computes the same), so not in the metadata: shown for reference
        "codebooks": {f"d{d}.b{b}": [float(x) for x in codebook.scaled_f32(d, b)]
                      for d, b in sorted({(blocks.HI, blocks.layout(t).hi_bits) for t in meta.types}
                                         | {(blocks.LO, blocks.layout(t).lo_bits) for t in meta.types})},
        "layer_seeds": {k: [int(x) for x in v] for k, v in meta.layer_seeds.items()},
    }
    if show_outliers or as_json:
        info["outliers"] = {k: v.tolist() for k, v in meta.outliers.items()}
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(f"turboquant format {info['format_version']}, seed {meta.seed:#x}, outliers from {meta.outlier_method}, "
               f"checksum {info['checksum']}")
    click.echo(f"{meta.n_layer} layers x {meta.n_kv_head} KV heads, head size K {meta.head_dim['k']}, V {meta.head_dim['v']}")
    click.echo(f"K centering {'on' if meta.k_center is not None else 'off'}, preconditioners: "
               f"{', '.join(k.upper() for k in sorted(meta.precond)) or 'none'}; the transforms take "
               f"{side / 2**20:.2f} MiB beside each context's cache")
    if meta.calibration_positions:
        click.echo(f"calibrated for a context of {meta.calibration_positions} positions "
                   "(prepare --calibration-positions; llama.cpp warns at a context 2x shorter or longer)")
    if meta.k_exact_tokens:
        click.echo(f"the K of each sequence's first {meta.k_exact_tokens} token(s) is kept unquantized beside the cache")
    if meta.window_tokens:
        click.echo(f"each query reads the K and V of its last {meta.window_tokens} token(s) unquantized, "
                   "from f16 rows kept beside the cache")
    for t in meta.types:
        lay = blocks.layout(t)
        click.echo(f"  {t}: {blocks.HI} outlier slots x {lay.hi_bits} bits + {blocks.LO} x {lay.lo_bits} bits "
                   f"+ 2 f16 scales per {blocks.BLOCK} values = {lay.bits_per_value:.3f} bits/value "
                   f"({16 / lay.bits_per_value:.2f}x smaller than f16)")
    for name, c in info["codebooks"].items():
        click.echo(f"  codebook {name} (built in): " + " ".join(f"{x:+.4f}" for x in c))
    for kind in metadata.KINDS:
        seeds = meta.layer_seeds[kind]
        click.echo(f"  {kind} layer seeds: {seeds[0]:#018x} ... ({len(seeds)})")
        o = meta.outliers[kind]
        if show_outliers:
            for layer in range(meta.n_layer):
                for h in range(meta.n_kv_head):
                    click.echo(f"  {kind} layer {layer} head {h}: {' '.join(map(str, o[layer, h]))}")
        else:
            click.echo(f"  {kind} outliers layer 0 head 0: {' '.join(map(str, o[0, 0]))}")


def require_prepared(model: str, configs: list) -> None:
    """Refuse TQ configurations on a model without TurboQuant metadata, before any run."""
    if any(c.uses_tq for c in configs) and not metadata.has_metadata(prep.read_model_header(model)):
        raise UserError(f"{model} has no TurboQuant metadata, needed by the TQ configurations: "
                        f"run `tqgguf prepare {model}` and use the prepared copy")


def note_calibrated_context(model: str, configs: list, ctx: int) -> None:
    """One line where TQ configurations run at a context 2x shorter or longer than the one the
    model was calibrated for: their figures then measure the mismatch too (docs/calibration.md)."""
    hdr = prep.read_model_header(model)
    if not any(c.uses_tq for c in configs) or not metadata.has_metadata(hdr):
        return
    cal = metadata.read(hdr).calibration_positions
    if cal and (ctx >= 2 * cal or 2 * ctx <= cal):
        click.echo(f"tqgguf: note: {model} was calibrated for a context of {cal} positions, this comparison "
                   f"runs {ctx}: `tqgguf prepare --calibration-positions {ctx}` fits it", err=True)


@main.command()
@click.option("--cuda", is_flag=True, help="Build the CUDA backend too.")
@one_line_errors
def build(cuda):
    """Build the patched llama.cpp (scripts/build-llama.sh; cached) and print its bin/ folder."""
    click.echo(ll.build(cuda=cuda))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False), required=False)
@click.option("--text", type=click.Path(dir_okay=False, exists=True),
              help="Evaluation text [default: the pinned Django docs text, fetched and cached].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/compare", show_default=True,
              help="Receives results.md, results.json, pareto.png and runs/ (logs, resumable).")
@click.option("--configs", default=",".join(cmp.DEFAULT_CONFIGS), show_default=True,
              help="Comma-separated cache configurations: TYPE, K/V, or TYPE-norot (upstream rotation off).")
@click.option("--ctx", type=click.IntRange(min=16), default=512, show_default=True,
              help="Context of each chunk; 4096 is the published tables' headline, 512 their second.")
@click.option("--chunks", type=click.IntRange(min=1), default=None,
              help=f"Chunks of CTX tokens [default: {cmp.DEFAULT_TOKENS} tokens' worth: 40 at c=512, 5 at c=4096].")
@click.option("--threads", type=int, default=None, help="Threads for llama.cpp [default: its own].")
@click.option("--ngl", type=int, default=0, show_default=True, help="Layers on the GPU.")
@click.option("--llama-bin", type=click.Path(file_okay=False), default=None,
              help="bin/ folder of the patched llama.cpp [default: the cached build, built if needed].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def compare(model, text, out_dir, configs, ctx, chunks, threads, ngl, llama_bin, quiet):
    """Compare every KV-cache type on MODEL [default: SmolLM2-135M-Instruct Q4_1, prepared].

    TQ configurations need a prepared model (`tqgguf prepare`); the default model is
    fetched and prepared automatically. Bits per value are measured: llama.cpp's own
    KV-cache allocation at this context (K, V and side buffers) over the values it holds;
    a one-line warning names a type whose K or V bits differ from the type table.
    """
    import platform
    try:
        configs = [cmp.parse_config(c.strip()) for c in configs.split(",") if c.strip()]
    except ValueError as e:
        raise UserError(str(e)) from None
    chunks = chunks or cmp.default_chunks(ctx)
    if model is None:
        src = assets.default_model()
        model = str(Path(out_dir) / "model" / (src.stem + ".tq.gguf"))
        if not Path(model).exists():
            Path(model).parent.mkdir(parents=True, exist_ok=True)
            tool = ll.find_bin(calibrate.TOOL, llama_bin)
            prep.prepare_file(str(src), model, prep.DEFAULT_SEED, sorted(blocks.TYPES),
                              calibration=prep.Calibration(text=prep.CALIBRATION_TEXT.read_text(), tool=tool,
                                                           threads=threads, ngl=ngl, positions=ctx))
    require_prepared(model, configs)
    text = Path(text) if text else assets.eval_text()
    binary = ll.find_bin("llama-perplexity", llama_bin)
    note_calibrated_context(model, configs, ctx)
    s = cmp.Settings(ctx=ctx, chunks=chunks, threads=threads, ngl=ngl)
    out = Path(out_dir)
    with click.progressbar(length=len(configs) + 1, label="llama-perplexity runs", file=sys.stderr, hidden=quiet,
                           item_show_func=lambda n: n) as bar:
        records = cmp.compare(Path(model), text, out, configs, s, binary,
                              progress=lambda name: bar.update(1, name))
    meta = {"model": str(model), "text": str(text), "ctx": ctx, "chunks": chunks, "flash_attn": s.flash_attn,
            "ngl": ngl, "threads": threads, "llama_bin": str(binary.parent),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
    cmp.write_reports(records, out, meta)
    click.echo((out / "results.md").read_text())
    for r in records:
        if r.get("bits_warning"):
            click.echo(f"tqgguf: warning: {r['bits_warning']}", err=True)
    failed = [r["config"] for r in records if r["status"] != "ok"]
    if failed:
        click.echo(f"tqgguf: {len(failed)} configuration(s) failed: {', '.join(failed)} (logs in {out / 'runs'})", err=True)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("--configs", default="f16,q8_0,q4_0,tq3_5,tq2_5", show_default=True,
              help="Comma-separated cache configurations, as for `compare`. With f16 among them, a line per "
                   "configuration counts the cells where it recalled every seed that f16 recalled.")
@click.option("--lengths", default=",".join(map(str, rc.DEFAULT_LENGTHS)), show_default=True,
              help="Prompt lengths in tokens.")
@click.option("--depths", default=",".join(map(str, rc.DEFAULT_DEPTHS)), show_default=True,
              help="Where the needle sits, as a fraction of the prompt.")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=rc.DEFAULT_SEEDS, show_default=True,
              help=f"Runs a cell, with seeds {rc.FIRST_SEED}, {rc.FIRST_SEED + 1}, ... (the same for every "
                   "configuration); a cell shows how many recalled.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/recall", show_default=True,
              help="Receives recall.md, recall.json and recall-runs/ (one run a seed; resumable).")
@click.option("--threads", type=int, default=None, help="Threads for llama.cpp [default: its own].")
@click.option("--ngl", type=int, default=0, show_default=True, help="Layers on the GPU.")
@click.option("--llama-bin", type=click.Path(file_okay=False), default=None,
              help="bin/ folder of the patched llama.cpp [default: the cached build, built if needed].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def recall(model, configs, lengths, depths, n_seeds, out_dir, threads, ngl, llama_bin, quiet):
    """Needle-in-a-haystack recall of MODEL for each KV-cache configuration (recall.md/.json).

    Each (configuration, length, depth) cell runs llama-passkey once a seed and shows k/N,
    recalled in k of its N seeds; recall.json keeps every run (seed, passkey, answer).
    """
    try:
        configs = [cmp.parse_config(c.strip()) for c in configs.split(",") if c.strip()]
        lengths = [int(x) for x in lengths.split(",")]
        depths = [float(x) for x in depths.split(",")]
    except ValueError as e:
        raise UserError(str(e)) from None
    require_prepared(model, configs)
    binary = ll.find_bin("llama-passkey", llama_bin)
    out = Path(out_dir)
    n = len(configs) * len(lengths) * len(depths) * n_seeds
    with click.progressbar(length=n, label="llama-passkey runs", file=sys.stderr, hidden=quiet,
                           item_show_func=lambda s: s) as bar:
        cells = rc.recall(binary, Path(model), configs, out, lengths, depths, n_seeds,
                          progress=lambda s: bar.update(1, s), threads=threads, ngl=ngl)
    seeds = rc.seeds(n_seeds)
    seed_text = f"seed {seeds[0]}" if n_seeds == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    header = f"Passkey recall, model `{model}`, {seed_text}, FA on; k/N: recalled with k of the N seeds.\n"
    (out / "recall.md").write_text(rc.markdown(cells, lengths, depths, header))
    (out / "recall.json").write_text(json.dumps(cells, indent=1))
    click.echo((out / "recall.md").read_text())
    if rc.seed_ignored(cells):
        click.echo("tqgguf: warning: llama-passkey hid the same pass key for every seed: this build ignores "
                   "--seed, so the seeds repeat one prompt", err=True)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("--configs", default=",".join(bn.DEFAULT_CONFIGS), show_default=True,
              help="Comma-separated cache configurations, as for `compare`.")
@click.option("--depths", default="0,16384,65536", show_default=True, help="KV depths (tokens) for llama-bench -d.")
@click.option("--prompt", "n_prompt", type=int, default=2048, show_default=True, help="Prefill test length (pp).")
@click.option("--gen", "n_gen", type=int, default=64, show_default=True, help="Decode test length (tg).")
@click.option("--reps", type=int, default=2, show_default=True)
@click.option("--ngl", type=int, default=99, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/bench", show_default=True,
              help="Receives bench.md, bench.json and one log per configuration.")
@click.option("--llama-bin", type=click.Path(file_okay=False), default=None)
@click.option("-q", "--quiet", is_flag=True)
@one_line_errors
def bench(model, configs, depths, n_prompt, n_gen, reps, ngl, out_dir, llama_bin, quiet):
    """Prefill and decode speed of each KV-cache configuration on MODEL, with ratios to f16 (bench.md/.json)."""
    try:
        configs = [cmp.parse_config(c.strip()).name for c in configs.split(",") if c.strip()]
        depths = [int(x) for x in depths.split(",")]
    except ValueError as e:
        raise UserError(str(e)) from None
    require_prepared(model, [cmp.parse_config(c) for c in configs])
    ll.find_bin("llama-bench", llama_bin)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with click.progressbar(configs, label="llama-bench runs", file=sys.stderr, hidden=quiet,
                           item_show_func=lambda s: s) as bar:
        for c in bar:
            results.append(bn.run_config(llama_bin, model, c, depths, n_prompt, n_gen, reps, ngl, out))
    md = f"llama-bench, model `{Path(model).name}`, FA on, {reps} repetitions, t/s (× f16 of this run).\n\n"
    md += bn.table(results, depths, n_prompt, n_gen)
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    click.echo(md)


if __name__ == "__main__":
    main()
