"""Base models: named by the hash of their files, stored once, loaded once per process.

A base model is a folder as ``save_pretrained`` writes it (``config.json``, weights in
safetensors, the tokenizer files), in a local directory or under any fsspec URL. It is
never fetched from a model hub: a name that is neither a folder nor a URL is refused.

Its identity is its **manifest**: the sorted list of its files with the sha256 of each,
as canonical JSON; the manifest's own sha256 is the base model's hash, which every
adapter trained on it records. :func:`store_base` puts the files and the manifest into the
content-addressed artifact store (a base already there costs one existence check, so a
base is stored once however many adapters point at it); :func:`shared_base` rebuilds it
from there (or from where it was trained from, checked against the same hash) once per
process, and every adapter of a replica attaches to that one copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evertrain.exceptions import DataValidationError, IntegrityError, NotFoundError, UsageError
from evertrain.store.artifacts import ArtifactStore, sha256_bytes
from evertrain.store.storage import open_fs

MANIFEST_KIND = "evertrain-base-model/1"
#: Weight files that unpickle on load: a base holding them is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Where bases read from a URL or the artifact store are written out for the loader
#: (``EVERTRAIN_BASE_CACHE``; default a folder in the system's temporary directory).
CACHE_ENV = "EVERTRAIN_BASE_CACHE"


def offline() -> None:
    """Make sure the Hugging Face libraries never reach a hub, whatever they are asked."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT reads an attribute that transformers 5 deprecates; nothing for a user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _is_url(location: str) -> bool:
    return "://" in location


def resolve_location(location: str, project: Path | None = None) -> str:
    """A base model's location as given in a spec: a URL as is, a path made absolute.

    A bare name (``gpt2``, ``meta-llama/Llama-3-8B``) that is no folder is refused: evertrain
    does not download models.
    """
    if _is_url(location):
        return location
    path = Path(location).expanduser()
    if not path.is_absolute() and project is not None:
        path = project / path
    if not path.is_dir():
        raise UsageError(
            f"base model {location!r} is not a folder (looked at {path}) nor a URL; a base model is "
            "read from a local folder or an fsspec URL (file://, s3://, ...), never from a model hub"
        )
    return str(path.resolve())


@dataclass(frozen=True)
class Manifest:
    """A base model's files and their hashes; ``digest`` is the base model's hash."""

    files: dict[str, str]
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_bytes(self.data)

    @classmethod
    def of(cls, files: dict[str, str]) -> Manifest:
        if "config.json" not in files:
            raise DataValidationError("a base model folder needs config.json (as save_pretrained writes it)")
        pickled = sorted(f for f in files if f.lower().endswith(PICKLE_SUFFIXES))
        if pickled:
            raise DataValidationError(
                f"base model holds pickled weights ({', '.join(pickled)}); only safetensors weights are "
                "loaded: save it with save_pretrained(..., safe_serialization=True)"
            )
        if not any(f.endswith(".safetensors") for f in files):
            raise DataValidationError("a base model folder needs its weights as .safetensors files")
        body = {"kind": MANIFEST_KIND, "files": dict(sorted(files.items()))}
        return cls(
            dict(sorted(files.items())), json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        )

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            files = body["files"]
            if body.get("kind") != MANIFEST_KIND or not isinstance(files, dict):
                raise ValueError("not a base model manifest")
        except (ValueError, KeyError, TypeError) as exc:
            raise DataValidationError(f"not a base model manifest: {exc}") from None
        return cls({str(k): str(v) for k, v in files.items()}, data)

    def tokenizer_digest(self) -> str:
        """The hash of the tokenizer's files alone (a lineage detail: same tokenizer, other weights)."""
        names = {k: v for k, v in self.files.items() if "token" in k or k in ("vocab.txt", "merges.txt")}
        return hashlib.sha256(json.dumps(names, sort_keys=True).encode()).hexdigest()


