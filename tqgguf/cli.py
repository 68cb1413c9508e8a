"""The `tqgguf` command line: one sub-command per verb; errors are one line on stderr, exit 1."""

from __future__ import annotations

import functools
import json
import os
import sys

import click
import numpy as np

from . import blocks, metadata, prepare as prep
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
        except (prep.PrepareError, GGUFError, metadata.MetadataError) as e:
            raise UserError(str(e)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tqgguf")
def main():
    """TurboQuant KV-cache compression for llama.cpp.

    \b
    tqgguf prepare MODEL.gguf     add TurboQuant metadata (rotation seeds, codebooks, outliers)
    tqgguf inspect MODEL.gguf     show it, with the bits per value each TQ type costs
    """


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the prepared model [default: MODEL.tq.gguf beside the input].")
@click.option("--in-place", is_flag=True, help="Rewrite MODEL itself (atomically) instead of a copy.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=prep.DEFAULT_SEED, show_default=True,
              help="Master seed of every rotation; per-layer K and V seeds derive from it.")
@click.option("--types", "types_text", default="tq2_5,tq3_5", show_default=True,
              help="Comma-separated TQ cache types to prepare codebooks for.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def prepare(model, output, in_place, seed, types_text, quiet):
    """Write a copy of MODEL with the TurboQuant metadata the patched llama.cpp needs.

    Tensors and all other keys are copied byte for byte; existing turboquant.* keys
    are replaced, so preparing twice gives the same bytes. Outlier channels are
    chosen data-free from the model's K/V projection weights (docs/metadata.md).
    """
    types = prep.parse_types(types_text)
    hdr = prep.read_model_header(model)
    dst = prep.resolve_output(model, output, in_place)
    shape = prep.model_shape(hdr)
    with click.progressbar(length=shape.n_layer, label="choosing outlier channels", file=sys.stderr,
                           hidden=quiet) as bar:
        meta = prep.build_metadata(model, hdr, seed, types, bar.update)
    new_hdr = prep.with_metadata(hdr, meta)
    with click.progressbar(length=hdr.file_size - hdr.data_offset, label="writing " + os.path.basename(dst),
                           file=sys.stderr, hidden=quiet) as bar:
        prep.write_atomic(model, dst, new_hdr, hdr, bar.update)
    click.echo(dst)


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
    info = {
        "format_version": metadata.FORMAT_VERSION,
        "seed": meta.seed,
        "types": meta.types,
        "layers": meta.n_layer,
        "kv_heads": meta.n_kv_head,
        "head_dim": meta.head_dim,
        "outlier_method": meta.outlier_method,
        "bits_per_value": cost,
        "codebooks": {metadata.k_codebook(d, b): [float(x) for x in c] for (d, b), c in meta.codebooks().items()},
        "layer_seeds": {k: [int(x) for x in v] for k, v in meta.layer_seeds.items()},
    }
    if show_outliers or as_json:
        info["outliers"] = {k: v.tolist() for k, v in meta.outliers.items()}
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(f"turboquant format {info['format_version']}, seed {meta.seed:#x}, outliers from {meta.outlier_method}")
    click.echo(f"{meta.n_layer} layers x {meta.n_kv_head} KV heads, head size K {meta.head_dim['k']}, V {meta.head_dim['v']}")
    for t in meta.types:
        lay = blocks.layout(t)
        click.echo(f"  {t}: {blocks.HI} outlier slots x {lay.hi_bits} bits + {blocks.LO} x {lay.lo_bits} bits "
                   f"+ 2 f16 scales per {blocks.BLOCK} values = {lay.bits_per_value:.3f} bits/value "
                   f"({16 / lay.bits_per_value:.2f}x smaller than f16)")
    for name, c in info["codebooks"].items():
        click.echo(f"  {name}: " + " ".join(f"{x:+.4f}" for x in c))
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


if __name__ == "__main__":
    main()
