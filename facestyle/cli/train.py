"""Measurement and fine-tuning commands: ``eval pairs``, ``eval identify``, ``calibrate``, ``train``."""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import (
    CropOpt,
    JsonOpt,
    QuietOpt,
    err,
    note,
    out,
    print_json,
    progress_fn,
    user_errors,
)

ModelOpt = typer.Option("dlib-resnet-v1", "--model", "-m", help="Embedder name (or a checkpoint file).")
CheckpointOpt = typer.Option(
    None, "--checkpoint", "-c", help="A model trained with `facestyle train`.", readable=False
)
DetectorOpt = typer.Option("mtcnn", "--detector", "-d", help="mtcnn (landmarks) or haar (fast, box only).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when present).")

eval_app = typer.Typer(help="Measure accuracy with standard protocols.", no_args_is_help=True)


def _features(model: str, checkpoint: Path | None, detector: str, device: str | None, crop: str = "auto"):
    """The feature service evaluation and training use: each photo's central face (LFW protocol),
    found under the ``crop`` policy."""
    from facestyle.api import FacePipeline

    name = str(checkpoint) if checkpoint else model
    return FacePipeline(name, detector, device=device, crop=crop).features(face="central")  # type: ignore[arg-type]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


@eval_app.command("pairs")
def eval_pairs(
    pairs_file: Path = typer.Argument(
        ...,
        help="LFW pairs file (name i j / name1 i name2 j) or CSV path1,path2,same.",
        readable=False,
    ),
    images_dir: Path | None = typer.Argument(
        None,
        help="Images root (LFW: Name/Name_NNNN.jpg; CSV: relative paths).",
        readable=False,
    ),
    model: str = ModelOpt,
    checkpoint: Path | None = CheckpointOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    plot: Path | None = typer.Option(None, "--plot", help="Write the ROC curve to this PNG.", readable=False),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """10-fold verification accuracy, ROC AUC, EER and TAR@FAR on a pairs file."""
    with user_errors():
        from facestyle.eval.pairs_eval import evaluate_pairs
        from facestyle.eval.pairs_file import read_pairs

        pairs = read_pairs(pairs_file, images_dir)
        for w in pairs.warnings:
            note(f"warning: {w}")
        ex = _features(model, checkpoint, detector, device, crop)
        report = evaluate_pairs(pairs, ex, progress_fn(quiet or json))
        if plot is not None:
            from facestyle.eval.metrics import roc_curve
            from facestyle.eval.plots import plot_roc

            roc = roc_curve(report.scores, report.labels)
            plot_roc(
                [(f"{Path(report.model).name} (AUC {report.auc:.4f})", roc.fpr, roc.tpr)],
                plot,
                pairs_file.name,
            )
        if json:
            d = report.to_dict()
            d["plot"] = str(plot) if plot else None
            print_json(d)
            return
        out.print(f"model            {report.model} ({report.score} score)")
        out.print(f"pairs used       {report.n_pairs} ({report.n_same} same, {report.n_different} different)")
        out.print(f"pairs skipped    {len(report.skipped)}")
        for s in report.skipped[:10]:
            out.print(f"  line {s['line']}: {s['reason']}")
        if len(report.skipped) > 10:
            out.print(f"  ... {len(report.skipped) - 10} more (see --json)")
        out.print(f"accuracy         {_pct(report.accuracy)} ± {_pct(report.accuracy_std)} (10-fold)")
        out.print(f"ROC AUC          {report.auc:.4f}")
        out.print(f"EER              {_pct(report.eer)} (threshold {report.eer_threshold:.4f})")
        for op in report.tar_at_far:
            flag = (
                "" if op["resolvable"] else f"  (too few impostor pairs to measure FAR {op['target_far']:g})"
            )
            out.print(
                f"TAR @ FAR={op['target_far']:g}  {_pct(op['tar'])} (threshold {op['threshold']:.4f}){flag}"
            )
        out.print(
            f"best threshold   {report.best_threshold:.4f} "
            f"(accuracy {_pct(report.best_threshold_accuracy)} on all pairs)"
        )
        out.print(f"time             {report.seconds:.1f} s for {report.n_images} images")
        if plot is not None:
            note(f"ROC written to {plot}")


@eval_app.command("identify")
def eval_identify(
    gallery_dir: Path = typer.Argument(..., help="Folder per identity: the enrolled images.", readable=False),
    probe_dir: Path = typer.Argument(
        ...,
        help="Folder per identity: queries (folders not in the gallery = unknown).",
        readable=False,
    ),
    model: str = ModelOpt,
    checkpoint: Path | None = CheckpointOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    far: list[float] = typer.Option([1e-2, 1e-1], "--far", help="False-alarm rates for open-set figures."),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Rank-1 identification and open-set detection-and-identification rate."""
    with user_errors():
        from facestyle.eval.identify_eval import evaluate_identification

        ex = _features(model, checkpoint, detector, device, crop)
        rep = evaluate_identification(gallery_dir, probe_dir, ex, tuple(far), progress_fn(quiet or json))
        if json:
            print_json(rep.to_dict())
            return
        out.print(f"model       {rep.model}")
        out.print(f"gallery     {rep.n_gallery_images} images of {rep.n_gallery_identities} people")
        out.print(
            f"probes      {rep.n_known_probes} known, {rep.n_unknown_probes} unknown, "
            f"{len(rep.skipped)} skipped"
        )
        out.print(f"rank-1      {_pct(rep.rank1)}   rank-5 {_pct(rep.rank5)}")
        for op in rep.open_set:
            flag = "" if op["resolvable"] else " (few unknown probes: coarse)"
            out.print(
                f"open set    DIR {_pct(op['dir'])} at FAR {op['far']:.3f} "
                f"(target {op['target_far']:g}, threshold {op['threshold']:.4f}){flag}"
            )
        if rep.at_default_threshold:
            d = rep.at_default_threshold
            out.print(f"default thr {d['threshold']:.4f}: DIR {_pct(d['dir'])}, FAR {d['far']:.3f}")
        for n in rep.notes:
            note(n)


def calibrate_cmd(
    source: Path = typer.Argument(
        ..., help="A pairs file (LFW or CSV) or a folder-per-identity directory.", readable=False
    ),
    far: float = typer.Option(1e-3, "--far", help="Target false-accept rate."),
    gallery: str | None = typer.Option(
        None,
        "--gallery",
        "-g",
        help="Gallery to store the threshold in: a directory or a postgresql:// URL.",
        parser=str,
        metavar="DIR|URL",
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Images root for an LFW pairs file.", readable=False
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Embedder (default: the gallery's, else dlib)."
    ),
    checkpoint: Path | None = CheckpointOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    store: bool = typer.Option(True, "--store/--no-store", help="Save the threshold in the gallery."),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Pick the similarity threshold for a target false-accept rate and store it with the gallery."""
    with user_errors():
        from facestyle.api import FacePipeline
        from facestyle.errors import GalleryError
        from facestyle.eval.calibrate import calibrate
        from facestyle.gallery import Gallery, bound_model, gallery_exists, resolve_gallery_path
        from facestyle.gallery.faces import DEFAULT_MODEL, model_for

        gpath = resolve_gallery_path(gallery)
        has_gallery = gallery_exists(gpath)
        if gallery is not None and not has_gallery and store:
            raise GalleryError(f"{gpath}: no gallery here (enroll someone first)")
        requested = str(checkpoint) if checkpoint else model
        # Storing needs the gallery's own model (another is refused before anything loads); with
        # --no-store any model may be calibrated without touching the gallery.
        name = model_for(gpath, requested) if store else (requested or bound_model(gpath) or DEFAULT_MODEL)
        pipe = FacePipeline(name, detector, device=device, crop=crop)  # type: ignore[arg-type]
        cal = calibrate(source, pipe.features(face="central"), far, images, progress_fn(quiet or json))
        stored = None
        if store and has_gallery:
            with Gallery.open(gpath, pipeline=pipe) as g:
                g.set_threshold(cal.threshold, cal.describe())
            stored = str(gpath)
        if json:
            print_json({**cal.to_dict(), "stored_in": stored})
            return
        out.print(f"threshold {cal.threshold:.4f} for FAR {far:g} ({cal.model})")
        out.print(
            f"measured on {cal.n_genuine} genuine / {cal.n_impostor} impostor pairs: "
            f"FAR {cal.far:.2e}, TAR {_pct(cal.tar)}; {cal.n_skipped} skipped"
        )
        if not cal.resolvable:
            note(f"warning: {cal.n_impostor} impostor pairs cannot resolve FAR {far:g} (need {int(1 / far)})")
        if stored:
            note(f"stored in gallery {stored}: verify/identify use it by default")
        elif store:
            note(f"no gallery at {gpath}: threshold not stored (pass --gallery)")


def train_cmd(
    data_dir: Path = typer.Argument(
        ..., help="Folder per identity: DATA_DIR/<name>/<images>.", readable=False
    ),
    out_path: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (model.pt).", readable=False),
    model: str = typer.Option("dlib-resnet-v1", "--model", "-m", help="Base embedder (frozen backbone)."),
    loss: str = typer.Option(
        "triplet", "--loss", help="triplet (embedding head) or siamese (pair head, BCE)."
    ),
    mining: str = typer.Option("batch-hard", "--mining", help="batch-hard or semi-hard."),
    margin: float = typer.Option(0.2, "--margin", help="Triplet margin alpha (Euclidean, unit vectors)."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate (AdamW)."),
    epochs: int = typer.Option(30, "--epochs", help="Maximum epochs."),
    p: int = typer.Option(8, "--p", help="Identities per batch."),
    k: int = typer.Option(4, "--k", help="Images per identity per batch."),
    batches: int = typer.Option(0, "--batches-per-epoch", help="0: one pass over the training identities."),
    patience: int = typer.Option(5, "--patience", help="Stop after this many epochs without held-out gain."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of identities held out."),
    views: int = typer.Option(
        4, "--views", help="Cached views per image (original, mirror, random crops/colour)."
    ),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flip, crop and colour augmentation."),
    hidden: int = typer.Option(0, "--hidden", help="Hidden width of the head (0: one linear layer)."),
    out_dim: int = typer.Option(0, "--out-dim", help="Output embedding size (0: the base model's)."),
    last_layer: bool = typer.Option(
        False, "--train-last-layer", help="Also fine-tune the backbone's final layer (dlib: its fc)."
    ),
    seed: int = typer.Option(0, "--seed"),
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    plot: Path | None = typer.Option(
        None, "--plot", help="Write the loss/accuracy curves to this PNG.", readable=False
    ),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Fine-tune an embedding head (triplet loss) or a Siamese pair head on your own identities."""
    with user_errors(flags={"tap": "--train-last-layer"}):
        from facestyle.errors import UsageError
        from facestyle.train.embedding_head import train_embedding_head
        from facestyle.train.trainer import EmbeddingHeadOptions

        if out_path.suffix not in (".pt", ".pth"):
            raise UsageError(f"--out must end in .pt: {out_path}")
        opts = EmbeddingHeadOptions(
            loss=loss,
            mining=mining,
            margin=margin,
            lr=lr,
            epochs=epochs,
            p=p,
            k=k,
            batches_per_epoch=batches,
            patience=patience,
            val_fraction=val_fraction,
            hidden=hidden,
            out_dim=out_dim,
            views=views,
            augment=augment,
            seed=seed,
            tap="fc" if last_layer else "",
        )
        opts.validate()
        ex = _features(model, None, detector, device, crop)
        quiet_all = quiet or json

        def on_epoch(rec) -> None:
            if not quiet_all:
                err.print(
                    f"epoch {rec.epoch:3d}  train loss {rec.train_loss:.4f}  "
                    f"held-out loss {rec.val_loss:.4f}  "
                    f"held-out acc {_pct(rec.val_accuracy)}  ({rec.seconds:.1f} s)",
                    highlight=False,
                )

        run = train_embedding_head(data_dir, out_path, opts, ex, progress_fn(quiet_all), on_epoch)
        summary = run.to_dict()
        if plot is not None:
            from facestyle.eval.plots import plot_training

            plot_training(
                summary["history"],
                plot,
                f"{data_dir.name}: {loss}" + (f"/{mining}" if loss == "triplet" else ""),
                "triplet" if loss == "triplet" else "BCE",
            )
        if json:
            print_json({**summary, "plot": str(plot) if plot else None})
            return
        b, a = run.result.before, run.result.best
        out.print(f"checkpoint      {run.checkpoint}")
        out.print(
            f"data            {run.n_train_images} train images ({run.n_train_identities} people), "
            f"{run.n_val_images} held-out ({run.n_val_identities} people), {run.n_no_face} without a face"
        )
        out.print(
            f"held-out acc    {_pct(b.val_accuracy)} -> {_pct(a.val_accuracy)} "
            f"(epoch {run.result.best_epoch})"
        )
        out.print(f"held-out loss   {b.val_loss:.4f} -> {a.val_loss:.4f}")
        out.print(f"threshold       {a.threshold:.4f} (held-out best; stored in the checkpoint)")
        out.print(f"throughput      {run.result.samples_per_second:,.0f} samples/s (head on cached features)")
        if run.result.best_epoch == 0:
            note("no epoch beat the base model on held-out people: the checkpoint equals the base model")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
    app.command("calibrate")(calibrate_cmd)
    app.command("train")(train_cmd)
