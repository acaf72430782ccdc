"""Pieces every command shares: ``--config`` + trailing ``key=value`` overrides, logging setup,
the one-line final summary, and running a parsed command with the exit codes of SPEC §8."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from fer_pipeline.config import Config, load_config
from fer_pipeline.errors import EXIT_INPUTS_FAILED, EXIT_USAGE, RunFailed, UsageError, os_error_line

log = logging.getLogger("fer")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with ``(default: X)``, unless its help already speaks of its
    default or there is none to show (``None``, a flag's ``False``, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None
                or default is argparse.SUPPRESS or isinstance(default, bool) or default == []):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with :class:`HelpFormatter`, for this parser and every sub-parser made from it
    (``add_subparsers`` builds sub-parsers of the parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    """``fer_pipeline.__version__`` (which ``pyproject.toml`` reads too)."""
    from fer_pipeline import __version__

    return __version__


def add_config_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML layered over pipeline.yaml (repeatable; later wins)")
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="a shipped preset layered over pipeline.yaml before any --config "
                        "(repeatable): demo, vnaw-official, vnaw-paper")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. stage2.model.layers=6")
    return p


def resolve_config(args: argparse.Namespace, presets: list[str] | None = None) -> Config:
    cfg = load_config(args.config, args.overrides,
                      presets=[*(presets or []), *getattr(args, "preset", [])])
    setup_logging(cfg.log_level)
    return cfg


class _BarAwareHandler(logging.StreamHandler):
    """Writes each record through ``tqdm.write``: in a terminal the progress bars are cleared,
    the record printed on its own line and the bars redrawn below it, so a record never lands
    on a bar's line. The stream is looked up at each record (``sys.stderr`` when none is given),
    so a replaced ``sys.stderr`` is honoured."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = sys.stderr if self._follow_stderr else self.stream
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup_logging(level: str = "INFO") -> None:
    """Log records on stderr (``HH:MM:SS LEVEL logger: message``), written around any progress
    bar (``fer_pipeline.progress``) rather than onto its line; installed once per process."""
    root = logging.getLogger()
    if not any(getattr(h, "_fer", False) for h in root.handlers):
        handler = _BarAwareHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        handler._fer = True
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("matplotlib", "PIL", "numcodecs", "asyncio", "zarr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def summary(line: str) -> None:
    """The final one-line summary every command prints on stdout."""
    print(line, flush=True)


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(other arguments, KEY=VALUE overrides)``: a token is an override when it starts with a
    (dotted) config key and ``=`` and is not an existing file; anywhere on the command line, so
    ``predict V --run R k=v`` and ``report RUN --max-videos 1 k=v`` both work. A token that is
    the value of the option before it (``--config a=b.yaml``) stays with its option."""
    rest, overrides = [], []
    for i, tok in enumerate(argv):
        prev = argv[i - 1] if i else ""
        takes_value = prev.startswith("-") and "=" not in prev and prev not in _FLAGS
        if _OVERRIDE.match(tok) and not takes_value and not Path(tok).exists():
            overrides.append(tok)
        else:
            rest.append(tok)
    return rest, overrides


# options that take no value, after which a KEY=VALUE token is an override
_FLAGS = {"--resume", "--demo", "--project", "--markdown", "--exclude-query-video", "-h", "--help",
          "--version", "--allow-partial", "--overwrite"}


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen handler: 0 success, 1 some inputs failed (``RunFailed``),
    2 usage or config error (``UsageError``), 130 interrupted. ``KEY=VALUE`` overrides are
    taken from anywhere on the line (``split_overrides``) and handed to the command."""
    rest, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    if overrides:
        if not hasattr(args, "overrides"):
            parser.error(f"this command takes no KEY=VALUE overrides: {' '.join(overrides)}")
        args.overrides = list(args.overrides or []) + overrides
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUTS_FAILED
    except OSError as e:      # an output location failed where the command had no better word
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def stage_main(prog: str, register, argv: list[str] | None = None) -> int:
    """``python -m <stage package> ACTION ...``: the stage's own sub-commands, without the app."""
    parser = ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    name = next(iter(sub.choices))
    return run_command(parser, [name, *(sys.argv[1:] if argv is None else argv)])


def add_train_args(p: argparse.ArgumentParser, stage: str) -> argparse.ArgumentParser:
    """The options every training command takes: where the run goes, resuming, local ranks."""
    p.add_argument("--out", metavar="RUN_DIR", help=f"run dir (default artifacts/runs/{stage}/<id>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run (its files are removed)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="self-spawn N DDP processes on this machine (or launch with torchrun)")
    return add_config_args(p)


def launch_training(args: argparse.Namespace, worker, stage: str, preload: tuple[str, ...] = ()) -> None:
    """Run ``worker(args)`` once, or in ``--nproc`` self-spawned ranks (not under torchrun,
    which starts the ranks itself) forked from a server that has imported ``worker``'s module
    and ``preload`` (see ``distributed.spawn``); ``--out`` defaults to a new run dir of
    ``stage``."""
    from fer_pipeline import distributed
    from fer_pipeline.runs import default_run_dir

    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out, --overwrite starts it afresh: "
                         "give one of them")
    if not args.out:
        args.out = str(default_run_dir(resolve_config(args), stage))
    if int(os.environ.get("RANK", "0")) == 0:    # torchrun starts every rank here: one checks
        check_run_dir(args.out, args.resume, args.overwrite)
    try:
        if args.nproc > 1 and not distributed.launched_by_torchrun():
            # a torch optimizer imports torch._dynamo on its first parameter group (~150 MiB
            # with sympy and triton): imported once by the server, not once per rank
            distributed.spawn(worker, args.nproc, (args,), preload=("torch._dynamo", *preload))
        else:
            worker(args)
    finally:
        distributed.cleanup()


def check_run_dir(out: str | Path, resume: bool, overwrite: bool) -> None:
    """Before a training run starts: ``--out`` must not hold an earlier run unless resumed or
    overwritten (then its files are removed), and must be a writable folder with room for a
    checkpoint and training state."""
    from fer_pipeline.outdir import RUN_DIR_BYTES, check_output_dir
    from fer_pipeline.runs import clear_run_dir, is_run_dir

    out = Path(out)
    if not resume and is_run_dir(out):
        if not overwrite:
            raise UsageError(f"{out} exists (an earlier run); use --resume or a new --out, or "
                             f"--overwrite")
        removed = clear_run_dir(out)
        log.warning("--overwrite: removed the earlier run's %s from %s", ", ".join(removed), out)
    check_output_dir(out, "--out", RUN_DIR_BYTES, "checkpoint and training state")


def launch_ranks(args: argparse.Namespace, worker, preload: tuple[str, ...] = ()) -> int:
    """Run ``worker(args) -> exit code`` once, or in ``args.nproc`` self-spawned ranks (not
    under torchrun, which starts the ranks itself); returns the primary rank's exit code. For
    the commands that are not training runs (``stage1 embed``, ``stage2 eval``); ``preload``
    as for ``launch_training``."""
    from fer_pipeline import distributed

    if args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: must be at least 1")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        import multiprocessing as mp

        code = mp.get_context(distributed.START_METHOD).Value("i", 0)
        distributed.spawn(_rank_main, args.nproc, (worker, args, code),
                          preload=(worker.__module__, *preload))
        return int(code.value)
    try:
        return worker(args)
    finally:
        distributed.cleanup()


def _rank_main(worker, args: argparse.Namespace, code) -> None:
    rc = worker(args)
    if int(os.environ.get("RANK", "0")) == 0:
        code.value = int(rc)