def _walk(location: str) -> Iterator[tuple[str, bytes]]:
    """``(relative name, bytes)`` of every file of a base folder, hidden files left out."""
    fs, root = open_fs(location)
    root = root.rstrip("/")
    found = sorted(str(p) for p in fs.find(root))
    if not found:
        raise NotFoundError(f"base model {location!r} holds no files")
    for path in found:
        relative = path[len(root) :].lstrip("/")
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        yield relative, bytes(fs.cat_file(path))


def read_base(location: str) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the bytes of a base model's files."""
    files = dict(_walk(location))
    return Manifest.of({name: sha256_bytes(data) for name, data in files.items()}), files


def base_digest(location: str) -> str:
    """The hash a base model is named by (the sha256 of its manifest)."""
    return read_base(location)[0].digest


def store_base(artifacts: ArtifactStore, location: str, expected: str | None = None) -> str:
    """Put a base model into the artifact store once; its hash.

    The manifest is written last, so its presence means every file is there: a base already
    stored costs one existence check. ``expected``: the hash the training recorded; a base
    whose files changed since is refused rather than stored under the wrong name.
    """
    if expected is not None and artifacts.exists(expected):
        return expected
    manifest, files = read_base(location)
    if expected is not None and manifest.digest != expected:
        raise IntegrityError(
            f"base model at {location} hashes to {manifest.digest[:12]}, not {expected[:12]} as when the "
            "adapter was trained on it: its files changed"
        )
    for name, data in files.items():
        artifacts.put(data, digest=manifest.files[name])  # hashed for the manifest just now
    return artifacts.put(manifest.data)


def _cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "evertrain-bases"


