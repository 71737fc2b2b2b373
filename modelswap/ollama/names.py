"""Model names as Ollama clients write them, and what modelswap knows about a model.

Ollama names carry a tag (``qwen3:latest``, ``llama3.2:3b``); a bare name
means ``:latest``. modelswap's names are its model IDs and aliases, so a name
resolves exactly first (an ID may itself contain a colon) and then without a
``:latest`` tag. Listings show the Ollama spelling (``qwen3`` → ``qwen3:latest``),
which resolves back to the same model.

What a listing says about a model (size, family, parameter size,
quantization) is read from the ``.gguf`` file its ``cmd`` names, where it
names one: the file's size, and the conventional parts of its file name
(``Qwen3-8B-Q4_K_M.gguf`` → family ``qwen3``, ``8B``, ``Q4_K_M``).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePath

from modelswap.config import Config

LATEST = ":latest"
_MODEL_FLAGS = ("-m", "--model")
_QUANT = re.compile(r"(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=$|[-_.])", re.I)
_PARAMS = re.compile(r"(?:^|[-_.])(\d+(?:\.\d+)?[BM])(?=$|[-_.])", re.I)


def resolve(config: Config, name: str) -> str | None:
    """An Ollama model name → the model ID it means, or None (``x:latest`` = ``x``)."""
    model_id = config.resolve_model_id(name)
    if model_id is None and name.endswith(LATEST):
        model_id = config.resolve_model_id(name[: -len(LATEST)])
    return model_id


def requested_name(config: Config, name: str) -> str:
    """The configured name (ID or alias) a client's name stands for, tag removed if needed.

    Filters look up ``setParamsByID`` by this name, as for the OpenAI routes.
    """
    if config.resolve_model_id(name) is None and name.endswith(LATEST):
        return name[: -len(LATEST)]
    return name


def ollama_name(name: str) -> str:
    """How Ollama spells a name in listings: with a tag (``qwen3`` → ``qwen3:latest``)."""
    return name if ":" in name else name + LATEST


def listed(config: Config) -> list[tuple[str, str]]:
    """``(configured name, model ID)`` for every model ``/api/tags`` lists, in config order.

    As ``/v1/models``: unlisted models are left out, aliases appear only with
    ``includeAliasesInList``.
    """
    names: list[tuple[str, str]] = []
    for model_id, model in config.models.items():
        if model.unlisted:
            continue
        names.append((model_id, model_id))
        if config.include_aliases_in_list:
            names.extend((alias, model_id) for alias in model.aliases if alias.strip())
    return names


def digest(model_id: str) -> str:
    """A stable sha256 per model (Ollama's digest identifies the model's blobs)."""
    return hashlib.sha256(model_id.encode()).hexdigest()


def model_file(cmd: str) -> str | None:
    """The ``.gguf`` file a llama-server ``cmd`` loads (``-m``/``--model``), if it names one."""
    try:
        argv = shlex.split(cmd)
    except ValueError:
        return None
    for i, arg in enumerate(argv):
        value = None
        if arg in _MODEL_FLAGS and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--model="):
            value = arg.partition("=")[2]
        if value and value.lower().endswith(".gguf"):
            return value
    return None


@dataclass(frozen=True, slots=True)
class Details:
    """Ollama's ``details`` object (empty strings where unknown)."""

    format: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""

    def as_json(self) -> dict[str, object]:
        families = [self.family] if self.family else None
        return {
            "parent_model": "",
            "format": self.format,
            "family": self.family,
            "families": families,
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


def details(path: str | None) -> Details:
    """What a model file's name says (see module docstring); empty without a file."""
    if path is None:
        return Details()
    stem = PurePath(path).name
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    quant = _QUANT.search(stem)
    params = _PARAMS.search(stem)
    family = re.split(r"[-_.]", stem, maxsplit=1)[0].lower()
    return Details(
        format="gguf",
        family=family,
        parameter_size=params.group(1).upper() if params else "",
        quantization_level=quant.group(1).upper() if quant else "",
    )
