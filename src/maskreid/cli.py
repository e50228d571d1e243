"""The `maskreid` command line: everything that is not a pipeline stage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="MaskReID person re-identification: data, pipeline helpers, queries, export.", no_args_is_help=True)


@app.command()
def params(
    profile: Annotated[str, typer.Option(help="demo | real_cpu | real_cpu_headline | real_cpu_subset | real_gpu | paper")] = "demo",
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-S", help="Hydra override, e.g. loss.lambda=5")] = None,
    output: Path = Path("params.yaml"),
) -> None:
    """Compose params.yaml from conf/ (what `dvc exp run -S profile=...` does), for `dvc repro`.
    A value outside its allowed range is refused and ``output`` is left as it was."""
    from maskreid.config import ParamsError, compose_params, load_params
    from maskreid.io import atomic_write
    from maskreid.params_check import check_params

    def compose_checked(tmp: Path) -> None:  # atomic_write drops the temp file if this raises
        compose_params([f"profile={profile}", *(set_ or [])], output=tmp)
        check_params(load_params(tmp))

    try:
        atomic_write(output, compose_checked)
    except ParamsError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {output} (profile={profile})")


@app.command()
def datasets() -> None:
    """List the datasets the pipeline knows, with their archive, checksum and where to get it."""
    from maskreid.datasets.base import dataset_names, get_dataset

    for name in dataset_names():
        spec = get_dataset(name)
        files = getattr(spec, "files", ())
        typer.echo(f"{name}")
        for f in files:
            typer.echo(f"  archive: {f.name}  checksum: {f.checksum() if hasattr(f, 'checksum') else '-'}")
            typer.echo(f"  url: {getattr(f, 'url', None) or 'none (see below)'}")
        note = getattr(spec, "how_to_obtain", "")
        if note:
            typer.echo(f"  how to obtain: {note}")


@app.command()
def card(dataset: str, metrics_dir: Path = Path("metrics/datasets")) -> None:
    """Print a dataset card written by the ingest stage."""
    path = metrics_dir / f"{dataset}.json"
    if not path.exists():
        typer.echo(f"no card at {path}: run `dvc repro ingest@{dataset}` first", err=True)
        raise typer.Exit(1)
    typer.echo(path.read_text())


@app.command()
def query(
    cell: Annotated[str, typer.Argument(help="an evaluate cell whose features are stored (data/features/<cell>.npz)")],
    image_id: Annotated[str, typer.Argument(help="a query image_id from that cell")],
    top: Annotated[int, typer.Option(min=1, help="how many gallery images to list")] = 10,
) -> None:
    """Rank the gallery of a cell for one query image, from the stored features."""
    from maskreid.evaluate.features import load_features
    from maskreid.splits import read_manifest

    data = load_features(Path("data/features") / f"{cell}.npz")
    ids = list(data["image_id"])
    if image_id not in ids:
        typer.echo(f"{image_id!r} is not in {cell}'s features ({len(ids)} images)", err=True)
        raise typer.Exit(1)
    dataset = image_id.split("/", 1)[0]
    manifest = read_manifest(Path("data/splits") / dataset)
    gallery = set(manifest[(manifest.trial == 0) & (manifest.role == "gallery")].image_id)
    feats = data["feats"]
    q = feats[ids.index(image_id)]
    g_idx = [i for i, x in enumerate(ids) if x in gallery]
    dist = ((feats[g_idx] - q) ** 2).sum(1) ** 0.5
    for rank, j in enumerate(dist.argsort()[:top], 1):
        i = g_idx[j]
        typer.echo(f"{rank:3d}  {dist[j]:.4f}  pid={data['pid'][i]}  cam={data['camid'][i]}  {ids[i]}")


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="models/<kind>/<run>/model.pt")],
    output: Path = Path("model.onnx"),
) -> None:
    """Export a trained re-ID model to ONNX (inputs: image[, masked]; output: 256-d feature)."""
    from maskreid.train import export_onnx

    export_onnx(model, output)
    typer.echo(f"wrote {output}")


@app.command()
def table4(output: Path = Path("reports/table4.md")) -> None:
    """Assemble Table 4 (alpha x lambda) from `dvc exp show --json` after the documented queue run."""
    from maskreid.report.sweep import table4_from_experiments

    raw = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True).stdout
    md = table4_from_experiments(json.loads(raw))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(md)
    typer.echo(md)


if __name__ == "__main__":
    app()
