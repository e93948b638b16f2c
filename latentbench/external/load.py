"""Models named on the command line: ``MODULE:FACTORY`` (a callable returning ``(encoder, decoder)``
or a wrapped model, with ``--weights FILE`` for a state dict) and ``pythae:DIR`` (a saved pythae model
folder, Chadebec et al. 2022). Every way this can go wrong is one line naming the problem and the fix.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentbench.errors import UserError
from latentbench.external.wrap import OUTPUTS, WrappedVAE, _first, wrap
from latentbench.model import VAE

FORMS = "MODULE:FACTORY (e.g. mymodels:build_vae, MODULE importable from here) or pythae:DIR"


def load_model(spec: str, weights: str | Path | None = None, *, output: str | None = None) -> VAE:
    """The model ``spec`` names: ``MODULE:FACTORY`` or ``pythae:DIR``. ``weights`` (a state dict file)
    is loaded into a factory's modules; ``output`` sets the decoder's convention of a factory that
    returns bare ``(encoder, decoder)`` (default ``means``)."""
    module, sep, rest = str(spec).partition(":")
    if not sep or not module or not rest:
        raise UserError(f"--model {spec!r}: write {FORMS}")
    if output is not None and output not in OUTPUTS:
        raise UserError(f"--output must be 'means' or 'logits', got {output!r}")
    if module == "pythae":
        if weights is not None:
            raise UserError("--weights is for MODULE:FACTORY models; a pythae folder holds its own weights")
        return load_pythae(rest)
    model = _from_factory(spec, module, rest, output)
    if weights is not None:
        load_weights(model, Path(weights), spec)
    return model


def _import(module: str, spec: str) -> Any:
    here = os.getcwd()
    added = here not in sys.path
    if added:  # MODULE importable from the working directory, as `python -c "import MODULE"` finds it
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
            raise UserError(f"--model {spec}: no module {module!r} here or on PYTHONPATH; run from the folder "
                            f"that holds {module.split('.')[0]}.py or add that folder to PYTHONPATH") from None
        raise UserError(f"--model {spec}: importing {module!r} failed ({type(exc).__name__}: {_first(exc)}); "
                        "install what it needs") from None
    except Exception as exc:  # noqa: BLE001 - the user's module
        raise UserError(f"--model {spec}: importing {module!r} raised {type(exc).__name__}: {_first(exc)}; "
                        f"fix the module (python -c 'import {module}' shows the traceback)") from None
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def _from_factory(spec: str, module: str, name: str, output: str | None) -> VAE:
    mod = _import(module, spec)
    factory = getattr(mod, name, None)
    if factory is None:
        public = sorted(n for n in vars(mod) if not n.startswith("_") and callable(vars(mod)[n]))
        raise UserError(f"--model {spec}: module {module!r} has no {name!r}; its callables: "
                        f"{', '.join(public[:12]) or 'none'}")
    if not callable(factory):
        raise UserError(f"--model {spec}: {name} is a {type(factory).__name__}, not a callable; name a function "
                        "that returns (encoder, decoder)")
    try:
        made = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise UserError(f"--model {spec}: {name}() raised {type(exc).__name__}: {_first(exc)}; it must run with "
                        "no arguments") from None
    if isinstance(made, VAE):
        if output is not None and isinstance(made, WrappedVAE) and output != made.output:
            raise UserError(f"--model {spec} returns a wrapped model with output={made.output!r}; drop --output "
                            "or change it in the factory")
        return made
    if isinstance(made, (tuple, list)) and len(made) == 2 and all(isinstance(m, nn.Module) for m in made):
        model = wrap(made[0], made[1], output=output or "means")  # type: ignore[arg-type]
        model.source = spec
        return model
    got = f"a {type(made).__name__}" + (f" of {len(made)}" if isinstance(made, (tuple, list)) else "")
    raise UserError(f"--model {spec}: {name}() returned {got}; return (encoder, decoder) nn.Modules or "
                    "latentbench.wrap(encoder, decoder)")


def _user_modules(model: VAE) -> dict[str, nn.Module]:
    """The user's encoder and decoder inside a model (unwrapped from the adapters)."""
    out = {}
    for name in ("encoder", "decoder"):
        m = getattr(model, name)
        out[name] = getattr(m, "module", m)
    return out


