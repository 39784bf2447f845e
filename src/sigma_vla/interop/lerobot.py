"""`lerobot:PATH_OR_ID` references: a LeRobot checkpoint found, fingerprinted and loaded with its own
pre/post-processors, for a frozen base (bases/lerobot.py) or the language model Sigma's LoRA goes on
(models/backbone.py).

A reference names a LeRobot 0.6.x `save_pretrained` directory (config.json with the policy `type`,
model.safetensors, policy_preprocessor.json / policy_postprocessor.json and their state files) or a Hugging Face
Hub id. A local directory loads offline; a hub id loads only from the local Hugging Face cache (this toolkit never
downloads) and otherwise fails in one line that says so. The same reference is recorded in meta.json
(`sigma base-actions`) and in a run's policy.json (with the checkpoint's fingerprint, checked when the reference
is a local directory), so eval / rollout / serve of the run reload the same base.

lerobot is imported only inside functions: the default environment has no lerobot, and a `lerobot:` reference
there is a one-line error naming what to install (docs/architecture.md, "Native LeRobot formats").
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from sigma_vla.errors import SigmaError, first_line
from sigma_vla.interop.fingerprint import fingerprint

PREFIX = "lerobot:"
INSTALL = "pip install 'lerobot[pi,smolvla,diffusion]==0.6.1' on Python 3.12"
PREPROCESSOR_FILE = "policy_preprocessor.json"
TOKENIZER_STEP = "tokenizer_processor"
# Submodule names of the language model inside a LeRobot VLA: PaliGemma's Gemma (pi0 / pi0.5) and SmolVLM's
# text model (SmolVLA).
LANGUAGE_MODEL_NAMES = ("language_model", "text_model")


def is_lerobot_ref(reference: Any) -> bool:
    return isinstance(reference, str) and reference.startswith(PREFIX)


def require_lerobot(reference: str, field: str) -> None:
    """One line instead of an ImportError when a `lerobot:` reference is used without lerobot installed."""
    try:
        import lerobot  # noqa: F401
    except ImportError:
        raise SigmaError(f"{reference} needs lerobot ({INSTALL})", field=field) from None


def resolve(reference: str, field: str) -> Path:
    """The checkpoint directory a reference names: a local directory, or a hub id's snapshot in the local cache."""
    target = reference[len(PREFIX):] if is_lerobot_ref(reference) else reference
    if not target:
        raise SigmaError("empty reference: give lerobot:PATH_OR_ID", field=field)
    local = Path(target).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise SigmaError("not a LeRobot checkpoint directory (no config.json; save it with the policy's "
                             "save_pretrained)", file=local, field=field)
        return local.resolve()
    if local.exists() or target.startswith((".", "/", "~")) or target.count("/") != 1:
        raise SigmaError(f"{target} is not a directory (nor a Hugging Face Hub id owner/name)", field=field)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(target, local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError and friends: not cached
        raise SigmaError(f"{target} is not a local directory and not in the local Hugging Face cache "
                         f"({type(err).__name__}); this toolkit does not download: run "
                         f"`hf download {target}` first", field=field) from None


def canonical(reference: str, field: str) -> str:
    """What runs record: `lerobot:` + the absolute directory for a local checkpoint, the hub id otherwise."""
    require_lerobot(reference, field)
    target = reference[len(PREFIX):]
    return PREFIX + str(resolve(reference, field)) if Path(target).expanduser().is_dir() else reference


def is_local(reference: str) -> bool:
    return Path(reference[len(PREFIX):]).expanduser().is_dir()


def check_fingerprint(reference: str, want: str | None, file: Path, field: str) -> None:
    """A run's recorded LeRobot base or backbone still is the checkpoint it was trained with (local dirs only)."""
    if want and is_local(reference):
        have = fingerprint(resolve(reference, field))
        if have != want:
            raise SigmaError(f"{reference} has fingerprint {have}, the run was trained over {want}", file=file,
                             field=f"{field}.fingerprint")


def load_policy(reference: str, field: str, processors: bool = True, frozen: bool = True) -> tuple[Any, Any, Any]:
    """(policy in eval mode, preprocessor, postprocessor) from a checkpoint, with LeRobot's own classes: the policy
    class its config.json `type` names, and its saved processor pipelines. frozen=False keeps the requires_grad
    flags the policy set itself (pi0.5's train_expert_only, ...), for fine-tuning (bases/finetune.py)."""
    require_lerobot(reference, field)
    path = resolve(reference, field)
    try:
        kind = json.loads((path / "config.json").read_text())["type"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SigmaError(f"no policy type ({first_line(err, with_type=True)})", file=path / "config.json",
                         field="type") from None
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # LeRobot prints while loading: keep our output ours
            policy = get_policy_class(kind).from_pretrained(str(path)).eval()
        pre, post = (make_pre_post_processors(policy.config, pretrained_path=str(path)) if processors
                     else (None, None))
    except (ImportError, ValueError, OSError, KeyError, RuntimeError) as err:
        raise SigmaError(f"cannot load this LeRobot '{kind}' checkpoint: {first_line(err, with_type=True)}",
                         file=path, field=field) from None
    if frozen:
        policy.requires_grad_(False)
    return policy, pre, post


def language_model(reference: str, field: str = "--backbone") -> torch.nn.Module:
    """The policy's own language model (PaliGemma's Gemma in pi0.5, SmolVLM's text model in SmolVLA), taken out of
    the loaded policy; the rest of the policy (vision tower, action expert) is released."""
    policy, _, _ = load_policy(reference, field, processors=False)
    found = [(name, module) for name, module in policy.named_modules()
             if name.rsplit(".", 1)[-1] in LANGUAGE_MODEL_NAMES and hasattr(module, "get_input_embeddings")]
    if not found:
        raise SigmaError(f"{reference}: no language model in this {type(policy).__name__} (looked for a submodule "
                         f"named {' or '.join(LANGUAGE_MODEL_NAMES)})", field=field)
    model = min(found, key=lambda item: len(item[0]))[1]
    del policy, found
    import gc

    gc.collect()
    return model.float()


def tokenizer_path(reference: str, field: str = "--backbone") -> str:
    """The tokenizer the policy's own preprocessor uses (its tokenizer step's `tokenizer_name`): a local directory,
    or a hub id resolved in the local cache."""
    path = resolve(reference, field) / PREPROCESSOR_FILE
    try:
        steps = json.loads(path.read_text())["steps"]
        names = [s["config"]["tokenizer_name"] for s in steps if s.get("registry_name") == TOKENIZER_STEP]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SigmaError(f"unreadable ({first_line(err, with_type=True)})", file=path, field="steps") from None
    if not names:
        raise SigmaError(f"{reference} has no tokenizer step: not a vision-language-action policy", file=path,
                         field=field)
    return str(resolve(names[0], field)) if not Path(names[0]).is_dir() else names[0]
