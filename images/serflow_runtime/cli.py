"""``serflow-runtime``: train, export, profile, and run the worker or function server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from serflow_runtime import DEFAULT_PORT
from serflow_runtime.artefact import SHIPPED, shipped
from serflow_runtime.runtimes import Runtime

BUNDLED = SHIPPED / "digits-vgg16-w025"
"""The default artefact: the VGG-16-BN SDN trained on digits, exported."""


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x.strip())


def cmd_train(a: argparse.Namespace) -> int:
    import torch

    from serflow_runtime import checkpoint, data, resnet
    from serflow_runtime.model import build
    from serflow_runtime.train import TrainConfig, train

    torch.manual_seed(a.seed)
    try:
        ds = data.load(a.dataset, a.data_dir, seed=a.seed)
    except data.DataMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = int(ds.y_train.max()) + 1
    model: checkpoint.AnyModel = (
        resnet.build(a.width, num_classes=classes)
        if a.architecture == resnet.ARCHITECTURE
        else build(a.width, a.exits, num_classes=classes)
    )
    cfg = TrainConfig(epochs=a.epochs, batch=a.batch, lr=a.lr, seed=a.seed, threads=a.threads)
    acc = train(model, ds, cfg)
    meta = {"dataset": ds.name, "seed": a.seed, "epochs": a.epochs, "valAccuracyPerExit": acc}
    sha = checkpoint.save(a.out, model, ds.mean, ds.std, meta, half=a.half)
    print(f"wrote {a.out} sha256 {sha}; held-out accuracy per exit {acc}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    import torch

    from serflow_runtime import checkpoint, data
    from serflow_runtime.artefact import ImagePreprocessing
    from serflow_runtime.export import export_network, to_pixels

    try:
        ld = checkpoint.load(a.checkpoint)
        ds = data.load(a.dataset, a.data_dir, seed=int(ld.meta.get("seed", 0)))
    except (checkpoint.CheckpointError, data.DataMissingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = export_network(
        list(ld.model.partitions),
        a.out,
        name=a.name or Path(a.checkpoint).stem,
        example=torch.zeros((2, *ld.arch.input_shape)),
        image=ImagePreprocessing(tuple(ld.mean), tuple(ld.std)),
        classes=[str(c) for c in range(ld.arch.num_classes)],
        calibration=(to_pixels(ds.x_val, ld.mean, ld.std), ds.y_val.numpy()),
        source=a.checkpoint,
        describes={**ld.arch.to_dict(), "valAccuracyPerExit": ld.meta.get("valAccuracyPerExit")},
    )
    print(f"wrote {a.out}: {m.num_stages} stages, digest {m.digest}")
    return 0


def cmd_train_sequence(a: argparse.Namespace) -> int:
    from serflow_runtime import data, sequence

    try:
        m = sequence.reproduce(a.out, seed=a.seed, epochs=a.epochs, threads=a.threads)
    except data.DataMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    acc = m.describes["valAccuracyPerExit"]
    print(f"wrote {a.out}: {m.num_stages} stages, digest {m.digest}; held-out accuracy per exit {acc}")
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    from serflow_runtime.profiler import ProfileRequest, run_profile, write_profile

    req = ProfileRequest(
        artefact=Path(a.artefact),
        runtime=Runtime(a.runtime),
        batch=a.batch,
        taus=a.taus,
        configs=a.config,
        repeats=a.repeats,
        name=a.name,
    )
    doc = run_profile(req)
    write_profile(doc, a.out)
    print(f"wrote {a.out}")
    return 0


def cmd_worker(a: argparse.Namespace) -> int:
    from serflow_runtime.worker import WorkerConfig, main

    return main(
        WorkerConfig(
            artefact=Path(a.artefact),
            runtime=Runtime(a.runtime),
            digest=a.digest,
            host=a.host,
            port=a.port,
            cut=a.cut,
            tau=None if a.exits_off else a.tau,
            batch=a.batch,
            epoch=a.epoch,
            budget=a.budget,
            tail=list(a.tail),
            threads=a.threads,
            name=a.name,
            client_timeout=a.client_timeout,
            stage_timeout=a.stage_timeout,
            warm_tail=a.warm_tail,
            model_name=a.model_name,
        )
    )


def cmd_function(a: argparse.Namespace) -> int:
    import os

    from serflow_runtime.function import FunctionConfig, main

    port = a.port if a.port is not None else int(os.environ.get("PORT", DEFAULT_PORT))
    return main(
        FunctionConfig(
            artefact=Path(a.artefact),
            runtime=Runtime(a.runtime),
            digest=a.digest,
            host=a.host,
            port=port,
            partitions=a.partitions,
            batch=a.batch,
            tau=None if a.exits_off else a.tau,
            threads=a.threads,
            name=a.name,
            client_timeout=a.client_timeout,
            model_name=a.model_name,
        )
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artefact",
        default=str(BUNDLED),
        help=f"artefact folder (manifest.json), or a shipped one by name: "
        f"{', '.join(shipped())}",
    )
    p.add_argument(
        "--runtime",
        choices=[r.value for r in Runtime],
        default=Runtime.ONNX.value,
        help="what runs the stages (torch needs torch and the artefact's source checkpoint)",
    )


def parser() -> argparse.ArgumentParser:
    from serflow_runtime.server import CLIENT_TIMEOUT

    p = argparse.ArgumentParser(prog="serflow-runtime", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train an early-exit network and write a checkpoint")
    t.add_argument(
        "--architecture",
        choices=["vgg16_bn", "resnet_ee"],
        default="vgg16_bn",
        help="the VGG-16-BN SDN or the residual network (its exits are fixed)",
    )
    t.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    t.add_argument("--data-dir", help="folder holding cifar-10-batches-py (never downloaded)")
    t.add_argument("--width", type=float, default=0.25, help="channel width multiplier")
    t.add_argument(
        "--exits", type=_ints, default=(2, 4, 6, 7, 9, 10), help="VGG: IC blocks, e.g. 2,4,6"
    )
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--half", action="store_true", help="store weights as float16")
    t.add_argument("--out", required=True)
    t.set_defaults(fn=cmd_train)

    ex = sub.add_parser("export", help="write an artefact (ONNX stages + manifest) from a checkpoint")
    ex.add_argument("--checkpoint", required=True, help="a checkpoint written by train")
    ex.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    ex.add_argument("--data-dir", help="folder holding cifar-10-batches-py (never downloaded)")
    ex.add_argument("--name", default=None, help="model name (default: the checkpoint's stem)")
    ex.add_argument("--out", required=True, help="a new, empty folder")
    ex.set_defaults(fn=cmd_export)

    sq = sub.add_parser(
        "train-sequence",
        help="train the byte-level transformer on chatterbot-corpus (language of a text) and "
        "write its artefact (the shipped seq-chatterbot-langid-transformer)",
    )
    sq.add_argument("--epochs", type=int, default=10)
    sq.add_argument("--seed", type=int, default=0)
    sq.add_argument("--threads", type=int, default=2)
    sq.add_argument("--out", required=True, help="a new, empty folder")
    sq.set_defaults(fn=cmd_train_sequence)

    pr = sub.add_parser("profile", help="measure an artefact; write a serflow Profile YAML")
    _model_args(pr)
    pr.add_argument("--batch", type=int, default=100)
    pr.add_argument("--taus", type=_floats, default=(0.5, 0.7, 0.85, 0.95))
    pr.add_argument(
        "--config",
        action="append",
        default=None,
        help="instance type or function size (e.g. c6i.xlarge, fn-2048); repeatable",
    )
    pr.add_argument("--repeats", type=int, default=3)
    pr.add_argument("--name", default=None)
    pr.add_argument("--out", required=True)
    pr.set_defaults(fn=cmd_profile)

    for name, fn in (("worker", cmd_worker), ("function", cmd_function)):
        s = sub.add_parser(name, help=f"run the {name} server")
        _model_args(s)
        s.add_argument("--digest", default=None, help="refuse to start unless the artefact has it")
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--tau", type=float, default=0.85)
        s.add_argument("--exits-off", action="store_true", help="answer every request at exit K")
        s.add_argument("--threads", type=int, default=0)
        s.add_argument("--name", default=name)
        s.add_argument(
            "--model-name",
            default="",
            help="the model's name under the Open Inference Protocol (/v2/models/NAME; "
            "the operator sets the SerflowInference's name; default: the artefact's)",
        )
        s.add_argument("--batch", type=int, default=100, help="B: the most requests per batch")
        s.add_argument(
            "--client-timeout",
            type=float,
            default=CLIENT_TIMEOUT,
            help="seconds a client may idle or take to send a request before it is dropped",
        )
        s.set_defaults(fn=fn)
        if name == "worker":
            s.add_argument("--port", type=int, default=DEFAULT_PORT)
            s.add_argument("--cut", type=int, default=0, help="last partition run here (0: all)")
            s.add_argument("--epoch", type=float, default=6.0, help="D seconds")
            s.add_argument(
                "--budget", type=int, default=0, help="requests admitted per epoch (0: B)"
            )
            s.add_argument(
                "--tail",
                action="append",
                default=[],
                help="A-B=URL: a function stage running partitions A..B, B may be K (repeat to chain)",
            )
            s.add_argument(
                "--stage-timeout",
                type=float,
                default=60.0,
                help="seconds a tail stage call may take; then its requests are answered 503",
            )
            s.add_argument(
                "--warm-tail",
                action="store_true",
                help="not ready until each tail stage has answered once (starts one at zero)",
            )
        else:
            s.add_argument("--port", type=int, default=None, help=f"default: $PORT or {DEFAULT_PORT}")
            s.add_argument(
                "--partitions", default="1-K", help="A-B range this function runs (B may be K)"
            )
    from serflow_runtime import storage

    storage.add_parser(sub)  # fetch: the storage initializer (init containers)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return int(a.fn(a))
    except ValueError as e:  # bad input (artefact, checkpoint, profile): one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
