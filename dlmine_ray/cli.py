"""The ``dlmine`` command: run, demo, submit, predict, explain, history, make-data."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from dlmine_ray.errors import DlmineError
from dlmine_ray.runtime.session import interrupt_on_sigterm


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlmine", description="Deep-learning data mining on Ray: "
                                "Ray Data -> Ray Train -> Ray Tune -> metrics, model, predictions, report.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, address=True):
        if address:
            sp.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else start a local Ray)")
        sp.add_argument("--verbose", action="store_true", help="show Ray's own logs and progress bars")

    r = sub.add_parser("run", help="run a job file and write its results into a folder",
                       description="Run JOB.yaml and write metrics.json, model/, predictions.parquet and "
                                   "report.html into --output.")
    r.add_argument("job", metavar="JOB.yaml")
    r.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the run's results")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a job field, e.g. --set train.epochs=5 (repeatable)")
    r.add_argument("--overwrite", action="store_true", help="replace a previous run in --output")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run of this job into --output "
                   "(killed outright): TorchTrainer training goes on from its last epoch's checkpoint")
    r.add_argument("--cold", action="store_true", help="with --address: run a small job in this process, not in "
                   "the cluster's warm dlmine process on this node (also DLMINE_WARM=0)")
    common(r)

    d = sub.add_parser("demo", help="run the built-in jobs on bundled and generated data",
                       description="Run the built-in demo jobs (classification, regression, tuning, clustering, "
                                   "anomaly detection, association rules) and print a summary table.")
    d.add_argument("--output", "-o", default="runs/demo", metavar="DIR", help="parent folder (default runs/demo)")
    d.add_argument("--quick", action="store_true", help="two epochs and two trials per job (a smoke test)")
    common(d)

    s = sub.add_parser("submit", help="submit a job to a Ray cluster through the Ray Jobs API",
                       description="Submit JOB.yaml to a running Ray cluster; the dlmine_ray package travels "
                                   "in the job's runtime environment.")
    s.add_argument("job", metavar="JOB.yaml")
    s.add_argument("--address", required=True, metavar="http://HOST:8265", help="the cluster's dashboard address")
    s.add_argument("--output", "-o", metavar="DIR", help="results folder on the cluster "
                   "(default /tmp/dlmine_runs/NAME-TIME-ID, unique per submission)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 1 unless it succeeds")
    s.add_argument("--verbose", action="store_true")

    pr = sub.add_parser("predict", help="score new data with a saved model",
                        description="Apply a run's model (same preprocessing) to new rows; writes one Parquet "
                                    "file. Local data of at most 256 MiB is scored in this process without "
                                    "starting or joining Ray (also with --address); larger data, data in object "
                                    "storage, or --ray: batch inference on Ray Data (on the --address cluster).")
    pr.add_argument("--model", required=True, metavar="DIR/model", help="the model/ folder of a run")
    pr.add_argument("--data", required=True, nargs="+", metavar="PATH", help="file(s), folder or glob")
    pr.add_argument("--output", "-o", required=True, metavar="OUT.parquet")
    pr.add_argument("--format", default="auto", choices=["auto", "parquet", "csv", "json"])
    pr.add_argument("--overwrite", action="store_true")
    pr.add_argument("--ray", action="store_true", help="score through Ray Data even when the data is small")
    common(pr)

    ex = sub.add_parser("explain", help="per-row attributions of new data by a saved model",
                        description="Explain a classify or regress model's predictions for N rows of new data "
                                    "(same preprocessing as predict): integrated gradients per original column, "
                                    "into one Parquet file, a row per explained row with its position in the "
                                    "data. The rows are a seeded random sample of all the rows (--seed), or the "
                                    "first N with --first.")
    ex.add_argument("--model", required=True, metavar="DIR/model", help="the model/ folder of a run")
    ex.add_argument("--data", required=True, nargs="+", metavar="PATH", help="file(s), folder or glob")
    ex.add_argument("--rows", type=int, required=True, metavar="N",
                    help="explain N rows: a uniform random sample without replacement (all rows when N is at "
                         "least the row count), written in file order")
    ex.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0): the same seed, the same rows")
    ex.add_argument("--first", action="store_true", help="explain the first N rows instead of a sample")
    ex.add_argument("--output", "-o", default="explanations.parquet", metavar="OUT.parquet",
                    help="default explanations.parquet")
    ex.add_argument("--format", default="auto", choices=["auto", "parquet", "csv", "json"])
    ex.add_argument("--overwrite", action="store_true")
    common(ex)

    h = sub.add_parser("history", help="list the knowledge base: datasets, runs and their best scores",
                       description="List the datasets and runs recorded in the knowledge base (every run is "
                                   "recorded), newest first; --export writes the runs to Parquet.")
    h.add_argument("--knowledge", metavar="PATH_OR_URL", help="default: $DLMINE_KNOWLEDGE, else "
                   "~/.dlmine/knowledge.db")
    h.add_argument("--task", help="only this task's runs")
    h.add_argument("--dataset", help="only runs on this dataset (a name, or a fingerprint or its prefix)")
    h.add_argument("--runs", type=int, default=20, metavar="N", help="how many runs to list (default 20)")
    h.add_argument("--export", metavar="FILE.parquet", help="also write every matching run here")
    h.add_argument("--mine", action="store_true", help="what the trials on each dataset teach: each setting's "
                   "importance (fANOVA) and rules 'settings -> top quartile'")

    m = sub.add_parser("make-data", help="write a synthetic sharded Parquet dataset",
                       description="Write a synthetic dataset as sharded Parquet, for scale tests and demos: "
                                   "classification/regression (features x0.., label or target, row_id) or "
                                   "baskets (basket_id, items: a list of item names, Zipf-like popularity).")
    m.add_argument("kind", choices=["classification", "regression", "baskets"])
    m.add_argument("--rows", type=int, default=100_000)
    m.add_argument("--features", type=int, default=32)
    m.add_argument("--shards", type=int, default=8)
    m.add_argument("--classes", type=int, default=2)
    m.add_argument("--categorical", type=int, default=0, help="number of string-valued columns to add")
    m.add_argument("--items", type=int, default=1000, help="baskets: number of distinct items")
    m.add_argument("--avg-items", type=float, default=10.0, help="baskets: mean items per basket")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--output", "-o", required=True, metavar="DIR")
    m.add_argument("--overwrite", action="store_true")
    return p


def _version() -> str:
    from dlmine_ray import __version__

    return f"dlmine_ray {__version__}"


def main(argv=None) -> int:
    """Entry point of the ``dlmine`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    interrupt_on_sigterm()
    try:
        if args.command == "run":
            address = args.address or os.environ.get("RAY_ADDRESS")
            if address and not args.cold:
                from dlmine_ray.app import warm

                if warm.enabled():  # a small job against a running cluster: its warm process on this node
                    status = warm.run_warm(main, argv, args.job, args.overrides, address, verbose)
                    if status is not None:
                        return status
            from dlmine_ray.app.jobfile import load_job, parse_overrides
            from dlmine_ray.app.run import print_summary, run_job

            spec = load_job(args.job, parse_overrides(args.overrides))
            result = run_job(spec, args.output, address=args.address, overwrite=args.overwrite, verbose=verbose,
                             resume=args.resume)
            print_summary(result)
        elif args.command == "demo":
            from dlmine_ray.app.demo import run_demo

            run_demo(args.output, verbose=verbose, address=args.address, quick=args.quick)
        elif args.command == "submit":
            from dlmine_ray.app.jobfile import parse_overrides
            from dlmine_ray.app.submit import submit

            _, status = submit(args.job, args.address, args.output, parse_overrides(args.overrides), args.wait,
                               args.overwrite)
            if args.wait and status != "SUCCEEDED":
                return 1
        elif args.command == "predict":
            from dlmine_ray.app.predict import predict

            t0 = time.perf_counter()
            data = args.data[0] if len(args.data) == 1 else args.data
            n = predict(args.model, data, args.output, address=args.address, overwrite=args.overwrite,
                        verbose=verbose, fmt=args.format, **({"local_max_bytes": -1} if args.ray else {}))
            print(f"wrote {n:,} predictions to {os.path.abspath(args.output)} in {time.perf_counter() - t0:.1f}s")
        elif args.command == "explain":
            from dlmine_ray.app.explain import explain

            t0 = time.perf_counter()
            data = args.data[0] if len(args.data) == 1 else args.data
            n = explain(args.model, data, args.rows, args.output, address=args.address, overwrite=args.overwrite,
                        verbose=verbose, fmt=args.format, seed=args.seed, first=args.first)
            print(f"wrote the attributions of {n:,} rows to {os.path.abspath(args.output)} in "
                  f"{time.perf_counter() - t0:.1f}s")
        elif args.command == "history":
            from dlmine_ray.app.history import history

            history(args.knowledge, args.task, args.dataset, args.export, args.runs, args.mine)
        elif args.command == "make-data":
            from dlmine_ray.data.synthetic import make_data

            out = make_data(args.kind, args.rows, args.features, args.shards, args.output, args.seed, args.classes,
                            args.categorical, args.overwrite, args.items, args.avg_items)
            what = f"{args.items} items" if args.kind == "baskets" else f"{args.features} features"
            print(f"wrote {args.rows:,} rows x {what} in {min(args.shards, args.rows)} shard(s) to {out}")
            if args.kind == "baskets":  # say what was planted, so that a user can check the rules found
                from dlmine_ray.data.synthetic import planted_description

                print(planted_description(args.items, args.seed))
        return 0
    except DlmineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an unexpected failure: one line, the traceback on --verbose
        from dlmine_ray.errors import first_line

        if verbose:
            traceback.print_exc()
        print(f"error: {type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
