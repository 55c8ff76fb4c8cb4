"""Shared by the entry points: turn agelab errors into one clear line and exit code 2."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from agelab.config_checks import check_targets, composition_mistake, require_values, unknown_group_choice
from agelab.errors import AgelabError


def exception_chain(exc: BaseException | None):
    """``exc`` and the exceptions behind it, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def agelab_cause(exc: BaseException) -> AgelabError | None:
    """The AgelabError behind ``exc`` (Hydra and Lightning wrap the errors raised inside them)."""
    return next((e for e in exception_chain(exc) if isinstance(e, AgelabError)), None)


def run_or_exit(fn, cfg, *args, arguments_of: str | None = "", **kwargs):
    """``fn(cfg, ...)`` after checking the config: values left out, ``_target_``s allowed, and the keys
    of the ``_target_`` nodes under ``arguments_of`` ("": all; None: the command checks what it builds)
    against their code, which imports that code. Agelab errors end in one line, exit code 2."""
    try:
        if isinstance(cfg, DictConfig):
            require_values(cfg)
            check_targets(cfg, arguments=arguments_of == "")  # every node's code allowed; keys too when "" (all)
            if arguments_of:
                check_targets(OmegaConf.select(cfg, arguments_of), where=arguments_of)
        return fn(cfg, *args, **kwargs)
    except SystemExit as exc:
        if type(exc).__name__ != "SIGTERMException":  # (Lightning's; not imported: predict runs without it)
            raise
        print(f"error: stopped by SIGTERM{resume_hint(cfg)}", file=sys.stderr)
        sys.exit(SIGTERM_EXIT_CODE)  # Lightning's own exit code would be 0: a scheduler would see success
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one of ours
        cause = agelab_cause(exc)
        if cause is None:
            cause = argument_mistake(exc)
            if cause is None:
                raise
        exit_with_error(with_config_path(cause, exc))


SIGTERM_EXIT_CODE = 128 + 15  # as a shell reports a process ended by SIGTERM


def resume_hint(cfg) -> str:
    """How to go on from where a stopped training left off ("" when it saved no checkpoint)."""
    if not isinstance(cfg, DictConfig):
        return ""
    folder = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    last = Path(str(folder)) / "last.ckpt" if folder else None
    return f"; resume with the same overrides and ckpt_path={last}" if last and last.is_file() else ""


def exit_with_error(message) -> None:
    """The one line every entry point ends a mistake with, and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def with_config_path(cause, exc: BaseException):
    """``cause`` with the config path in front when it names an argument of a target Hydra was building
    ("min_face_size must be ..." -> "data.source.cropper.min_face_size must be ..."): the code checking
    its arguments does not know where in the config they were set."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_method

    built = next((e for e in exception_chain(exc) if isinstance(e, InstantiationException)), None)
    text = str(cause)
    first_word = re.match(r"[A-Za-z_]\w*(?![\w.])", text)  # "x must ...", not "data.root ..."
    where = full_key(str(built)) if built else ""
    target = re.search(r"^Error in call to target '([\w.]+)'", str(built)) if built else None
    if not (first_word and where and target):
        return cause
    try:
        arguments = inspect.signature(get_method(target.group(1))).parameters
    except (ValueError, TypeError, ImportError, AttributeError):
        return cause
    return f"{where}.{text}" if first_word.group(0) in arguments else cause


def full_key(message: str) -> str:
    """Where in the config the object was that Hydra failed to build ("" when its error does not say)."""
    found = re.search(r"^full_key: (\S+)$", message, re.MULTILINE)
    return found.group(1) if found else ""


# What Python's TypeError says when a call's keywords do not fit the signature.
ARGUMENT_MISTAKES = ("unexpected keyword argument", "required positional argument", "required keyword-only argument")


def argument_mistake(exc: BaseException) -> str | None:
    """A key the target needs and the config lacks (``~data.source.root``), in one line; None for anything
    else (a failure inside the code keeps its traceback). Keys a target does not take are told before
    any work by ``check_targets``."""
    from hydra.errors import InstantiationException

    if not isinstance(exc, InstantiationException):
        return None
    text = str(exc)
    if not any(phrase in text for phrase in ARGUMENT_MISTAKES):
        return None
    where = full_key(text)
    reason = re.search(r"^TypeError\((['\"])(.*)\1\)$", text, re.MULTILINE)  # TypeError("...")
    return f"{where or 'config'}: {reason.group(2)}" if reason else None


def run_main(main, config_name: str, bare_arguments=None) -> None:
    """An entry point's ``main()`` (composing ``conf/<config_name>.yaml``), after one line and exit code
    2 for an unknown group choice, a config Hydra cannot compose or a run folder it cannot make
    (Hydra's own message spans several lines and exits with 1). ``bare_arguments``: turns the command's own non-override arguments into
    overrides first (predict's paths)."""
    try:
        if bare_arguments is not None:
            sys.argv[1:] = bare_arguments(sys.argv[1:])
        # The group check alone also covers a command with Hydra's flags (--cfg job), which the
        # composition check leaves to Hydra.
        mistake = unknown_group_choice(sys.argv[1:]) or composition_mistake(config_name, sys.argv[1:])
    except AgelabError as exc:
        mistake = exc
    if mistake:
        exit_with_error(mistake)
    main()