def _write_out(digest: str, manifest: Manifest, read: Any) -> Path:
    """Write a base's files (each checked against the manifest) into a local folder for the loader."""
    folder = _cache_root() / digest
    marker = folder / ".manifest.json"
    if marker.is_file() and marker.read_bytes() == manifest.data and _intact(folder, manifest):
        return folder
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    if folder.exists():  # stale or damaged: written again from checked bytes
        shutil.rmtree(folder, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
    for name, sha in manifest.files.items():
        data = read(name, sha)
        if sha256_bytes(data) != sha:
            raise IntegrityError(f"base model {digest[:12]}: file {name} does not hash to its manifest entry")
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (tmp / ".manifest.json").write_bytes(manifest.data)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote it first: use theirs once it checks out
        shutil.rmtree(tmp, ignore_errors=True)
        if not _intact(folder, manifest):
            raise IntegrityError(f"base model cache folder {folder} does not match its manifest") from None
    return folder


def _intact(folder: Path, manifest: Manifest) -> bool:
    from evertrain.store.artifacts import sha256_file

    try:
        return all(sha256_file(folder / name) == sha for name, sha in manifest.files.items())
    except OSError:
        return False


def materialize(
    digest: str,
    *,
    artifacts: ArtifactStore | None = None,
    location: str | None = None,
    read: tuple[Manifest, dict[str, bytes]] | None = None,
) -> Path:
    """A local folder holding base ``digest``, every file checked against its hash.

    Looked for in the artifact store first, then at ``location`` (where it was trained from).
    A local folder whose files still hash to ``digest`` is used in place. ``read``: what
    :func:`read_base` just gave for ``location``, so its files are not read and hashed twice.
    """
    if artifacts is not None and artifacts.exists(digest):
        manifest = Manifest.parse(artifacts.get(digest))
        if manifest.digest != digest:
            raise IntegrityError(f"base model manifest {digest[:12]} does not hash to its name")
        return _write_out(digest, manifest, lambda _name, sha: artifacts.get(sha))
    if location is None:
        raise NotFoundError(
            f"base model {digest[:12]} is not in the artifact store and no location to read it from is known"
        )
    manifest, files = read if read is not None else read_base(location)
    if manifest.digest != digest:
        raise IntegrityError(
            f"base model at {location} hashes to {manifest.digest[:12]}, not {digest[:12]}: its files changed"
        )
    if not _is_url(location):
        return Path(location)
    return _write_out(digest, manifest, lambda name, _sha: files[name])


#: The two ways a base is loaded: its bare transformer (hidden states, for a classifier's head)
#: or with its language-model head (causal generation).
ENCODER, CAUSAL_LM = "encoder", "causal_lm"


def load_pretrained(folder: Path, kind: str = ENCODER) -> tuple[Any, Any]:
    """``(backbone, tokenizer)`` from a local base folder: safetensors weights, no network.

    ``kind``: :data:`ENCODER` (the transformer alone) or :data:`CAUSAL_LM` (with its
    language-model head, to generate).
    """
    offline()
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    loader = AutoModelForCausalLM if kind == CAUSAL_LM else AutoModel
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        backbone = loader.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataValidationError(f"cannot load the base model in {folder}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return backbone, tokenizer


class SharedBase:
    """One base model in memory with the adapters attached to it, switched in place.

    Forward passes take the lock: the active adapter is a property of the one model, so two
    requests for two adapters (a canary) run one after the other, each under its own adapter.
    """

    def __init__(self, digest: str, backbone: Any, tokenizer: Any) -> None:
        self.digest = digest
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.lock = threading.RLock()
        self.peft: Any = None
        self.adapters: set[str] = set()
        self._counter = 0

    @classmethod
    def around(cls, digest: str, peft_model: Any, tokenizer: Any, name: str) -> SharedBase:
        """A base that already carries adapter ``name`` (a model just trained, scored in place)."""
        base = cls(digest, peft_model.get_base_model(), tokenizer)
        base.peft = peft_model.eval()
        base.adapters.add(name)
        return base

    def new_name(self) -> str:
        with self.lock:
            self._counter += 1
            return f"adapter_{self._counter}"

    def attach(self, name: str, config: dict[str, Any], weights: dict[str, Any]) -> None:
        """Add adapter ``name`` (a LoRA config and its weights) to the shared model."""
        from peft import LoraConfig, PeftModel, set_peft_model_state_dict

        lora = LoraConfig(**config)
        with self.lock:
            if self.peft is None:
                with quiet_peft():
                    self.peft = PeftModel(self.backbone, lora, adapter_name=name).eval()
            else:
                self.peft.add_adapter(name, lora)
            result = set_peft_model_state_dict(self.peft, weights, adapter_name=name)
            missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
            if missing:
                raise DataValidationError(f"adapter weights do not fit the base model: {missing[:3]}")
            self.peft.eval()
            self.adapters.add(name)

    def detach(self, name: str) -> None:
        """Remove adapter ``name`` (a version no longer served); the last one stays, harmless."""
        with self.lock:
            if name not in self.adapters or self.peft is None or len(self.adapters) == 1:
                return
            if self.peft.active_adapter == name:
                self.peft.set_adapter(next(a for a in self.adapters if a != name))
            self.peft.delete_adapter(name)
            self.adapters.discard(name)

    @contextmanager
    def using(self, name: str) -> Iterator[Any]:
        """The model with adapter ``name`` active, held for the duration."""
        with self.lock:
            if self.peft is None or name not in self.adapters:
                raise NotFoundError(f"adapter {name} is not attached to base {self.digest[:12]}")
            if self.peft.active_adapter != name:
                self.peft.set_adapter(name)
            yield self.peft


_BASES: dict[str, SharedBase] = {}
_BASES_LOCK = threading.Lock()
#: How many times each base was loaded in this process (a base is loaded once per replica and
#: kind: its digest for classifiers, ``digest:causal_lm`` for generators).
LOADS: dict[str, int] = {}


def shared_base(
    digest: str, *, artifacts: ArtifactStore | None = None, location: str | None = None, kind: str = ENCODER
) -> SharedBase:
    """The process's one copy of base ``digest`` as ``kind`` loads it, loaded on first use.

    Classifiers share the transformer, generators the model with its language-model head.
    """
    key = digest if kind == ENCODER else f"{digest}:{kind}"
    with _BASES_LOCK:
        base = _BASES.get(key)
        if base is None:
            folder = materialize(digest, artifacts=artifacts, location=location)
            backbone, tokenizer = load_pretrained(folder, kind)
            base = _BASES[key] = SharedBase(digest, backbone, tokenizer)
            LOADS[key] = LOADS.get(key, 0) + 1
        return base