def load_weights(model: VAE, path: Path, spec: str = "the model") -> None:
    """Load a state dict into the encoder and decoder: keys ``encoder.*`` / ``decoder.*`` (a whole model's
    ``state_dict()`` whose encoder and decoder are attributes of those names), or
    ``{"encoder": ..., "decoder": ...}``, or a latentbench checkpoint's ``model``."""
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign or truncated file
        raise UserError(f"--weights {path}: not a readable torch state dict ({type(exc).__name__}: {_first(exc)}); "
                        "save it with torch.save(model.state_dict(), FILE)") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not sd:
        raise UserError(f"--weights {path}: holds a {type(sd).__name__}, not a state dict; save it with "
                        "torch.save(model.state_dict(), FILE)")
    mods = _user_modules(model)
    parts: dict[str, dict[str, Any]] = {}
    for name in mods:
        nested = sd.get(name)
        if isinstance(nested, dict):
            parts[name] = nested
            continue
        for prefix in (f"{name}.module.", f"{name}.", f"module.{name}.", f"model.{name}."):
            found = {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
            if found:
                parts[name] = found
                break
    missing = [n for n in mods if n not in parts]
    if missing:
        keys = ", ".join(list(map(str, sd))[:3])
        raise UserError(f"--weights {path}: no {' or '.join(missing)} weights (keys start {keys}, ...); save "
                        "{'encoder': encoder.state_dict(), 'decoder': decoder.state_dict()} or a model whose "
                        "attributes are named encoder and decoder")
    for name, module in mods.items():
        try:
            module.load_state_dict(parts[name])
        except (RuntimeError, KeyError, TypeError) as exc:
            why = " ".join(str(exc).split())[:300]
            raise UserError(f"--weights {path}: do not fit {spec}'s {name} ({why}); save the weights of the "
                            "model the factory builds") from None


def load_pythae(folder: str) -> VAE:
    """A saved pythae VAE (``model_config.json`` + ``model.pt``, what pythae's trainer writes in
    ``final_model``), wrapped: its encoder's ``embedding`` and ``log_covariance`` are (mu, logvar)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserError(f"--model pythae:{folder}: no such folder; give the folder pythae saved (e.g. "
                        "my_model/VAE_training_.../final_model)")
    missing = [f for f in ("model_config.json", "model.pt") if not (path / f).is_file()]
    if missing:
        raise UserError(f"--model pythae:{folder}: not a pythae model folder (no {' or '.join(missing)}); give the "
                        "folder pythae's trainer wrote, e.g. .../final_model")
    try:
        from pythae.models import AutoModel
    except ImportError:
        raise UserError("--model pythae:DIR needs pythae; install it with pip install 'latentbench[pythae]'") from None
    try:
        pm = AutoModel.load_from_folder(str(path))
    except Exception as exc:  # noqa: BLE001 - a foreign or broken folder
        raise UserError(f"--model pythae:{folder}: pythae cannot load it ({type(exc).__name__}: {_first(exc)}); "
                        "point at a folder saved by model.save() or pythae's trainer") from None
    if not hasattr(pm, "encoder") or not hasattr(pm, "decoder"):
        raise UserError(f"--model pythae:{folder}: a {type(pm).__name__} has no encoder and decoder")
    cfg = pm.model_config
    lik = "bernoulli" if getattr(cfg, "reconstruction_loss", "mse") == "bce" else "gaussian"
    model = wrap(PythaeEncoder(pm.encoder), PythaeDecoder(pm.decoder, tuple(cfg.input_dim)), likelihood=lik,
                 output="means")
    model.source = f"pythae:{folder}"
    return model


class PythaeEncoder(nn.Module):
    """A pythae encoder (``ModelOutput`` with ``embedding`` and ``log_covariance``) as (mu, logvar)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.module = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.module(x)
        if getattr(out, "log_covariance", None) is None:
            raise UserError("the pythae model's encoder has no log_covariance: it is not a VAE (an AE or a "
                            "deterministic model); latentbench scores models with a Gaussian q(z|x)")
        return out.embedding, out.log_covariance


class PythaeDecoder(nn.Module):
    """A pythae decoder (``ModelOutput`` with ``reconstruction``) as images of the model's input shape."""

    def __init__(self, decoder: nn.Module, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.module = decoder
        self.image_shape = image_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z).reconstruction.reshape(len(z), *self.image_shape)
